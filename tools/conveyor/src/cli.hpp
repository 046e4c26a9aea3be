#pragma once
// The `conveyor` operator CLI as a library: main() only calls run_cli, so
// tests drive the same code. Talks to PostgreSQL directly, so it works while
// the services are down.
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <iosfwd>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "conveyor/config/config.hpp"
#include "conveyor/db/db.hpp"
#include "conveyor/model/schedule.hpp"

namespace conveyor::cli {

// Exit codes: 0 ok, 1 the command failed, 2 usage error.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;

struct Context {
  config::Config config;
  bool json = false;  // --json: machine-readable output
  std::ostream& out;
  std::ostream& err;
  // CONVEYOR_DATABASE_URL, or Error(invalid_config) saying how to set it.
  std::string database_url() const;
};

int run_cli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

// Prints rows under headers, columns padded, with a dashed rule (runbook 002's look).
void print_table(std::ostream& out, const std::vector<std::string>& headers,
                 const std::vector<std::vector<std::string>>& rows);

// While one lives, SIGINT and SIGTERM only set a flag, so a long-running
// command (`events tail`, `job logs --follow`) ends cleanly on Ctrl-C.
// One at a time; not thread-safe.
class InterruptGuard {
 public:
  InterruptGuard();
  ~InterruptGuard();
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;
  static bool interrupted() noexcept;
};

// While one lives and stderr is a terminal, "LABEL: 12 s DETAIL" is redrawn
// on stderr at once and then twice a second, so a long pg_dump, migrate or
// bulk apply shows it is alive; the line is cleared at the end. Off a
// terminal it prints nothing: scripts and --json output stay as they were.
// `detail` (may be empty) is called from the drawing thread.
class Progress {
 public:
  explicit Progress(std::string label, std::function<std::string()> detail = {});
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  void set(std::string detail);  // "120 of 4000 jobs": shown instead of detail()

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// A one-connection pool for a command; status changes it makes are recorded
// with the actor "conveyor-cli:<login name>" (the audit trail of DESIGN §8).
db::PoolOptions pool_options(const Context& ctx);

// Command-line options, parsed by CLI11: `--name VALUE` or `--name=VALUE`
// and bare flags, positional arguments kept in order, `--` ends the options.
// Unknown options, a missing value and a flag given a value are errors
// naming the command and the option (Error(bad_input), exit 2), so a typo
// never runs a command with a default.
struct Options {
  std::map<std::string, std::string> values;                 // "--status" -> "failed" (given twice: the last)
  std::map<std::string, std::vector<std::string>> repeated;  // every value, in order (--set-param)
  std::set<std::string> flags;                               // "--yes"
  std::vector<std::string> positional;
  std::optional<std::string> get(const std::string& name) const;
  bool has(const std::string& name) const { return flags.count(name) > 0; }
  std::vector<std::string> get_all(const std::string& name) const {
    const auto it = repeated.find(name);
    return it == repeated.end() ? std::vector<std::string>{} : it->second;
  }
};
// `with_value` and `flags` list the accepted options; `command` names the
// command in errors ("job ls"). --help or -h where an option may stand throws
// HelpRequested, which dispatch answers with the command's usage.
Options parse_options(const std::vector<std::string>& args, const std::string& command,
                      const std::set<std::string>& with_value, const std::set<std::string>& flags = {});
// An integer option within [min, max], or Error(bad_input) naming it.
std::int64_t int_option(const Options& o, const std::string& name, std::int64_t fallback, std::int64_t min,
                        std::int64_t max);
// A duration option in seconds: a positive whole number of s, m, h or d
// ("30m", "24h", "7d"; at most about 100 years), or, where `bare_seconds`,
// also a whole number of seconds, 0 included ("60"). Error(bad_input)
// naming the option.
std::int64_t duration_option(const std::string& option, const std::string& value, bool bare_seconds = false);
// A UTC time option, "2026-11-20" (its midnight) or "2026-11-20T06:00:00Z";
// Error(bad_input) naming the option.
model::TimePoint time_option(const std::string& option, const std::string& value);
// A point in time given as a UTC time (as time_option) or as an age, a
// duration_option that long before now ("7d"): "2026-11-20T06:00:00Z".
// Error(bad_input) naming the option and both forms.
std::string time_or_age_option(const std::string& option, const std::string& value);
// Asks "<question> [y/N]" on a terminal; without one, refuses (returns false
// and says to pass --yes). `talk` is where the question goes.
bool confirm(Context& ctx, std::ostream& talk, const std::string& question);

// The workers and service instances that heartbeat now ("worker NAME",
// "conveyor-execution (1)"): they write what a restore replaces or a
// rollback drops. None where the schema has no such tables yet (a database
// that `db init` made, or one rolled back to nothing).
std::vector<std::string> live_processes(db::Tx& tx);
// Refuses, unless `force`, while live_processes() names any: says which
// (the first ten), how to stop them and that nothing changed; true when it
// refused.
bool refuse_while_live(Context& ctx, db::Pool& pool, bool force);

// An RFC 3339 UTC time as every text output shows it, with its zone:
// "2026-11-22T10:00:00.123456Z" (or "+00:00") -> "2026-11-22 10:00:00 UTC";
// none -> `none`. --json keeps the RFC 3339 text.
std::string display_time(const std::optional<std::string>& rfc3339, const char* none = "-");
// What a destructive command (job cancel|kill|set-status, queue drain) will
// touch, before it asks: ID TYPE STATUS CREATED of the first `limit` jobs,
// then how many more there are. Ids that name no job are left out.
void print_jobs(std::ostream& out, db::Tx& tx, const std::vector<std::int64_t>& ids, std::size_t limit = 20);

// `conveyor NOUN VERB --help`: thrown by parse_options, caught by dispatch.
struct HelpRequested {};
// Thrown instead of running a command while `conveyor __complete` asks what
// it accepts: dispatch lists its verbs, parse_options the verb's options.
// Both happen before any database access, so completion never connects.
struct CompletionListed {
  std::vector<std::string> words;    // verbs, or options taking no value
  std::set<std::string> with_value;  // options taking a value
};

// One subcommand of a noun ("job ls"): gets the arguments after its name.
using Subcommand = int (*)(Context&, const std::vector<std::string>&);
struct SubcommandEntry {
  const char* name;
  Subcommand run;
};
// Runs the subcommand args[0] names with the rest; no subcommand or an
// unknown one prints `usage` and returns kExitUsage. `NOUN --help|-h|help`
// prints `usage` on stdout; `NOUN VERB --help` and `NOUN help VERB` print
// the lines of `usage` for that verb (and the notes after them).
int dispatch(Context& ctx, const std::vector<std::string>& args, const std::string& noun, const char* usage,
             std::initializer_list<SubcommandEntry> subcommands);

int db_command(Context& ctx, const std::vector<std::string>& args);
int config_command(Context& ctx, const std::vector<std::string>& args);
int job_type_command(Context& ctx, const std::vector<std::string>& args);
int job_command(Context& ctx, const std::vector<std::string>& args);
int worker_command(Context& ctx, const std::vector<std::string>& args);
int params_command(Context& ctx, const std::vector<std::string>& args);
int system_command(Context& ctx, const std::vector<std::string>& args);
int queue_command(Context& ctx, const std::vector<std::string>& args);
int events_command(Context& ctx, const std::vector<std::string>& args);
int schedule_command(Context& ctx, const std::vector<std::string>& args);
int token_command(Context& ctx, const std::vector<std::string>& args);

}  // namespace conveyor::cli
