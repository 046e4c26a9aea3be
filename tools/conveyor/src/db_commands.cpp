// `conveyor db ...`: the migration commands of runbook 002.
#include <pwd.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <ostream>

#include "cli.hpp"
#include "conveyor/db/migrations.hpp"

namespace conveyor::cli {

namespace {

constexpr const char* kDbUsage =
    "usage: conveyor db init|status|pending|applied|create NAME|migrate|rollback|lock|unlock\n";

std::filesystem::path migrations_dir(const Context& ctx) {
  std::string dir = ctx.config.get_string("CONVEYOR_MIGRATIONS_DIR");
  return dir.empty() ? db::default_migrations_dir() : std::filesystem::path(dir);
}

// "user@host", recorded by `db lock` so others know whom to ask.
std::string whoami() {
  std::string user = "unknown";
  if (const passwd* pw = getpwuid(geteuid())) user = pw->pw_name;
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  return user + "@" + host;
}

std::string join_names(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

int status(Context& ctx, db::Migrator& m) {
  auto st = m.status();
  if (ctx.json) {
    nlohmann::json j = {{"initialized", st.initialized},
                        {"pending", st.pending},
                        {"group_id", st.group_id ? nlohmann::json(*st.group_id) : nlohmann::json()},
                        {"last_applied", st.last_applied},
                        {"locked", st.locked},
                        {"up_to_date", st.up_to_date()}};
    ctx.out << j.dump() << "\n";
    return kExitOk;
  }
  if (!st.initialized) {
    ctx.out << "database is not initialized: run `conveyor db init`\n";
    ctx.out << "pending migration(s): " << st.pending << "\n";
    return kExitOk;
  }
  ctx.out << "pending migration(s): " << st.pending << "\n";
  if (st.group_id) {
    ctx.out << "database version: group #" << *st.group_id << " (" << st.last_applied << ")\n";
  } else {
    ctx.out << "database version: none (no migration applied)\n";
  }
  if (st.locked) ctx.out << "migrations are locked (conveyor db unlock to allow migrate/rollback)\n";
  ctx.out << (st.up_to_date() ? "database is up-to-date\n" : "database is out-of-date\n");
  return kExitOk;
}

int pending(Context& ctx, db::Migrator& m) {
  auto files = m.pending();
  if (ctx.json) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& f : files) j.push_back({{"name", f.name}, {"comment", f.comment}});
    ctx.out << j.dump() << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& f : files) rows.push_back({"N/A", f.name, f.comment, "N/A", "N/A"});
  print_table(ctx.out, {"ID", "NAME", "COMMENT", "GROUP-ID", "MIGRATED-AT"}, rows);
  return kExitOk;
}

int applied(Context& ctx, db::Migrator& m) {
  auto list = m.applied();
  if (ctx.json) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& a : list) {
      j.push_back({{"id", a.id}, {"name", a.name}, {"comment", a.comment}, {"group_id", a.group_id},
                   {"migrated_at", a.migrated_at}});
    }
    ctx.out << j.dump() << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& a : list) {
    rows.push_back({std::to_string(a.id), a.name, a.comment, std::to_string(a.group_id), a.migrated_at});
  }
  print_table(ctx.out, {"ID", "NAME", "COMMENT", "GROUP-ID", "MIGRATED-AT"}, rows);
  return kExitOk;
}

}  // namespace

int db_command(Context& ctx, const std::vector<std::string>& args) {
  if (args.empty()) {
    ctx.err << kDbUsage;
    return kExitUsage;
  }
  const std::string& cmd = args[0];
  auto dir = migrations_dir(ctx);
  if (cmd == "create") {
    if (args.size() != 2) {
      ctx.err << "usage: conveyor db create NAME\n";
      return kExitUsage;
    }
    auto up = db::Migrator::create(dir, args[1]);
    auto down = up;
    down.replace_filename(up.filename().string().substr(0, up.filename().string().size() - 7) + ".down.sql");
    ctx.out << "created migration " << up.string() << " and " << down.filename().string() << "\n";
    return kExitOk;
  }
  if (args.size() != 1) {
    ctx.err << kDbUsage;
    return kExitUsage;
  }
  db::Migrator m(ctx.database_url(), dir);
  if (cmd == "init") {
    m.init();
    ctx.out << "migration tables ready (conveyor.schema_migrations, conveyor.schema_migration_lock)\n";
    return kExitOk;
  }
  if (cmd == "status") return status(ctx, m);
  if (cmd == "pending") return pending(ctx, m);
  if (cmd == "applied") return applied(ctx, m);
  if (cmd == "migrate") {
    auto r = m.migrate();
    if (r.names.empty()) {
      ctx.out << "no pending migrations: database is up-to-date\n";
    } else {
      ctx.out << "database migrated to group #" << r.group_id << " (" << join_names(r.names) << ")\n";
    }
    return kExitOk;
  }
  if (cmd == "rollback") {
    auto r = m.rollback();
    if (r.names.empty()) {
      ctx.out << "nothing to roll back\n";
    } else {
      ctx.out << "rolled back group #" << r.group_id << " (" << join_names(r.names) << ")\n";
    }
    return kExitOk;
  }
  if (cmd == "lock") {
    m.lock(whoami());
    ctx.out << "migrations locked: migrate and rollback refuse until `conveyor db unlock`\n";
    return kExitOk;
  }
  if (cmd == "unlock") {
    m.unlock();
    ctx.out << "migrations unlocked\n";
    return kExitOk;
  }
  ctx.err << "conveyor db: unknown command '" << cmd << "'\n" << kDbUsage;
  return kExitUsage;
}

}  // namespace conveyor::cli
