// PATCH /v1/parameters and `conveyor params set`: see system_parameters.hpp.
#include "conveyor/model/system_parameters.hpp"

#include <optional>
#include <string>
#include <vector>

#include "conveyor/error/error.hpp"
#include "conveyor/model/job_type.hpp"
#include "conveyor/model/schedule.hpp"

namespace conveyor::model {
namespace {

// host_list: a nullable text array whose entries are sink_allowed_hosts entries.
enum class Kind { integer, number, boolean, nullable_text, nullable_text_array, host_list, json_object };

struct Column {
  const char* name;
  Kind kind;
};

// The whitelist (schema v1). id, updated_at and updated_by are not for clients.
constexpr Column kColumns[] = {
    {"max_number_of_worker_instances", Kind::integer},
    {"min_number_of_worker_instances", Kind::integer},
    {"worker_concurrency", Kind::integer},
    {"job_types_list", Kind::nullable_text_array},
    {"accepting_new_jobs", Kind::boolean},
    {"not_accepting_reason", Kind::nullable_text},
    {"stall_initialized_s", Kind::integer},
    {"stall_configured_s", Kind::integer},
    {"stall_ready_s", Kind::integer},
    {"stall_queued_s", Kind::integer},
    {"stall_processed_s", Kind::integer},
    {"stall_error_checked_s", Kind::integer},
    {"worker_heartbeat_interval_s", Kind::integer},
    {"worker_heartbeat_timeout_s", Kind::integer},
    {"service_heartbeat_timeout_s", Kind::integer},
    {"publication_endpoint_url", Kind::nullable_text},
    {"publication_max_attempts", Kind::integer},
    {"sink_allowed_hosts", Kind::host_list},
    {"image_tags", Kind::json_object},
    {"log_retention_days", Kind::integer},
    {"job_retention_days", Kind::integer},
    {"outbox_retention_hours", Kind::integer},
    {"schedule_catchup_start", Kind::json_object},
    {"parameter_reload_interval_s", Kind::integer},
    {"priority_aging_per_minute", Kind::number},
};

// Constraints that span columns, and the columns to blame (first one patched wins).
struct CrossCheck {
  const char* constraint;
  const char* columns[2];
};
constexpr CrossCheck kCrossChecks[] = {
    {"system_parameters_min_le_max_workers", {"min_number_of_worker_instances", "max_number_of_worker_instances"}},
    {"system_parameters_heartbeat_timeout_gt_interval", {"worker_heartbeat_timeout_s", "worker_heartbeat_interval_s"}},
};

const char* cast_of(Kind k) {
  switch (k) {
    case Kind::integer:
      return "int";
    case Kind::number:
      return "float8";
    case Kind::boolean:
      return "boolean";
    case Kind::nullable_text:
      return "text";
    case Kind::nullable_text_array:
    case Kind::host_list:
      return "text[]";
    case Kind::json_object:
      return "jsonb";
  }
  return "text";
}

// One UPDATE for every column: column i is set from $(2i+2) when $(2i+1) is
// true. Built once from the constant whitelist above, never from input.
const std::string& patch_sql() {
  static const std::string sql = [] {
    std::string s = "UPDATE conveyor.system_parameters SET ";
    int n = 1;
    bool first = true;
    for (const auto& c : kColumns) {
      if (!first) s += ", ";
      first = false;
      s += std::string(c.name) + " = CASE WHEN $" + std::to_string(n) + "::boolean THEN $" + std::to_string(n + 1) +
           "::" + cast_of(c.kind) + " ELSE " + c.name + " END";
      n += 2;
    }
    return s + " WHERE id";
  }();
  return sql;
}

db::Param value_param(const Column& c, const nlohmann::json& v) {
  const std::string field = c.name;
  switch (c.kind) {
    case Kind::integer:
      if (!v.is_number_integer() || v.get<std::int64_t>() < INT32_MIN || v.get<std::int64_t>() > INT32_MAX) {
        throw FieldError(field, field + ": expected an integer");
      }
      return v.get<std::int64_t>();
    case Kind::number:
      // JSON has no NaN or infinity; the CHECK judges the range.
      if (!v.is_number()) throw FieldError(field, field + ": expected a number");
      return v.get<double>();
    case Kind::boolean:
      if (!v.is_boolean()) throw FieldError(field, field + ": expected true or false");
      return v.get<bool>();
    case Kind::nullable_text:
      if (v.is_null()) return nullptr;
      if (!v.is_string()) throw FieldError(field, field + ": expected a string or null");
      return v.get<std::string>();
    case Kind::nullable_text_array:
    case Kind::host_list: {
      if (v.is_null()) return nullptr;
      if (!v.is_array()) {
        throw FieldError(field, field + ": expected an array of strings or null");
      }
      std::vector<std::string> items;
      for (const auto& e : v) {
        if (!e.is_string()) throw FieldError(field, field + ": expected an array of strings");
        items.push_back(e.get<std::string>());
        std::string why;
        if (c.kind == Kind::host_list && !valid_sink_host_entry(items.back(), why)) {
          throw FieldError(field, field + ": '" + items.back().substr(0, 100) + "' " + why);
        }
      }
      return items;
    }
    case Kind::json_object:
      // Both objects map a job type to one string (an image tag, a date).
      if (!v.is_object()) throw FieldError(field, field + ": expected an object");
      for (const auto& [key, value] : v.items()) {
        if (!value.is_string()) {
          throw FieldError(field, field + "." + key + ": expected a string, got " + value.type_name());
        }
      }
      return v.dump();
  }
  throw FieldError(field, field + ": unsupported");
}

// The patched column a CHECK violation message is about.
std::string blamed_column(const std::string& message, const nlohmann::json& patch) {
  for (const auto& x : kCrossChecks) {
    if (message.find(x.constraint) == std::string::npos) continue;
    for (const char* col : x.columns) {
      if (patch.contains(col)) return col;
    }
    return x.columns[0];
  }
  // Single-column checks are named system_parameters_<column>_check.
  for (const auto& c : kColumns) {
    if (patch.contains(c.name) &&
        message.find(std::string("system_parameters_") + c.name + "_check") != std::string::npos) {
      return c.name;
    }
  }
  return patch.size() == 1 ? patch.begin().key() : std::string("body");
}

constexpr db::Statement kCheckOf{"model_parameters_check_of",
                                 "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                                 "WHERE conrelid = 'conveyor.system_parameters'::regclass AND conname = $1"};

// "(a) AND (b)" is not: its first parenthesis closes before the end.
bool wrapped_in_parentheses(const std::string& s) {
  if (s.size() < 2 || s.front() != '(' || s.back() != ')') return false;
  int depth = 0;
  for (std::size_t i = 0; i + 1 < s.size(); ++i) {
    depth += s[i] == '(' ? 1 : s[i] == ')' ? -1 : 0;
    if (depth == 0) return false;
  }
  return true;
}

// A CHECK violation as the rule it broke ("must satisfy
// max_number_of_worker_instances >= 0"), rather than the constraint's
// name; any other refusal as PostgreSQL put it.
std::string explained_refusal(db::Tx& tx, const std::string& message) {
  static const std::string kMarker = "violates check constraint \"";
  const auto at = message.find(kMarker);
  if (at == std::string::npos) return message;
  const auto from = at + kMarker.size();
  const std::string name = message.substr(from, message.find('"', from) - from);
  const db::Result def = tx.exec(kCheckOf, {name});
  if (def.empty()) return message;
  std::string rule = def[0][0].as_string();  // CHECK ((a >= 0))
  if (rule.starts_with("CHECK ")) rule = rule.substr(6);
  while (wrapped_in_parentheses(rule)) rule = rule.substr(1, rule.size() - 2);
  return "out of range: must satisfy " + rule;
}

constexpr db::Statement kUnknownTypes{
    "model_parameters_unknown_types",
    "SELECT coalesce(string_agg(quote_literal(n), ', ' ORDER BY n), '') FROM unnest($1::text[]) AS n "
    "WHERE NOT EXISTS (SELECT 1 FROM conveyor.job_type t WHERE t.name = n)"};

constexpr db::Statement kProcessTypes{
    "model_parameters_process_types",
    "SELECT coalesce(string_agg(quote_literal(name), ', ' ORDER BY name), '') FROM conveyor.job_type "
    "WHERE name = ANY($1::text[]) AND coalesce(image, '') = ''"};

// A tag is a tag (it is put after the type's image, and an image reference
// is an argument of `podman run`), and only a container job type has an
// image to tag: a tag for a process job type would change nothing.
void check_image_tags(db::Tx& tx, const nlohmann::json& tags) {
  std::vector<std::string> names;
  for (const auto& [type, value] : tags.items()) {
    const auto tag = value.get<std::string>();
    if (!valid_image_tag(tag)) {
      throw FieldError("image_tags", "image_tags." + type + ": '" + tag.substr(0, 100) +
                                         "' is not an image tag (letters, digits and _ . -, not starting with . "
                                         "or -, at most 128 characters, such as 2.1 or v2-rc1)");
    }
    names.push_back(type);
  }
  const std::string untaggable = tx.exec(kProcessTypes, {names})[0][0].as_string();
  if (!untaggable.empty()) {
    throw FieldError("image_tags", "image_tags: " + untaggable +
                                       ": a process job type (it has no image); a tag applies to container job types");
  }
}

// What the patch says of job types is about types that exist, and a
// catch-up start is a point in time: a typo would otherwise refuse every
// submission (job_types_list), or stop a schedule (schedule_catchup_start),
// with nothing said to the operator who made it.
void check_job_type_values(db::Tx& tx, const nlohmann::json& patch) {
  for (const char* field : {"job_types_list", "image_tags", "schedule_catchup_start"}) {
    const auto it = patch.find(field);
    if (it == patch.end() || it->is_null()) continue;
    std::vector<std::string> names;
    if (it->is_array()) {
      for (const auto& n : *it) names.push_back(n.get<std::string>());
    } else {
      for (const auto& [name, value] : it->items()) names.push_back(name);
    }
    const std::string unknown = tx.exec(kUnknownTypes, {names})[0][0].as_string();
    if (!unknown.empty()) {
      throw FieldError(field,
                       std::string(field) + ": no such job type: " + unknown + " (conveyor job-type list shows them)");
    }
  }
  if (const auto it = patch.find("image_tags"); it != patch.end() && it->is_object()) {
    check_image_tags(tx, *it);
  }
  if (const auto it = patch.find("schedule_catchup_start"); it != patch.end()) {
    for (const auto& [type, value] : it->items()) {
      try {
        parse_utc_day_or_time(value.get<std::string>());
      } catch (const Error&) {
        throw FieldError("schedule_catchup_start", "schedule_catchup_start." + type + ": '" + value.get<std::string>() +
                                                       "' is not a UTC time like 2026-01-01 or 2026-01-01T06:00:00Z");
      }
    }
  }
}

}  // namespace

const std::vector<std::string>& patchable_parameters() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& c : kColumns) v.emplace_back(c.name);
    return v;
  }();
  return names;
}

