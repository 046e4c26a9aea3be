// `conveyor params list|get|set`: conveyor.system_parameters (runbook 001,
// "patch system parameters table content"). `set` goes through
// model::patch_system_parameters, the same validation as PATCH
// /v1/parameters: one transaction, CHECK constraints judging the final row,
// the change copied to system_parameters_history and announced to every
// service (io.conveyor.parameters.changed), so it takes effect live.
#include <ostream>

#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/model/system_parameters.hpp"

namespace conveyor::cli {

namespace {

using nlohmann::json;

constexpr const char* kParamsUsage =
    "usage: conveyor params list\n"
    "       conveyor params get NAME\n"
    "       conveyor params set NAME=VALUE [NAME=VALUE...]\n"
    "       conveyor params set NAME VALUE\n"
    "VALUE is JSON (3, true, null, '[\"sleep\", \"gfsc\"]') or else taken as text.\n";

constexpr db::Statement kRow{"cli_params_row", "SELECT to_jsonb(p)::text FROM conveyor.system_parameters p"};

json load_row(db::Tx& tx) {
  const db::Result r = tx.exec(kRow);
  if (r.empty()) {
    throw Error(errc::not_found,
                "conveyor.system_parameters has no row: the database is not migrated (run `conveyor db migrate`)");
  }
  return json::parse(r[0][0].as_string());
}

bool is_parameter(const std::string& name) {
  const auto& names = model::patchable_parameters();
  return std::find(names.begin(), names.end(), name) != names.end();
}

std::string text(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

int list(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "params list", {});
  if (!o.positional.empty())
    throw FieldError(o.positional[0], "params list: unexpected argument '" + o.positional[0] + "'");
  db::Pool pool(pool_options(ctx));
  const json row = pool.transact([](db::Tx& tx) { return load_row(tx); });
  if (ctx.json) {
    json out = json::object();
    for (const auto& name : model::patchable_parameters()) out[name] = row.value(name, json());
    out["updated_at"] = row.value("updated_at", json());
    out["updated_by"] = row.value("updated_by", json());
    ctx.out << out.dump() << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& name : model::patchable_parameters()) rows.push_back({name, text(row.value(name, json()))});
  print_table(ctx.out, {"PARAMETER", "VALUE"}, rows);
  const json changed = row.value("updated_at", json());
  ctx.out << "last changed "
          << display_time(changed.is_string() ? std::optional(changed.get<std::string>()) : std::nullopt) << " by "
          << text(row.value("updated_by", json())) << "\n";
  return kExitOk;
}

int get(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "params get", {});
  if (o.positional.size() != 1)
    throw FieldError("NAME", "params get: one parameter NAME is required\n" + std::string(kParamsUsage));
  const std::string& name = o.positional[0];
  if (!is_parameter(name)) throw FieldError(name, name + ": not a system parameter (see `conveyor params list`)");
  db::Pool pool(pool_options(ctx));
  const json row = pool.transact([](db::Tx& tx) { return load_row(tx); });
  ctx.out << (ctx.json ? row.value(name, json()).dump() : text(row.value(name, json()))) << "\n";
  return kExitOk;
}

int set(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "params set", {});
  if (o.positional.empty())
    throw FieldError("NAME=VALUE", "params set: NAME=VALUE is required\n" + std::string(kParamsUsage));
  // NAME=VALUE pairs, or one parameter as NAME VALUE (runbook 001:
  // `params set image_tags '{"fsc-rlie-container":"v2"}'`).
  std::vector<std::pair<std::string, std::string>> pairs;
  if (o.positional.size() == 2 && is_parameter(o.positional[0])) {
    pairs.emplace_back(o.positional[0], o.positional[1]);
  } else {
    for (const auto& a : o.positional) {
      const auto eq = a.find('=');
      if (eq == std::string::npos || eq == 0) {
        throw FieldError(a, "params set: expected NAME=VALUE (or NAME VALUE for one parameter), got '" + a + "'");
      }
      pairs.emplace_back(a.substr(0, eq), a.substr(eq + 1));
    }
  }
  json patch = json::object();
  for (const auto& [name, value] : pairs) {
    if (patch.contains(name)) throw FieldError(name, name + ": given twice");
    patch[name] = json::parse(value, nullptr, /*allow_exceptions=*/false);
    if (patch[name].is_discarded()) patch[name] = value;  // not JSON: text
  }
  db::Pool pool(pool_options(ctx));
  const auto [before, after] = pool.transact([&](db::Tx& tx) {
    json old_row = load_row(tx);
    model::patch_system_parameters(tx, patch);
    return std::pair{old_row, load_row(tx)};
  });
  if (ctx.json) {
    json changes = json::object();
    for (const auto& [name, v] : patch.items())
      changes[name] = {{"old", before.value(name, json())}, {"new", after.value(name, json())}};
    ctx.out << changes.dump() << "\n";
    return kExitOk;
  }
  for (const auto& [name, v] : patch.items()) {
    const json& old_v = before.value(name, json());
    const json& new_v = after.value(name, json());
    ctx.out << name << ": " << text(old_v) << " -> " << text(new_v) << (old_v == new_v ? " (unchanged)" : "") << "\n";
  }
  return kExitOk;
}

}  // namespace

int params_command(Context& ctx, const std::vector<std::string>& args) {
  return dispatch(ctx, args, "params", kParamsUsage, {{"list", list}, {"ls", list}, {"get", get}, {"set", set}});
}

}  // namespace conveyor::cli
