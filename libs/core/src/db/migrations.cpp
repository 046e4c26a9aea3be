// Migration runner: files on disk, state in conveyor.schema_migrations.
#include "conveyor/db/migrations.hpp"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

namespace conveyor::db {

namespace {

// Serialises migrators (and `db init`) against each other: "ConvMigr".
constexpr std::int64_t kMigrationLockKey = 0x436f6e764d696772;

constexpr Statement kTakeLock{"migrations_take_lock", "SELECT pg_advisory_xact_lock($1)"};
constexpr Statement kLockTimeout{"migrations_lock_timeout", "SELECT set_config('lock_timeout', $1, true)"};
constexpr Statement kIsInitialized{"migrations_is_initialized",
                                   "SELECT to_regclass('conveyor.schema_migrations') IS NOT NULL "
                                   "AND to_regclass('conveyor.schema_migration_lock') IS NOT NULL"};
constexpr Statement kApplied{
    "migrations_applied",
    "SELECT id, name, comment, group_id, " CONVEYOR_RFC3339("migrated_at") " FROM conveyor.schema_migrations "
    "ORDER BY id DESC"};
constexpr Statement kLockState{"migrations_lock_state",
                               "SELECT locked, coalesce(locked_by, ''), coalesce(locked_at::text, '') "
                               "FROM conveyor.schema_migration_lock WHERE id FOR UPDATE"};
constexpr Statement kNextGroup{"migrations_next_group",
                               "SELECT coalesce(max(group_id), 0) + 1 FROM conveyor.schema_migrations"};
constexpr Statement kRecord{"migrations_record",
                            "INSERT INTO conveyor.schema_migrations (name, comment, group_id) VALUES ($1, $2, $3)"};
constexpr Statement kLastGroup{
    "migrations_last_group",
    "SELECT id, name, comment, group_id FROM conveyor.schema_migrations "
    "WHERE group_id = (SELECT max(group_id) FROM conveyor.schema_migrations) ORDER BY id DESC"};
constexpr Statement kForget{"migrations_forget", "DELETE FROM conveyor.schema_migrations WHERE id = $1"};
constexpr Statement kSetLock{"migrations_set_lock",
                             "UPDATE conveyor.schema_migration_lock SET locked = $1, "
                             "locked_at = CASE WHEN $1 THEN now() END, locked_by = CASE WHEN $1 THEN $2 END WHERE id"};

constexpr std::string_view kInitSql = R"sql(
CREATE SCHEMA IF NOT EXISTS conveyor;
CREATE TABLE IF NOT EXISTS conveyor.schema_migrations (
  id          bigserial PRIMARY KEY,
  name        text NOT NULL UNIQUE,
  comment     text NOT NULL,
  group_id    bigint NOT NULL,
  migrated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS conveyor.schema_migration_lock (
  id        boolean PRIMARY KEY DEFAULT true CHECK (id),
  locked    boolean NOT NULL DEFAULT false,
  locked_at timestamptz,
  locked_by text
);
INSERT INTO conveyor.schema_migration_lock (id) VALUES (true) ON CONFLICT DO NOTHING;
)sql";

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw Error(errc::not_found, "migration file " + p.string() + " cannot be read");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void require_initialized(Tx& tx) {
  if (!tx.exec(kIsInitialized)[0][0].as_bool()) {
    throw Error(errc::not_found, "the database has no migration tables: run `conveyor db init` first");
  }
}

// Refuses while `conveyor db lock` is in force; holds the row until commit.
void require_unlocked(Tx& tx, const char* what) {
  auto r = tx.exec(kLockState);
  if (!r.empty() && r[0][0].as_bool()) {
    std::string by = r[0][1].as_string();
    throw Error(errc::locked, std::string("migrations are locked") + (by.empty() ? "" : " by " + by) + " since " +
                                  r[0][2].as_string() + ": " + what + " refused; run `conveyor db unlock` first");
  }
}

std::vector<AppliedMigration> read_applied(Tx& tx) {
  std::vector<AppliedMigration> out;
  for (auto row : tx.exec(kApplied)) {
    out.push_back({row[0].as_int(), row[1].as_string(), row[2].as_string(), row[3].as_int(), row[4].as_string()});
  }
  return out;
}

TxOptions once() {
  TxOptions o;
  o.max_attempts = 1;  // a migration is not retried behind the operator's back
  o.actor = "conveyor db";
  return o;
}

}  // namespace

std::filesystem::path default_migrations_dir() {
  std::filesystem::path built(CONVEYOR_DEFAULT_MIGRATIONS_DIR);
  std::error_code ec;
  if (std::filesystem::is_directory(built, ec)) return built;
  return "/usr/share/conveyor/migrations";
}

Migrator::Migrator(std::string url, std::filesystem::path dir) : url_(std::move(url)), dir_(std::move(dir)) {}

std::vector<MigrationFile> Migrator::files() const {
  static const std::regex kName(R"(^([0-9]{14})_([a-z0-9_]+)\.(up|down)\.sql$)");
  std::error_code ec;
  if (!std::filesystem::is_directory(dir_, ec)) {
    throw Error(errc::not_found, "migrations directory " + dir_.string() + " does not exist");
  }
  std::map<std::string, MigrationFile> by_name;
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    if (!entry.is_regular_file()) continue;
    std::string file = entry.path().filename().string();
    if (entry.path().extension() != ".sql") continue;
    std::smatch m;
    if (!std::regex_match(file, m, kName)) {
      throw Error(errc::bad_input, "migration file " + entry.path().string() +
                                       ": name must be <YYYYMMDDHHMMSS>_<comment>.(up|down).sql");
    }
    auto& f = by_name[m[1].str() + "_" + m[2].str()];
    f.name = m[1].str();
    f.comment = m[2].str();
    (m[3].str() == "up" ? f.up : f.down) = entry.path();
  }
  std::vector<MigrationFile> out;
  std::set<std::string> seen;
  for (auto& [full, f] : by_name) {
    if (f.up.empty() || f.down.empty()) {
      throw Error(errc::bad_input,
                  "migration " + full + " in " + dir_.string() + " has no " + (f.up.empty() ? "up" : "down") + " file");
    }
    if (!seen.insert(f.name).second) {
      throw Error(errc::bad_input, "two migrations share the number " + f.name + " in " + dir_.string());
    }
    out.push_back(std::move(f));
  }
  return out;
}

