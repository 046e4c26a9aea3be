// Argument dispatch, shared output helpers and error reporting of the CLI.
#include "cli.hpp"

#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <iostream>
#include <mutex>
#include <sstream>
#include <string_view>
#include <thread>

// GCC 12 at -O2 sees a null dereference in libstdc++'s string move inlined
// into CLI11 2.1's detail::split (a false positive: -Wnull-dereference).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <CLI/CLI.hpp>
#pragma GCC diagnostic pop

#include "conveyor/db/db.hpp"
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
  job ls [--status S[,S...]] [--type T] [--page N] [--size N]
                jobs, newest first (`job ls --status started`: what runs now)
  job inspect ID      one job with its history and its attempts (image, digest, CPU, memory)
  job stats [--type T] [--since D]   count, median and p95 of wall time, CPU and peak memory per type
  job submit TYPE [--params JSON | --params-file FILE] [--priority N]
             [--depends-on ID,ID] [--not-before TIME] [--idempotency-key K]
  job submit --file FILE   a batch ({"jobs": [...]}, - for stdin): up to 1000 jobs, all or none
  job cancel ID... [--yes]   stop jobs wherever they are (canceled_at = now())
  job retry ID...     run failed, errored or canceled jobs again from the right point
  job hold ID... / job release ID...   admission skips held jobs until they are released
  job logs ID [--tail N] [--follow]   the job's logs.txt (stdout and stderr of every attempt);
                --follow: what is appended, until the job stops running
  job kill ID... [--cleanup] [--yes]   cancel; --cleanup also removes its outputs once it no longer runs
  job set-status ID... --to S[,S...] [--yes]   move jobs through the status machine (e.g. error_checked,ready)
  job patch --status S [--type T] [--since T] [--until T] [--ids ID,...] [--param K=V] [--to S[,S...]]
            [--set-param K=V]... [--params-file FILE] [--limit N] [--apply] [--yes]
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
  system waves [--start N | --all | --auto [--threshold N] | --stop]   job types in waves by their dependencies;
                                     --start N handles waves 1..N; --auto lets the monitor advance them
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
  schedule backfill TYPE --from TIME [--to TIME] [--policy all|collapse] [--apply] [--yes]
                the runs of every slot in the range not created yet (collapse: one run for the range);
                a dry run unless --apply, which requests them from conveyor-creation (batched, resumable)
  schedule backfills [--all] / schedule cancel-backfill ID
  events tail [--topic jobs|parameters|control|all] [--from-beginning] [--job ID] [--count N] [--for 60|30s|10m]
                the CloudEvents on the topics as they come (needs CONVEYOR_KAFKA_BROKERS);
                jobs: the topic of every job event type, <prefix>.job.<type>
  events topics   every topic, one a line (to create them where the broker does not on first use)
  token create NAME --role reader|submitter|operator [--expires 30d]
                a REST API token, printed once on stdout (only its SHA-256 is stored)
  token list          API tokens: role, state (active, expired, revoked), created, expires, last used
  token revoke NAME   the token gets 401 from now on
  completion bash|zsh   the shell completion script (bash: source <(conveyor completion bash))
  version       print the version (also --version)

Every `ls` is also `list`, and every `list` also `ls`; `job show` is `job inspect`.
Job ids are exact (digits). Commands that change jobs or workers (job cancel, kill, set-status,
patch --apply, queue drain --apply, worker drain) list what they will touch and ask first; --yes
answers for scripts, and without a terminal they refuse unless --yes is given.
Configuration: CONVEYOR_* environment variables over --env-file files (later files win).
)";

// Set while `conveyor __complete` asks a command what it accepts.
bool g_listing = false;
// The configuration could not be loaded, but help was asked for: help is
// printed without it, and a command that needs the database gets this error.
std::exception_ptr g_config_error;

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
  if (g_config_error) std::rethrow_exception(g_config_error);
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

struct Progress::State {
  std::string label;
  std::function<std::string()> detail;
  std::string fixed;  // set(): replaces detail()
  std::mutex mutex;
  std::condition_variable wake;
  bool done = false;
  std::thread drawer;
};

