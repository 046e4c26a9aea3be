#pragma once
// conveyor::db migrations — numbered SQL files with an up and a down part:
//   <dir>/<YYYYMMDDHHMMSS>_<comment>.up.sql and .down.sql
// Tracked in conveyor.schema_migrations (with group ids) and guarded by
// conveyor.schema_migration_lock. `migrate` applies every pending migration
// as one group in one transaction; `rollback` undoes the last group.
// Not thread-safe; owned by the CLI command that runs it.
#include <ctime>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "conveyor/db/db.hpp"

namespace conveyor::db {

struct MigrationFile {
  std::string name;     // the timestamp part, e.g. "20261122000000"
  std::string comment;  // e.g. "initial_schema"
  std::filesystem::path up;
  std::filesystem::path down;
  std::string full_name() const { return name + "_" + comment; }
};

struct AppliedMigration {
  std::int64_t id = 0;
  std::string name;
  std::string comment;
  std::int64_t group_id = 0;
  std::string migrated_at;  // timestamptz as text
};

struct MigrationStatus {
  bool initialized = false;  // db init was run
  std::size_t pending = 0;
  std::optional<std::int64_t> group_id;  // the last applied group
  std::string last_applied;              // full name of the newest applied migration
  bool locked = false;
  // Applied migrations with no file in the folder, newest first: the
  // database was migrated by a newer release (or from another folder).
  std::vector<std::string> unknown;
  bool up_to_date() const { return initialized && pending == 0; }
};

struct GroupResult {
  std::int64_t group_id = 0;       // 0 when nothing was done
  std::vector<std::string> names;  // full names, in order applied / rolled back
};

// The migrations directory when CONVEYOR_MIGRATIONS_DIR is not set: the
// source tree's deploy/migrations in a build, /usr/share/conveyor/migrations
// in an image.
std::filesystem::path default_migrations_dir();

// The number of a new migration in `dir`: `now` as YYYYMMDDHHMMSS (UTC),
// or one second after the newest number in `dir` when that is not earlier,
// so that a new migration sorts, and runs, after every one there (a folder
// may hold migrations numbered ahead of the clock).
std::string next_migration_number(const std::filesystem::path& dir, std::time_t now);

class Migrator {
 public:
  Migrator(std::string url, std::filesystem::path dir);

  // Reads the migration files; throws Error(bad_input) naming a file without its pair.
  std::vector<MigrationFile> files() const;
  const std::filesystem::path& directory() const { return dir_; }

  void init();  // creates schema conveyor and the tracking tables; idempotent
  MigrationStatus status();
  std::vector<MigrationFile> pending();
  std::vector<AppliedMigration> applied();  // newest first
  GroupResult migrate();                    // Error(locked) while locked
  GroupResult rollback();                   // Error(locked) while locked
  // Error(not_found) before `db init`, Error(locked) (by whom, since when)
  // while locked: before a command asks about a `what` that would be
  // refused anyway.
  void check_unlocked(const char* what);
  void lock(const std::string& by);
  void unlock();

  // Writes an empty up/down pair named <number>_<comment> in `dir`
  // (next_migration_number); returns the up path.
  static std::filesystem::path create(const std::filesystem::path& dir, const std::string& comment);

 private:
  std::string url_;
  std::filesystem::path dir_;
};

}  // namespace conveyor::db
