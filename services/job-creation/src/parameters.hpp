#pragma once
// PATCH /v1/parameters: a JSON object of conveyor.system_parameters column ->
// new value. Only whitelisted columns are accepted; values are bound as
// parameters of one fixed UPDATE, so the row's CHECK constraints (including
// the ones spanning two columns, like min <= max workers) judge the final
// row, and a violation is reported against the column it concerns.
// Thread-safe: stateless functions.
#include <nlohmann/json.hpp>

#include "conveyor/db/db.hpp"

namespace conveyor::creation {

// The columns PATCH accepts, in table order.
const std::vector<std::string>& patchable_parameters();

// Validates `patch` (FieldError naming the column) and applies it in `tx`.
void patch_parameters(db::Tx& tx, const nlohmann::json& patch);

}  // namespace conveyor::creation