Progress::Progress(std::string label, std::function<std::string()> detail) {
  if (!::isatty(STDERR_FILENO)) return;
  state_ = std::make_unique<State>();
  state_->label = std::move(label);
  state_->detail = std::move(detail);
  state_->drawer = std::thread([s = state_.get()] {
    const auto start = std::chrono::steady_clock::now();
    std::unique_lock lock(s->mutex);
    do {
      const auto seconds =
          std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - start).count();
      std::string text = !s->fixed.empty() ? s->fixed : s->detail ? s->detail() : "";
      // \r and erase-to-end-of-line: one line, redrawn in place.
      std::cerr << "\r" << s->label << ": " << seconds << " s" << (text.empty() ? "" : " " + text) << "\x1b[K"
                << std::flush;
    } while (!s->wake.wait_for(lock, std::chrono::milliseconds(500), [s] { return s->done; }));
    std::cerr << "\r\x1b[K" << std::flush;
  });
}

Progress::~Progress() {
  if (!state_) return;
  {
    std::lock_guard lock(state_->mutex);
    state_->done = true;
  }
  state_->wake.notify_all();
  state_->drawer.join();
}

void Progress::set(std::string detail) {
  if (!state_) return;
  std::lock_guard lock(state_->mutex);
  state_->fixed = std::move(detail);
}

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

namespace {

// "--status=failed" -> "--status"
std::string option_name(const std::string& token) { return token.substr(0, token.find('=')); }

bool is_help_flag(const std::string& a) { return a == "--help" || a == "-h"; }

[[noreturn]] void refuse_unknown(const std::string& command, const std::string& name,
                                 const std::set<std::string>& with_value, const std::set<std::string>& flags) {
  std::string known;
  for (const auto& k : with_value) known += (known.empty() ? "" : ", ") + k + " VALUE";
  for (const auto& k : flags) known += (known.empty() ? "" : ", ") + k;
  throw FieldError(
      name, command + ": unknown option " + name + (known.empty() ? " (it takes none)" : " (expected " + known + ")"));
}

}  // namespace

// CLI11 parses; this maps its results and errors onto Options and messages
// that name the command and the option. CLI11's generated help is never
// printed: its help flag only ends in HelpRequested, and dispatch prints the
// verb's lines of the noun's curated usage, which carry the notes and
// examples (what a dry run shows, which statuses a move accepts) that a
// generated option list cannot.
Options parse_options(const std::vector<std::string>& args, const std::string& command,
                      const std::set<std::string>& with_value, const std::set<std::string>& flags) {
  if (g_listing) throw CompletionListed{std::vector<std::string>(flags.begin(), flags.end()), with_value};
  CLI::App app(command);
  // Unknown options are collected, not thrown as CLI11's ExtrasError, so the
  // message below can list what the command accepts.
  app.allow_extras();
  std::map<std::string, CLI::Option*> valued;
  std::map<std::string, CLI::Option*> switches;
  for (const auto& name : with_value) {
    // One value per occurrence; every occurrence kept (--set-param K=V --set-param ...).
    valued[name] = app.add_option(name)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  }
  for (const auto& name : flags) switches[name] = app.add_flag(name);
  // Every positional, in order. A count (not CLI11's open-ended vector) so a
  // positional such as "[1,2]" is not split into list items.
  CLI::Option* positional = app.add_option("args")
                                ->expected(static_cast<int>(args.size()))
                                ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  try {
    app.parse(std::vector<std::string>(args.rbegin(), args.rend()));  // CLI11 takes them reversed
  } catch (const CLI::CallForHelp&) {
    throw HelpRequested{};
  } catch (const CLI::ParseError& e) {
    // --help wins over a mistake elsewhere on the line, as it would before it.
    if (std::any_of(args.begin(), args.end(), is_help_flag)) throw HelpRequested{};
    // CLI11 reports a missing value only once the arguments ran out, so the
    // option that needed it is the last one.
    const std::string last = args.empty() ? "" : option_name(args.back());
    if (dynamic_cast<const CLI::ArgumentMismatch*>(&e) != nullptr && valued.count(last)) {
      throw FieldError(last, command + ": " + last + " needs a value");
    }
    throw Error(errc::bad_input, command + ": " + e.what());
  }
  for (const auto& token : app.remaining()) {
    if (token != "--") refuse_unknown(command, option_name(token), with_value, flags);  // "--" ends the options
  }
  Options o;
  for (const auto& [name, option] : valued) {
    if (option->results().empty()) continue;
    o.repeated[name] = option->results();
    o.values[name] = option->results().back();
  }
  for (const auto& [name, option] : switches) {
    if (option->count() == 0) continue;
    // CLI11 accepts --flag=VALUE (a bare flag gives "true"); a flag here is
    // only ever given or not, so `--yes=1` or `--yes=false` is refused.
    for (const auto& r : option->results()) {
      if (r != "true") throw FieldError(name, command + ": " + name + " takes no value, got '" + r + "'");
    }
    o.flags.insert(name);
  }
  o.positional = positional->results();
  return o;
}

