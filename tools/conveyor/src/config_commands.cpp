// `conveyor config show`.
#include <nlohmann/json.hpp>
#include <ostream>

#include "cli.hpp"

namespace conveyor::cli {

int config_command(Context& ctx, const std::vector<std::string>& args) {
  if (args.size() != 1 || args[0] != "show") {
    ctx.err << "usage: conveyor config show\n";
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

}  // namespace conveyor::cli
