// Argument dispatch, shared output helpers and error reporting of the CLI.
#include "cli.hpp"

#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <csignal>
#include <iostream>

#include "conveyor/error/error.hpp"
#include "conveyor/model/job.hpp"

namespace conveyor::cli {

namespace {

constexpr const char* kUsage = R"(usage: conveyor [--env-file FILE]... [--json] <command> [args]

commands:
  db init       create the migration tables
  db status     pending count, current version, up to date or not
  db pending    list migrations not yet applied
  db applied    list applied migrations with group ids and times
  db create N   write an empty up/down migration pair named N
  db migrate    apply every pending migration as one group, in one transaction
  db rollback   undo the last group
  db lock       refuse migrate and rollback until unlocked
  db unlock     allow migrate and rollback again
  db grant-login LOGIN --role conveyor_<service> (--password-file FILE | --no-password)
                a service's login role, member of its least-privilege role (run as the owner)
  config show   effective configuration, secrets masked, with where each value came from
  job-type apply FILE [--yes] [--dry-run]
                validate a job-types file, show the diff with the database, ask, apply in one transaction
  job-type list job types in the database
  job-type show NAME   one job type as JSON
  job ls [--status S] [--type T] [--page N] [--size N]
                jobs, newest first (`job ls --status started`: what runs now)
  job inspect ID      one job with its history and its attempts (image, digest, CPU, memory)
  job stats [--type T] [--since D]   count, median and p95 of wall time, CPU and peak memory per type
  job submit TYPE [--params JSON | --params-file FILE] [--priority N]
             [--depends-on ID,ID] [--not-before TIME] [--idempotency-key K]
  job cancel ID... [--yes]   stop jobs wherever they are (canceled_at = now())
  job retry ID...     run failed, errored or canceled jobs again from the right point
  job logs ID [--tail N] [--follow]   the job's logs.txt (stdout and stderr of every attempt);
                --follow: what is appended, until the job stops running
  job kill ID... [--cleanup] [--yes]   cancel; --cleanup also removes its outputs once it no longer runs
  job set-status ID... --to S[,S...] [--yes]   move jobs through the status machine (e.g. error_checked,ready)
  job patch --status S [--type T] [--since T] [--until T] [--ids ID,...] [--param K=V] [--to S[,S...]]
            [--set-param K=V]... [--params-file FILE] [--apply] [--yes]
                bulk status or params change: a dry run showing the count unless --apply;
                new params are checked against the type's schema and recorded (job inspect)
  worker list [--pool P] [--all]   live workers (--all: stopped and lost too)
  worker ping NAME    OK when the worker heartbeats, exit 1 when it does not
  worker drain NAME [--yes]   the worker takes no new job and exits once idle
  params list         every system parameter with its value
  params get NAME     one value (JSON)
  params set NAME=VALUE...   change parameters live, in one transaction (VALUE is JSON or text)
  system status       accepting jobs or not, jobs by status, workers, services, outbox
  system pause [--reason TEXT]   stop accepting new jobs (running jobs go on)
  system unpause      accept new jobs again
  system waves [--start N | --all]   job types in waves by their dependencies; --start N handles waves 1..N
  system backup FILE  pg_dump of the database (custom format, compressed)
  system restore FILE [--clean] [--yes]   pg_restore in one transaction (--clean: replace what is there)
  system prepare-for-reboot [--force] [--yes]   after stopping the workers: started and queued jobs back to ready
  queue list          pools and job types: ready, queued, started, paused
  queue inspect (--type T | --pool P)   one queue in detail
  queue pause (--type T | --pool P) [--reason TEXT]   admission holds its ready jobs
  queue resume (--type T | --pool P)
  queue drain (--type T | --pool P) [--status S,...] [--apply] [--yes]
                cancel the queue's jobs that are not running; a dry run showing the count unless --apply
  schedule list       scheduled job types: spec, catch-up policy, previous and next slot, runs created
  schedule pause TYPE [--reason TEXT] / schedule resume TYPE
  schedule backfill TYPE --from TIME [--to TIME] [--apply] [--yes]
                the runs of every slot in the range not created yet; a dry run unless --apply
  events tail [--topic jobs|parameters|control|all] [--from-beginning] [--job ID] [--count N] [--for S]
                the CloudEvents on the topics as they come (needs CONVEYOR_KAFKA_BROKERS)
  token create NAME --role reader|submitter|operator [--expires 30d]
                a REST API token, printed once on stdout (only its SHA-256 is stored)
  token list          API tokens: role, state (active, expired, revoked), created, expires, last used
  token revoke NAME   the token gets 401 from now on
  version       print the version

Job ids are exact (digits). Commands that change jobs or workers (job cancel, kill, set-status,
patch --apply, queue drain --apply, worker drain) list what they will touch and ask first; --yes
answers for scripts, and without a terminal they refuse unless --yes is given.
Configuration: CONVEYOR_* environment variables over --env-file files (later files win).
)";

config::Schema cli_schema() {
  auto schema = config::core_schema();
  // The CLI starts without a database for `db create`, `config show` and help;
  // commands that need one say so (Context::database_url).
  config::Key url;
  url.name = "CONVEYOR_DATABASE_URL";
  url.default_value = "";
  url.secret = true;
  url.help = "libpq connection string or URI of the Conveyor database";
  schema.add(url);
  return schema;
}

}  // namespace