std::int64_t int_option(const Options& o, const std::string& name, std::int64_t fallback, std::int64_t min,
                        std::int64_t max) {
  const auto v = o.get(name);
  if (!v) return fallback;
  std::int64_t n = 0;
  const auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (ec != std::errc() || end != v->data() + v->size() || n < min || n > max) {
    throw FieldError(name, name + ": expected an integer from " + std::to_string(min) + " to " + std::to_string(max) +
                               ", got '" + *v + "'");
  }
  return n;
}

std::int64_t duration_option(const std::string& option, const std::string& value, bool bare_seconds) {
  constexpr std::int64_t kMaxSeconds = 100LL * 365 * 86'400;
  std::int64_t n = 0;
  const char* const last = value.data() + value.size();
  const auto [end, ec] = std::from_chars(value.data(), last, n);
  const std::string unit(end, last);
  const bool bare = bare_seconds && unit.empty();
  const std::int64_t factor = bare || unit == "s" ? 1
                              : unit == "m"       ? 60
                              : unit == "h"       ? 3600
                              : unit == "d"       ? 86'400
                                                  : 0;
  if (ec != std::errc() || n < (bare ? 0 : 1) || factor == 0 || n > kMaxSeconds / factor) {
    throw FieldError(option, option + ": expected " + (bare_seconds ? "a whole number of seconds or " : "") +
                                 "a duration such as 30m, 24h or 7d (a positive whole number of s, m, h or d), got '" +
                                 value + "'");
  }
  return n * factor;
}

model::TimePoint time_option(const std::string& option, const std::string& value) {
  try {
    return model::parse_utc_day_or_time(value);
  } catch (const Error&) {
    throw FieldError(option, option + ": '" + value + "' is not a UTC time like 2026-11-20 or 2026-11-20T06:00:00Z");
  }
}

std::string time_or_age_option(const std::string& option, const std::string& value) {
  if (!value.empty() && std::isdigit(static_cast<unsigned char>(value.front())) && value.size() < 10 &&
      std::isalpha(static_cast<unsigned char>(value.back()))) {
    try {
      const auto age = std::chrono::seconds(duration_option(option, value));
      return model::format_utc(std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()) - age);
    } catch (const Error&) {
    }
  } else {
    try {
      return model::format_utc(time_option(option, value));
    } catch (const Error&) {
    }
  }
  throw FieldError(option, option + ": '" + value +
                               "' is neither a UTC time like 2026-11-20 or 2026-11-20T06:00:00Z nor an age "
                               "like 30m, 24h or 7d");
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

std::string display_time(const std::optional<std::string>& t, const char* none) {
  if (!t) return none;
  if (t->size() < 19) return *t;
  std::string s = t->substr(0, 19);
  s[10] = ' ';
  // The model writes every time in UTC; say so rather than leave the reader
  // to guess at 3 a.m. whether it is local time.
  const bool utc = t->back() == 'Z' || t->ends_with("+00:00") || t->ends_with("+00");
  return s + (utc ? " UTC" : "");
}