void Migrator::init() {
  Session s(url_, "conveyor-db");
  s.transact(
      [&](Tx& tx) {
        tx.exec(kTakeLock, {kMigrationLockKey});
        tx.exec_script(kInitSql);
      },
      once());
}

MigrationStatus Migrator::status() {
  auto all = files();
  Session s(url_, "conveyor-db");
  return s.transact(
      [&](Tx& tx) {
        MigrationStatus st;
        st.initialized = tx.exec(kIsInitialized)[0][0].as_bool();
        if (!st.initialized) {
          st.pending = all.size();
          return st;
        }
        auto applied = read_applied(tx);
        std::set<std::string> names;
        for (const auto& a : applied) names.insert(a.name);
        for (const auto& f : all) st.pending += names.count(f.name) ? 0 : 1;
        std::set<std::string> in_folder;
        for (const auto& f : all) in_folder.insert(f.name);
        for (const auto& a : applied) {
          if (!in_folder.count(a.name)) st.unknown.push_back(a.name + "_" + a.comment);
        }
        if (!applied.empty()) {
          st.group_id = applied.front().group_id;
          st.last_applied = applied.front().name + "_" + applied.front().comment;
        }
        auto lock =
            tx.exec(Statement{"migrations_lock_peek", "SELECT locked FROM conveyor.schema_migration_lock WHERE id"});
        st.locked = !lock.empty() && lock[0][0].as_bool();
        return st;
      },
      once());
}

void Migrator::check_unlocked(const char* what) {
  Session s(url_, "conveyor-db");
  s.transact(
      [&](Tx& tx) {
        require_initialized(tx);
        require_unlocked(tx, what);
      },
      once());
}

std::vector<MigrationFile> Migrator::pending() {
  auto all = files();
  std::set<std::string> names;
  for (const auto& a : applied()) names.insert(a.name);
  std::vector<MigrationFile> out;
  for (auto& f : all)
    if (!names.count(f.name)) out.push_back(std::move(f));
  return out;
}

std::vector<AppliedMigration> Migrator::applied() {
  Session s(url_, "conveyor-db");
  return s.transact(
      [&](Tx& tx) {
        if (!tx.exec(kIsInitialized)[0][0].as_bool()) return std::vector<AppliedMigration>{};
        return read_applied(tx);
      },
      once());
}

GroupResult Migrator::migrate() {
  auto all = files();
  Session s(url_, "conveyor-db");
  return s.transact(
      [&](Tx& tx) {
        tx.exec(kTakeLock, {kMigrationLockKey});
        require_initialized(tx);
        require_unlocked(tx, "migrate");
        // Online migrations: give up rather than queue behind live traffic for long.
        tx.exec(kLockTimeout, {"15s"});
        std::set<std::string> names;
        for (const auto& a : read_applied(tx)) names.insert(a.name);
        GroupResult out;
        for (const auto& f : all) {
          if (names.count(f.name)) continue;
          if (out.group_id == 0) out.group_id = tx.exec(kNextGroup)[0][0].as_int();
          try {
            tx.exec_script(read_file(f.up));
          } catch (const Error& e) {
            throw Error(e.code(), "migration " + f.up.filename().string() + " failed: " + e.what() +
                                      " (nothing was applied: the pending migrations run in one transaction)");
          }
          tx.exec(kRecord, {f.name, f.comment, out.group_id});
          out.names.push_back(f.full_name());
        }
        return out;
      },
      once());
}

