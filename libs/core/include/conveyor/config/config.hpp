#pragma once
// conveyor::config — the one validated configuration of an executable.
//
// Values come from CONVEYOR_* variables, layered (lowest first):
//   schema defaults < --env-file files, in order (later wins) < the process environment.
// A key marked `secret` may instead be given as <KEY>_FILE=/path in any layer
// (a Kubernetes/compose/Nomad secret file): the value is the file's content
// without its trailing newline(s). Within one layer (one env file, or the
// environment) setting both KEY and KEY_FILE is an error; across layers the
// higher layer wins as for any key. A relative path in an env file is taken
// relative to that file's directory. A schema that declares <KEY>_FILE itself
// (to re-read a rotated file) keeps that key as an ordinary one.
// A Schema lists typed keys; load() validates every key at start-up and
// reports ALL problems in one conveyor::Error(errc::invalid_config), each
// naming the key and where its value came from. This module is the only
// place in the codebase that reads the process environment.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

namespace conveyor::config {

enum class Type {
  string,
  integer,      // decimal, within [min, max]
  boolean,      // true/false, 1/0, yes/no, on/off (case-insensitive)
  enumeration,  // one of `allowed` (case-sensitive)
  duration_ms,  // "250ms", "5s", "2m", "1h" or a bare number of milliseconds
  url,          // scheme://... ; empty is allowed only when the default is empty
};

struct Key {
  std::string name{};
  Type type = Type::string;
  std::optional<std::string> default_value{};  // nullopt: required
  bool secret = false;                         // masked by Config::show(); may be read from <name>_FILE
  std::string help{};
  std::int64_t min = INT64_MIN;  // integer and duration_ms (in ms)
  std::int64_t max = INT64_MAX;
  std::vector<std::string> allowed{};  // enumeration
};

// An ordered set of keys. Value type; not thread-safe for concurrent add().
class Schema {
 public:
  // Adds a key; a key with the same name replaces the earlier one, so a
  // service may change a core default (e.g. its own HTTP port).
  Schema& add(Key key);
  const Key* find(std::string_view name) const;
  const std::vector<Key>& keys() const { return keys_; }

 private:
  std::vector<Key> keys_;
};

// The keys every Conveyor executable has (CONVEYOR_DATABASE_URL,
// CONVEYOR_KAFKA_BROKERS, CONVEYOR_HTTP_HOST/PORT, CONVEYOR_LOG_LEVEL/FORMAT,
// CONVEYOR_DATA_DIR, CONVEYOR_TOPIC_PREFIX, CONVEYOR_INSTANCE_ID,
// CONVEYOR_MIGRATIONS_DIR).
Schema core_schema();

// Where a value came from.
struct Source {
  // secret_file: the value is the content of `file`, named by <KEY>_FILE.
  enum class Kind { default_value, file, environment, secret_file };
  Kind kind = Kind::default_value;
  std::filesystem::path file;  // Kind::file: the env file; Kind::secret_file: the secret file
  int line = 0;                // Kind::file, 1-based
  std::string named_by;        // Kind::secret_file: "CONVEYOR_X_FILE (from environment)"
  // "default", "/etc/conveyor/04_local.env:3", "environment" or
  // "file /run/secrets/db-url (CONVEYOR_DATABASE_URL_FILE from environment)".
  std::string to_string() const;
};

// The validated result of load(). Immutable after load, so safe to read
// from any thread. Accessors throw Error(errc::invalid_config) for a key the
// schema does not have, or one of another type (a programming error the
// first test run finds).
class Config {
 public:
  std::string get_string(std::string_view key) const;
  std::int64_t get_int(std::string_view key) const;
  bool get_bool(std::string_view key) const;
  std::chrono::milliseconds get_duration(std::string_view key) const;
  Source source(std::string_view key) const;

  // Every key in schema order: {key, display value (secrets masked), source}.
  std::vector<std::tuple<std::string, std::string, std::string>> show() const;
  // Non-fatal findings, e.g. an unknown CONVEYOR_* variable in the environment.
  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  friend Config load(const Schema&, const std::vector<std::filesystem::path>&,
                     const std::map<std::string, std::string>&);
  struct Entry {
    Key key;
    std::string raw;
    Source source;
    std::int64_t number = 0;  // integer, duration_ms
    bool flag = false;        // boolean
  };
  const Entry& entry(std::string_view key) const;

  std::vector<Entry> entries_;  // schema order
  std::vector<std::string> warnings_;
};

// Reads, layers and validates. Throws Error(errc::invalid_config) listing
// every problem (one per line) when anything is wrong.
Config load(const Schema& schema, const std::vector<std::filesystem::path>& env_files,
            const std::map<std::string, std::string>& environment);

// A snapshot of the process environment (the only getenv/environ use).
std::map<std::string, std::string> process_environment();

// A secret named by data rather than by a schema key (e.g. a webhook sink's
// `secret_env`). Only CONVEYOR_* names are read, so data cannot pull an
// arbitrary variable out of the environment; nullopt when the name is not
// allowed or the variable is not set.
std::optional<std::string> secret_from_environment(const std::string& name);

// Masks a value for display: a URL's or libpq conninfo's password becomes
// "****"; any other non-empty secret becomes "****".
std::string mask_secret(std::string_view value);

// Splits repeated `--env-file PATH` / `--env-file=PATH` out of a command line.
struct EnvFileArgs {
  std::vector<std::filesystem::path> env_files;  // in order given
  std::vector<std::string> args;                 // everything else, in order
};
// Throws Error(errc::bad_input) when --env-file has no path.
EnvFileArgs split_env_file_args(const std::vector<std::string>& args);
// Same for main()'s argv; argv[0] is kept as args[0].
EnvFileArgs split_env_file_args(int argc, const char* const* argv);

// The closest name in `candidates` by edit distance, or "" when none is
// close enough to be a plausible typo.
std::string closest_match(std::string_view name, const std::vector<std::string>& candidates);

}  // namespace conveyor::config