void print_jobs(std::ostream& out, db::Tx& tx, const std::vector<std::int64_t>& ids, std::size_t limit) {
  const std::vector<std::int64_t> shown(ids.begin(),
                                        ids.begin() + static_cast<std::ptrdiff_t>(std::min(limit, ids.size())));
  std::vector<std::vector<std::string>> rows;
  for (const auto& j : model::load_jobs(tx, shown)) {
    rows.push_back({std::to_string(j.id.value()), j.job_type, std::string(model::to_string(j.status)),
                    display_time(j.created_at)});
  }
  print_table(out, {"ID", "TYPE", "STATUS", "CREATED"}, rows);
  if (ids.size() > shown.size()) out << "... and " << ids.size() - shown.size() << " more\n";
}

namespace {

bool is_help(const std::string& a) { return is_help_flag(a) || a == "help"; }

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

// The verb a usage line is about: "       conveyor job ls [--status S[,S...]]" -> "ls";
// "" when the line names no command of `noun` (a continuation or a note).
std::string usage_verb(const std::string& line, const std::string& noun) {
  std::string_view v = line;
  if (v.starts_with("usage: ")) v.remove_prefix(7);
  while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
  const std::string lead = "conveyor " + noun + " ";
  if (!v.starts_with(lead)) return "";
  v.remove_prefix(lead.size());
  return std::string(v.substr(0, v.find_first_of(" |")));
}

// The lines of a noun's usage for one verb (any of `names`: aliases share a
// function), with their continuation lines and the noun's closing notes;
// the whole usage when none names the verb.
std::string verb_usage(const std::string& noun, const char* usage, const std::set<std::string>& names) {
  const auto lines = split_lines(usage);
  std::string text;
  std::string notes;
  bool in_verb = false;
  bool in_notes = false;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    const std::string verb = usage_verb(l, noun);
    if (!verb.empty()) {
      in_verb = names.count(verb) > 0;
      if (in_verb) text += (text.empty() ? "usage: " : "       ") + l.substr(l.find("conveyor ")) + "\n";
      continue;
    }
    if (i > 0 && !l.empty() && l[0] != ' ') in_notes = true;
    if (in_notes) notes += l + "\n";
    else if (in_verb) text += l + "\n";
  }
  return text.empty() ? std::string(usage) : text + notes;
}

}  // namespace