std::string Context::database_url() const {
  std::string url = config.get_string("CONVEYOR_DATABASE_URL");
  if (url.empty()) {
    throw Error(errc::invalid_config,
                "CONVEYOR_DATABASE_URL is not set: export it, pass --env-file FILE, or `. .conveyor/env`");
  }
  return url;
}

namespace {
std::atomic<bool> g_interrupted{false};
extern "C" void on_interrupt(int) { g_interrupted = true; }
}  // namespace

InterruptGuard::InterruptGuard() {
  g_interrupted = false;
  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);
}
InterruptGuard::~InterruptGuard() {
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
}
bool InterruptGuard::interrupted() noexcept { return g_interrupted; }

db::PoolOptions pool_options(const Context& ctx) {
  db::PoolOptions o;
  o.url = ctx.database_url();
  o.size = 1;
  o.application_name = "conveyor-cli";
  const passwd* pw = ::getpwuid(::geteuid());
  o.actor = std::string("conveyor-cli:") + (pw != nullptr ? pw->pw_name : std::to_string(::geteuid()));
  return o;
}

std::optional<std::string> Options::get(const std::string& name) const {
  const auto it = values.find(name);
  if (it == values.end()) return std::nullopt;
  return it->second;
}

Options parse_options(const std::vector<std::string>& args, const std::string& command,
                      const std::set<std::string>& with_value, const std::set<std::string>& flags) {
  Options o;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.size() < 2 || a[0] != '-' || (a[1] != '-' && !flags.count(a))) {
      o.positional.push_back(a);
      continue;
    }
    const auto eq = a.find('=');
    const std::string name = a.substr(0, eq);
    if (with_value.count(name)) {
      if (eq != std::string::npos) {
        o.repeated[name].push_back(o.values[name] = a.substr(eq + 1));
      } else if (i + 1 < args.size()) {
        o.repeated[name].push_back(o.values[name] = args[++i]);
      } else {
        throw FieldError(name, command + ": " + name + " needs a value");
      }
    } else if (flags.count(name) && eq == std::string::npos) {
      o.flags.insert(name);
    } else {
      std::string known;
      for (const auto& k : with_value) known += (known.empty() ? "" : ", ") + k + " VALUE";
      for (const auto& k : flags) known += (known.empty() ? "" : ", ") + k;
      throw FieldError(name, command + ": unknown option " + name +
                                 (known.empty() ? " (it takes none)" : " (expected " + known + ")"));
    }
  }
  return o;
}

std::int64_t int_option(const Options& o, const std::string& name, std::int64_t fallback,
                        std::int64_t min, std::int64_t max) {
  const auto v = o.get(name);
  if (!v) return fallback;
  std::int64_t n = 0;
  const auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (ec != std::errc() || end != v->data() + v->size() || n < min || n > max) {
    throw FieldError(name, name + ": expected an integer from " + std::to_string(min) + " to " +
                               std::to_string(max) + ", got '" + *v + "'");
  }
  return n;
}

bool confirm(Context& ctx, std::ostream& talk, const std::string& question) {
  if (!::isatty(STDIN_FILENO)) {
    std::string what = question;
    if (!what.empty() && what.back() == '?') what.pop_back();
    ctx.err << "conveyor: refusing to " << what
            << " without confirmation: stdin is not a terminal; pass --yes to go ahead\n";
    return false;
  }
  talk << question << " [y/N] " << std::flush;
  std::string answer;
  std::getline(std::cin, answer);
  return answer == "y" || answer == "Y" || answer == "yes";
}

