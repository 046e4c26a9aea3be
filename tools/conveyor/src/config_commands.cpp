// `conveyor config show`.
#include <nlohmann/json.hpp>
#include <ostream>

#include "cli.hpp"

namespace conveyor::cli {

namespace {

constexpr const char* kConfigUsage =
    "usage: conveyor config show   effective configuration, secrets masked, with where each value came from\n";

int show(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "config show", {});
  if (!o.positional.empty()) {
    ctx.err << kConfigUsage;
    return kExitUsage;
  }
  auto shown = ctx.config.show();
  if (ctx.json) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& [key, value, source] : shown) j[key] = {{"value", value}, {"source", source}};
    ctx.out << j.dump(2) << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& [key, value, source] : shown) rows.push_back({key, value, source});
  print_table(ctx.out, {"KEY", "VALUE", "SOURCE"}, rows);
  return kExitOk;
}

}  // namespace

int config_command(Context& ctx, const std::vector<std::string>& args) {
  return dispatch(ctx, args, "config", kConfigUsage, {{"show", show}});
}

}  // namespace conveyor::cli