void patch_system_parameters(db::Tx& tx, const nlohmann::json& patch) {
  if (!patch.is_object()) throw FieldError("body", "body: expected a JSON object");
  for (const auto& [key, value] : patch.items()) {
    bool known = false;
    for (const auto& c : kColumns) known = known || key == c.name;
    if (!known) throw FieldError(key, key + ": not a system parameter that can be changed");
  }
  std::vector<db::Param> params;
  for (const auto& c : kColumns) {
    const auto it = patch.find(c.name);
    if (it == patch.end()) {
      params.emplace_back(false);
      params.emplace_back(nullptr);
    } else {
      params.emplace_back(true);
      params.push_back(value_param(c, *it));
    }
  }
  check_job_type_values(tx, patch);
  static const db::Statement statement{"model_patch_parameters", patch_sql()};
  std::optional<std::string> refused;
  // In a savepoint, so that a refusal can be explained by the constraint it
  // broke, read from the catalog: the CHECK is the one rule of the range.
  try {
    tx.savepoint([&](db::Tx& inner) { inner.exec(statement, params); });
  } catch (const db::DbError& e) {
    if (e.code() != errc::bad_input) throw;
    refused = e.what();
  }
  if (!refused) return;
  const std::string field = blamed_column(*refused, patch);
  throw FieldError(field, field + ": " + explained_refusal(tx, *refused));
}

}  // namespace conveyor::model