GroupResult Migrator::rollback() {
  auto all = files();
  std::map<std::string, MigrationFile> by_name;
  for (auto& f : all) by_name[f.name] = f;
  Session s(url_, "conveyor-db");
  return s.transact(
      [&](Tx& tx) {
        tx.exec(kTakeLock, {kMigrationLockKey});
        require_initialized(tx);
        require_unlocked(tx, "rollback");
        tx.exec(kLockTimeout, {"15s"});
        GroupResult out;
        for (auto row : tx.exec(kLastGroup)) {
          std::string name = row[1].as_string();
          std::string full = name + "_" + row[2].as_string();
          auto it = by_name.find(name);
          if (it == by_name.end()) {
            throw Error(errc::not_found, "cannot roll back " + full + ": its down file is not in " + dir_.string());
          }
          try {
            tx.exec_script(read_file(it->second.down));
          } catch (const Error& e) {
            throw Error(e.code(), "rollback " + it->second.down.filename().string() + " failed: " + e.what() +
                                      " (nothing was rolled back: the group's down files run in one transaction)");
          }
          tx.exec(kForget, {row[0].as_int()});
          out.group_id = row[3].as_int();
          out.names.push_back(full);
        }
        return out;
      },
      once());
}

void Migrator::lock(const std::string& by) {
  Session s(url_, "conveyor-db");
  s.transact(
      [&](Tx& tx) {
        require_initialized(tx);
        tx.exec(kSetLock, {true, by});
      },
      once());
}

void Migrator::unlock() {
  Session s(url_, "conveyor-db");
  s.transact(
      [&](Tx& tx) {
        require_initialized(tx);
        tx.exec(kSetLock, {false, nullptr});
      },
      once());
}

namespace {

// <YYYYMMDDHHMMSS> of `t` (UTC).
std::string migration_number(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[16];
  std::strftime(stamp, sizeof stamp, "%Y%m%d%H%M%S", &tm);
  return stamp;
}

}  // namespace

std::string next_migration_number(const std::filesystem::path& dir, std::time_t now) {
  // The newest number in `dir`, whatever else the folder holds.
  static const std::regex kNumbered(R"(^([0-9]{14})_.*\.sql$)");
  std::string newest;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string file = entry.path().filename().string();
    std::smatch m;
    if (std::regex_match(file, m, kNumbered) && m[1].str() > newest) newest = m[1].str();
  }
  const std::string at_now = migration_number(now);
  if (newest < at_now) return at_now;
  // A clock behind the folder (a migration numbered ahead of time): one
  // second after the newest, so the new one still runs last.
  std::tm tm{};
  if (strptime(newest.c_str(), "%Y%m%d%H%M%S", &tm) == nullptr) return at_now;
  return migration_number(timegm(&tm) + 1);
}

std::filesystem::path Migrator::create(const std::filesystem::path& dir, const std::string& comment) {
  std::string c;
  for (char ch : comment) {
    if (ch == '-' || ch == ' ') ch = '_';
    if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
    c += ch;
  }
  static const std::regex kComment("^[a-z0-9_]{1,80}$");
  if (!std::regex_match(c, kComment)) {
    throw Error(errc::bad_input,
                "migration name '" + comment + "': use letters, digits, '-' or '_' (at most 80 characters)");
  }
  std::filesystem::create_directories(dir);
  // Two migrations of one name read as one in `db status` and `applied`.
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.size() > 14 && n.substr(14) == "_" + c + ".up.sql") {
      throw Error(errc::conflict,
                  "a migration named " + c + " exists: " + e.path().string() + "; name this one otherwise");
    }
  }
  const std::string stamp = next_migration_number(dir, std::time(nullptr));
  auto up = dir / (std::string(stamp) + "_" + c + ".up.sql");
  auto down = dir / (std::string(stamp) + "_" + c + ".down.sql");
  if (std::filesystem::exists(up) || std::filesystem::exists(down)) {
    throw Error(errc::conflict, "migration " + up.string() + " already exists; wait a second and retry");
  }
  std::ofstream(up) << "-- " << c << ": up. Runs inside the migration group's transaction.\n"
                    << "-- Keep it online: no long exclusive locks on hot tables.\n";
  std::ofstream(down) << "-- " << c << ": down. Undoes exactly what the up part did.\n";
  return up;
}

}  // namespace conveyor::db