std::string display_time(const std::optional<std::string>& t) {
  if (!t || t->size() < 19) return t.value_or("-");
  std::string s = t->substr(0, 19);
  s[10] = ' ';
  // The model writes every time in UTC (a trailing Z); say so rather than
  // leave the reader to guess at 3 a.m. whether it is local time.
  return s + (t->back() == 'Z' ? " UTC" : "");
}

void print_jobs(std::ostream& out, db::Tx& tx, const std::vector<std::int64_t>& ids, std::size_t limit) {
  const std::vector<std::int64_t> shown(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(std::min(limit, ids.size())));
  std::vector<std::vector<std::string>> rows;
  for (const auto& j : model::load_jobs(tx, shown)) {
    rows.push_back({std::to_string(j.id.value()), j.job_type, std::string(model::to_string(j.status)),
                    display_time(j.created_at)});
  }
  print_table(out, {"ID", "TYPE", "STATUS", "CREATED"}, rows);
  if (ids.size() > shown.size()) out << "... and " << ids.size() - shown.size() << " more\n";
}

int dispatch(Context& ctx, const std::vector<std::string>& args, const std::string& noun, const char* usage,
             std::initializer_list<SubcommandEntry> subcommands) {
  if (args.empty()) {
    ctx.err << usage;
    return kExitUsage;
  }
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  for (const auto& sub : subcommands) {
    if (args[0] == sub.name) return sub.run(ctx, rest);
  }
  ctx.err << "conveyor: unknown " << noun << " command '" << args[0] << "'\n" << usage;
  return kExitUsage;
}

void print_table(std::ostream& out, const std::vector<std::string>& headers,
                 const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width(headers.size());
  for (std::size_t i = 0; i < headers.size(); ++i) width[i] = headers[i].size();
  for (const auto& row : rows)
    for (std::size_t i = 0; i < row.size() && i < width.size(); ++i) width[i] = std::max(width[i], row[i].size());
  auto line = [&](const std::vector<std::string>& cells) {
    std::string s = " ";
    for (std::size_t i = 0; i < width.size(); ++i) {
      std::string cell = i < cells.size() ? cells[i] : "";
      s += " " + cell;
      if (i + 1 < width.size()) s += std::string(width[i] - cell.size() + 1, ' ');
    }
    out << s << "\n";
  };
  line(headers);
  std::size_t total = 2;
  for (auto w : width) total += w + 2;
  out << std::string(total, '-') << "\n";
  for (const auto& row : rows) line(row);
}

int run_cli(const std::vector<std::string>& raw_args, std::ostream& out, std::ostream& err) {
  try {
    auto split = config::split_env_file_args(raw_args);
    std::vector<std::string> args;
    bool json = false;
    for (auto& a : split.args) {
      if (a == "--json") json = true;
      else args.push_back(a);
    }
    if (args.empty() || args[0] == "help" || args[0] == "--help" || args[0] == "-h") {
      (args.empty() ? err : out) << kUsage;
      return args.empty() ? kExitUsage : kExitOk;
    }
    if (args[0] == "version" || args[0] == "--version") {
      out << "conveyor " << CONVEYOR_CLI_VERSION << "\n";
      return kExitOk;
    }
    Context ctx{config::load(cli_schema(), split.env_files, config::process_environment()), json, out, err};
    for (const auto& w : ctx.config.warnings()) err << "conveyor: warning: " << w << "\n";
    std::vector<std::string> rest(args.begin() + 1, args.end());
    if (args[0] == "db") return db_command(ctx, rest);
    if (args[0] == "config") return config_command(ctx, rest);
    if (args[0] == "job-type") return job_type_command(ctx, rest);
    if (args[0] == "job") return job_command(ctx, rest);
    if (args[0] == "worker") return worker_command(ctx, rest);
    if (args[0] == "params") return params_command(ctx, rest);
    if (args[0] == "system") return system_command(ctx, rest);
    if (args[0] == "queue") return queue_command(ctx, rest);
    if (args[0] == "events") return events_command(ctx, rest);
    if (args[0] == "schedule") return schedule_command(ctx, rest);
    if (args[0] == "token") return token_command(ctx, rest);
    err << "conveyor: unknown command '" << args[0] << "'\n\n" << kUsage;
    return kExitUsage;
  } catch (const Error& e) {
    err << "conveyor: error: " << e.what() << "\n";
    return e.code() == errc::bad_input ? kExitUsage : kExitFailed;
  } catch (const std::exception& e) {
    err << "conveyor: error: " << e.what() << "\n";
    return kExitFailed;
  }
}

}  // namespace conveyor::cli