int dispatch(Context& ctx, const std::vector<std::string>& args, const std::string& noun, const char* usage,
             std::initializer_list<SubcommandEntry> subcommands) {
  if (g_listing && args.empty()) {
    CompletionListed verbs;
    for (const auto& sub : subcommands) verbs.words.emplace_back(sub.name);
    throw verbs;
  }
  if (args.empty()) {
    ctx.err << usage;
    return kExitUsage;
  }
  // `NOUN help VERB` is `NOUN VERB --help`.
  std::vector<std::string> wanted = args;
  if (is_help(args[0]) && args.size() > 1) wanted = {args[1], "--help"};
  if (is_help(wanted[0])) {
    ctx.out << usage;
    return kExitOk;
  }
  const std::vector<std::string> rest(wanted.begin() + 1, wanted.end());
  for (const auto& sub : subcommands) {
    if (wanted[0] != sub.name) continue;
    try {
      return sub.run(ctx, rest);
    } catch (const HelpRequested&) {
      std::set<std::string> names;
      for (const auto& alias : subcommands)
        if (alias.run == sub.run) names.insert(alias.name);
      ctx.out << verb_usage(noun, usage, names);
      return kExitOk;
    }
  }
  ctx.err << "conveyor: unknown " << noun << " command '" << wanted[0] << "'\n" << usage;
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

namespace {

// Every noun: run_cli runs them, help and completion list them from here.
constexpr SubcommandEntry kNouns[] = {{"db", db_command},
                                      {"config", config_command},
                                      {"job-type", job_type_command},
                                      {"job", job_command},
                                      {"worker", worker_command},
                                      {"params", params_command},
                                      {"system", system_command},
                                      {"queue", queue_command},
                                      {"events", events_command},
                                      {"schedule", schedule_command},
                                      {"token", token_command}};

const SubcommandEntry* find_noun(const std::string& name) {
  for (const auto& n : kNouns)
    if (name == n.name) return &n;
  return nullptr;
}

// The scripts only ask `conveyor __complete` (the same binary the user
// typed), so they never go stale as commands and options change.
constexpr const char* kBashCompletion = R"sh(# bash completion for conveyor: source <(conveyor completion bash)
_conveyor() {
  local IFS=$'\n'
  COMPREPLY=($("${COMP_WORDS[0]}" __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
}
complete -o default -F _conveyor conveyor
)sh";
constexpr const char* kZshCompletion = R"sh(#compdef conveyor
# zsh completion for conveyor: source <(conveyor completion zsh), after compinit
_conveyor() {
  local -a candidates
  candidates=(${(f)"$(${words[1]} __complete "${(@)words[2,CURRENT]}" 2>/dev/null)"})
  if (( ${#candidates} )); then compadd -- $candidates; else _files; fi
}
if (( $+functions[compdef] )); then compdef _conveyor conveyor; fi
)sh";

// What a noun accepts, asked without running it: its verbs (verb empty) or
// the verb's options. Nothing when the command does not say before it would
// need the database (the configuration here is empty, so it cannot connect).
CompletionListed list_accepted(const SubcommandEntry& noun, const std::optional<std::string>& verb) {
  std::ostream nowhere(nullptr);
  Context ctx{config::load(cli_schema(), {}, {}), false, nowhere, nowhere};
  g_listing = true;
  try {
    noun.run(ctx, verb ? std::vector<std::string>{*verb} : std::vector<std::string>{});
  } catch (const CompletionListed& listed) {
    g_listing = false;
    return listed;
  } catch (...) {
  }
  g_listing = false;
  return {};
}

// `conveyor __complete WORD... CURRENT`: the words typed after `conveyor`,
// the last one being completed (may be empty); prints the candidates
// starting with it, one a line. No candidate: the shell completes file names.
int complete(const std::vector<std::string>& words, std::ostream& out) {
  const std::string current = words.empty() ? "" : words.back();
  std::vector<std::string> before;
  for (std::size_t i = 0; i + 1 < words.size(); ++i) {
    if (words[i] == "--json" || words[i].starts_with("--env-file=")) continue;
    if (words[i] == "--env-file") {
      ++i;
      continue;
    }
    before.push_back(words[i]);
  }
  if (words.size() >= 2 && words[words.size() - 2] == "--env-file") return kExitOk;  // a file name
  std::vector<std::string> candidates;
  const bool option = current.starts_with("-");
  const auto verbs_of = [&](const std::string& name) {
    if (const auto* noun = find_noun(name)) {
      for (auto& v : list_accepted(*noun, std::nullopt).words) candidates.push_back(v);
    }
  };
  if (before.empty()) {
    for (const auto& n : kNouns) candidates.emplace_back(n.name);
    candidates.insert(candidates.end(), {"help", "version", "completion"});
    if (option) candidates.insert(candidates.end(), {"--json", "--env-file", "--help", "--version"});
  } else if (before[0] == "completion") {
    if (before.size() == 1) candidates = {"bash", "zsh"};
  } else if (before[0] == "help") {
    if (before.size() == 1) {
      for (const auto& n : kNouns) candidates.emplace_back(n.name);
    } else if (before.size() == 2) {
      verbs_of(before[1]);
    }
  } else if (const auto* noun = find_noun(before[0])) {
    if (before.size() == 1) {
      verbs_of(before[0]);
      candidates.push_back(option ? "--help" : "help");
    } else if (before.size() == 2 && is_help(before[1])) {
      verbs_of(before[0]);
    } else {
      const CompletionListed accepted = list_accepted(*noun, before[1]);
      // After an option that takes a value: the value (files by default).
      if (before.size() > 2 && accepted.with_value.count(before.back())) return kExitOk;
      if (option) {
        candidates = accepted.words;
        candidates.insert(candidates.end(), accepted.with_value.begin(), accepted.with_value.end());
        candidates.push_back("--help");
      }
    }
  }
  std::sort(candidates.begin(), candidates.end());
  candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
  for (const auto& c : candidates)
    if (c.starts_with(current)) out << c << "\n";
  return kExitOk;
}

// The command's words with --json taken out (it sets `json`); `help NOUN
// [VERB]` becomes `NOUN [VERB] --help`.
std::vector<std::string> command_words(const std::vector<std::string>& split_args, bool& json) {
  std::vector<std::string> args;
  json = false;
  for (const auto& a : split_args) {
    if (a == "--json") json = true;
    else args.push_back(a);
  }
  if (args.size() > 1 && is_help(args[0]) && find_noun(args[1])) {
    args.erase(args.begin());
    args.emplace_back("--help");
  }
  return args;
}

// `conveyor completion bash|zsh`: the script to source.
int completion_script(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (args.size() == 2 && args[1] == "bash") return out << kBashCompletion, kExitOk;
  if (args.size() == 2 && args[1] == "zsh") return out << kZshCompletion, kExitOk;
  if (args.size() == 2 && is_help(args[1])) return out << "usage: conveyor completion bash|zsh\n", kExitOk;
  err << "usage: conveyor completion bash|zsh   (bash: source <(conveyor completion bash))\n";
  return kExitUsage;
}

// Help needs no configuration: when it cannot be loaded, help still prints
// (with the defaults), and a command that goes on to need the database
// reports why (g_config_error).
config::Config load_cli_config(const std::vector<std::filesystem::path>& env_files, bool wants_help) {
  g_config_error = nullptr;
  try {
    return config::load(cli_schema(), env_files, config::process_environment());
  } catch (const Error&) {
    if (!wants_help) throw;
    g_config_error = std::current_exception();
    return config::load(cli_schema(), {}, {});
  }
}

// Runs the command `args` names (after the built-in ones: help, completion, version).
int run_command(const config::EnvFileArgs& split, std::ostream& out, std::ostream& err) {
  bool json = false;
  const std::vector<std::string> args = command_words(split.args, json);
  if (args.empty()) {
    err << "conveyor: missing command\n\n" << kUsage;
    return kExitUsage;
  }
  if (is_help(args[0])) {
    out << kUsage;
    return kExitOk;
  }
  if (args[0] == "completion") return completion_script(args, out, err);
  if (args[0] == "version" || args[0] == "--version") {
    out << "conveyor " << CONVEYOR_VERSION << "\n";
    return kExitOk;
  }
  Context ctx{load_cli_config(split.env_files, std::any_of(args.begin(), args.end(), is_help)), json, out, err};
  if (!g_config_error)
    for (const auto& w : ctx.config.warnings()) err << "conveyor: warning: " << w << "\n";
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (const auto* noun = find_noun(args[0])) return noun->run(ctx, rest);
  err << "conveyor: unknown command '" << args[0] << "'\n\n" << kUsage;
  return kExitUsage;
}

}  // namespace

int run_cli(const std::vector<std::string>& raw_args, std::ostream& out, std::ostream& err) {
  try {
    if (!raw_args.empty() && raw_args[0] == "__complete") {
      return complete(std::vector<std::string>(raw_args.begin() + 1, raw_args.end()), out);
    }
    return run_command(config::split_env_file_args(raw_args), out, err);
  } catch (const HelpRequested&) {  // a command outside dispatch: the overall usage
    out << kUsage;
    return kExitOk;
  } catch (const db::DbError& e) {
    err << "conveyor: error: " << e.what() << "\n";
    if (db::not_migrated(e)) {
      err << "conveyor: the database has no Conveyor schema, or an older one than this conveyor: run `conveyor db "
             "init` (once) and `conveyor db migrate`\n";
    }
    return kExitFailed;
  } catch (const Error& e) {
    err << "conveyor: error: " << e.what() << "\n";
    return e.code() == errc::bad_input ? kExitUsage : kExitFailed;
  } catch (const std::exception& e) {
    err << "conveyor: error: " << e.what() << "\n";
    return kExitFailed;
  }
}

}  // namespace conveyor::cli
