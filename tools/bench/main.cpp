// conveyor-bench: measures the job path end to end on real processes and
// prints the figures (a table, or --json). Not a test: nothing asserts.
//
// It starts a whole stack of its own (conveyor::testing::Stack): a private
// PostgreSQL cluster, durable unless --fast-db, a devbroker, the four
// services and --workers workers, from this build or from --bin-dir. Then,
// for each workload (a `sleep 0` process job, a resident no-op job, a chain
// of three job types each depending on the previous):
//  1. throughput: --jobs jobs submitted at once through the REST API by
//     --submitters threads (--batch jobs per request, POST /v1/jobs/batch,
//     a chain's jobs each `after` the one before); jobs done / (first
//     created_at .. last done);
//  2. latency: jobs submitted open loop at --rate jobs/s for --duration (on
//     schedule, whatever is done); p50/p95/p99 of created_at -> done, both
//     PostgreSQL's clock (a chain: its first job's created_at -> its last
//     job's done);
//  3. the CPU milliseconds per job of every process in each phase, from
//     /proc, and each process's peak memory.
// It waits for jobs on one database connection, one query per poll.
// --files-dir puts the job folders on another volume than PostgreSQL's.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "conveyor/db/db.hpp"
#include "conveyor/http/client.hpp"
#include "conveyor/http/server.hpp"
#include "conveyor/testing/stack.hpp"
#include "proc.hpp"

namespace {

namespace fs = std::filesystem;
using conveyor::testing::Stack;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Settings {
  std::string workload = "all";
  int jobs = 1000;
  double rate = 100;
  std::string duration = "20s";
  double duration_s = 20;
  int workers = 2;
  int submitters = 4;
  int batch = 1;
  int concurrency = 0;  // 0: system_parameters.worker_concurrency's default
  int waiting = 0;      // jobs that wait, through every phase, on a job that never ends
  std::string type = "sleep";
  bool fast_db = false;
  bool json = false;
  std::string bin_dir;
  std::string migrations_dir;
  std::string job_types;
  double timeout_s = 600;
  bool profile_sql = false;
  int sink_delay_ms = 0;  // how long the webhook receiver takes to answer
  std::string files_dir;  // where the job folders go; empty: next to PostgreSQL's
};

// "20s", "500ms", "2m" or a bare number of seconds.
double parse_duration(const std::string& text) {
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    throw CLI::ValidationError("--duration", "expected a duration such as 20s, 500ms or 2m, got '" + text + "'");
  }
  const std::string unit = text.substr(used);
  if (v < 0) throw CLI::ValidationError("--duration", "must not be negative: '" + text + "'");
  if (unit.empty() || unit == "s") return v;
  if (unit == "ms") return v / 1000;
  if (unit == "m") return v * 60;
  throw CLI::ValidationError("--duration", "unknown unit '" + unit + "' in '" + text + "' (use ms, s or m)");
}

// The options of what the report holds and of what runs: the report's
// form, the SQL profile, the executables, migrations and job types, and the
// wait for a phase.
void add_report_and_source_options(CLI::App& app, Settings& s) {
  app.add_flag("--json", s.json, "print the report as JSON instead of tables");
  app.add_flag("--profile-sql", s.profile_sql,
               "per phase: statements and trigger functions by time per job (pg_stat_statements), commits and WAL "
               "per job");
  app.add_option("--bin-dir", s.bin_dir, "run the conveyor-* executables (and devbroker) of this directory")
      ->check(CLI::ExistingDirectory);
  app.add_option("--migrations-dir", s.migrations_dir,
                 "migrations to apply (default: this build's, or BIN_DIR/../deploy/migrations with --bin-dir)")
      ->check(CLI::ExistingDirectory);
  app.add_option("--job-types", s.job_types, "job types file (default: MIGRATIONS_DIR/../config/job-types.json)")
      ->check(CLI::ExistingFile);
  app.add_option("--timeout", s.timeout_s, "seconds to wait for a phase's jobs to finish")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
}

// Parses argv into `s`; returns an exit code when the program should stop
// here (0 after --help, 2 for a bad command line).
std::optional<int> parse_args(int argc, char** argv, Settings& s) {
  CLI::App app{
      "conveyor-bench: throughput, latency at a fixed rate, CPU per job and peak memory of the job path, "
      "on a stack of its own (private PostgreSQL, devbroker, services, workers)."};
  app.add_option("--workload", s.workload, "process, resident, chain or all")
      ->check(CLI::IsMember({"process", "resident", "chain", "all"}))
      ->capture_default_str();
  app.add_option("--jobs", s.jobs, "throughput phase: jobs submitted at once (0: skip the phase)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--rate", s.rate, "latency phase: jobs per second, submitted on schedule (open loop)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--duration", s.duration, "latency phase length: 20s, 500ms, 2m (0: skip the phase)")
      ->capture_default_str();
  app.add_option("--workers", s.workers, "conveyor-worker processes")->check(CLI::Range(1, 64))->capture_default_str();
  app.add_option("--submitters", s.submitters, "submitting threads")->check(CLI::Range(1, 256))->capture_default_str();
  app.add_option("--batch", s.batch,
                 "throughput phase: jobs per request (POST /v1/jobs/batch when more than 1; whole chains)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--concurrency", s.concurrency,
                 "jobs each worker runs at once (system_parameters.worker_concurrency; 0: its default, 4)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  app.add_option("--waiting", s.waiting,
                 "jobs configured before the first phase that wait, through every phase, on a job that never ends "
                 "(a DAG's backlog; sleep jobs)")
      ->check(CLI::Range(0, 1000000))
      ->capture_default_str();
  app.add_option("--type", s.type, "job type of the process workload")->capture_default_str();
  app.add_flag("--fast-db", s.fast_db, "PostgreSQL with fsync and synchronous_commit off (not durable)");
  app.add_option("--files-dir", s.files_dir,
                 "put the job folders (the services' and workers' CONVEYOR_DATA_DIR) in a new folder under DIR, "
                 "e.g. on the volume the workers would use; PostgreSQL stays where it is")
      ->check(CLI::ExistingDirectory);
  app.add_option("--sink-delay", s.sink_delay_ms,
                 "ms the webhook receiver (every job's sink) takes to answer, as a remote sink would")
      ->check(CLI::Range(0, 10000))
      ->capture_default_str();
  add_report_and_source_options(app, s);
  app.set_version_flag("--version", std::string("conveyor-bench ") + CONVEYOR_VERSION, "print the version and exit");
  try {
    app.parse(argc, argv);
    s.duration_s = parse_duration(s.duration);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return 0;
  } catch (const CLI::CallForVersion& e) {
    std::cout << e.what() << "\n";
    return 0;
  } catch (const CLI::ParseError& e) {
    std::cerr << "conveyor-bench: " << e.what() << "\nrun conveyor-bench --help for the options\n";
    return 2;
  }
  return std::nullopt;
}

// What one unit of a workload submits: one job, or a chain where each job
// depends on the one before.
struct Workload {
  std::string name;
  std::vector<std::string> types;
  Json params;  // the params of every job; "{n}" in a string value becomes the unit's number
};

// The job ids of one unit: its first job and its last.
struct Unit {
  std::int64_t first = 0;
  std::int64_t last = 0;
};

Json unit_params(const Json& params, int n) {
  Json out = params;
  for (auto& [k, v] : out.items()) {
    if (v.is_string() && v.get<std::string>() == "{n}") v = "B" + std::to_string(n);
  }
  return out;
}

// Each submitter keeps its connection (a client that opened one per request
// measured creation's TCP accept and the handshake, not its API).
Unit submit_unit(const Stack& stack, const Workload& w, int n, conveyor::http::KeepAliveClient& client) {
  Unit u;
  for (const auto& type : w.types) {
    Json body{{"job_type", type}, {"params", unit_params(w.params, n)}};
    if (u.last != 0) body["depends_on"] = {u.last};
    auto r = client.request("POST", stack.api_url() + "/v1/jobs", body.dump(), stack.api_headers(true),
                            std::chrono::seconds(30));
    if (r.status != 201) {
      throw std::runtime_error("submitting a " + type + " job failed: HTTP " + std::to_string(r.status) + " " + r.body);
    }
    u.last = Json::parse(r.body).at("id").get<std::int64_t>();
    if (u.first == 0) u.first = u.last;
  }
  return u;
}

// Units [first, first + count) in one POST /v1/jobs/batch, into `units`;
// a chain's jobs each after the one before (its `after`).
void submit_batch(const Stack& stack, const Workload& w, int first, int count, conveyor::http::KeepAliveClient& client,
                  std::vector<Unit>& units) {
  Json jobs = Json::array();
  for (int n = first; n < first + count; ++n) {
    for (std::size_t t = 0; t < w.types.size(); ++t) {
      Json job{{"job_type", w.types[t]}, {"params", unit_params(w.params, n)}};
      if (t > 0) job["after"] = {jobs.size() - 1};
      jobs.push_back(std::move(job));
    }
  }
  auto r = client.request("POST", stack.api_url() + "/v1/jobs/batch", Json{{"jobs", jobs}}.dump(),
                          stack.api_headers(true), std::chrono::seconds(60));
  if (r.status != 201) {
    throw std::runtime_error("submitting a batch of " + std::to_string(jobs.size()) + " failed: HTTP " +
                             std::to_string(r.status) + " " + r.body.substr(0, 500));
  }
  const Json items = Json::parse(r.body).at("items");
  const std::size_t per_unit = w.types.size();
  for (int i = 0; i < count; ++i) {
    const auto at = static_cast<std::size_t>(i) * per_unit;
    units[static_cast<std::size_t>(first + i)] = {items.at(at).at("job").at("id").get<std::int64_t>(),
                                                  items.at(at + per_unit - 1).at("job").at("id").get<std::int64_t>()};
  }
}

// Submits `count` units from `threads` threads: all at once when `rate` is
// 0 (in requests of `batch` jobs, whole units, when more than 1),
// else unit i at start + i / rate (open loop: a late unit does not delay the
// schedule of the next). Returns the units and the submission time.
std::pair<std::vector<Unit>, double> submit_units(const Stack& stack, const Workload& w, int count, double rate,
                                                  int threads, int batch) {
  const int per_unit = static_cast<int>(w.types.size());
  const int step = rate == 0 && batch > 1 ? std::max(1, batch / per_unit) : 1;
  std::vector<Unit> units(static_cast<std::size_t>(count));
  std::atomic<int> next{0};
  std::mutex error_mutex;
  std::string error;
  const auto start = Clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      conveyor::http::KeepAliveClient client;
      for (int i = next.fetch_add(step); i < count; i = next.fetch_add(step)) {
        if (rate > 0) {
          // Pacing the schedule (not waiting for a condition): the open loop.
          std::this_thread::sleep_until(
              start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(i / rate)));
        }
        try {
          if (rate == 0 && batch > 1) submit_batch(stack, w, i, std::min(step, count - i), client, units);
          else units[static_cast<std::size_t>(i)] = submit_unit(stack, w, i, client);
        } catch (const std::exception& e) {
          std::lock_guard lock(error_mutex);
          error = e.what();
          next = count;
        }
      }
    });
  }
  for (auto& t : pool) t.join();
  if (!error.empty()) throw std::runtime_error(error);
  return {units, std::chrono::duration<double>(Clock::now() - start).count()};
}

// ---------------------------------------------------------------- database

// The bench's own statements while a phase runs (its poll) carry this
// comment after their first word (pg_stat_statements drops a leading one):
// --profile-sql leaves them out.
#define CONVEYOR_BENCH_TAG "/* conveyor-bench */"

// The jobs $1..$2 finished and done, and `open`, the first id not finished:
// the ids below it (and their counts) are not read again. Jobs finish about
// in id order, so a poll reads about the jobs in flight, not the whole
// phase (it read every job of the phase, 6,000 in a burst, at each poll: a
// cost the profile counted as PostgreSQL's).
constexpr conveyor::db::Statement kFinishedCount{
    "bench_finished",
    "WITH " CONVEYOR_BENCH_TAG
    " r AS (SELECT id, status IN ('done', 'failed', 'canceled', 'internal_error') AS fin, status = 'done' AS ok "
    "       FROM conveyor.job WHERE id BETWEEN $1 AND $2), "
    "o AS (SELECT coalesce(min(id) FILTER (WHERE NOT fin), $2::bigint + 1) AS open FROM r) "
    "SELECT o.open, count(r.id) FILTER (WHERE r.fin), count(r.id) FILTER (WHERE r.ok), "
    "       count(r.id) FILTER (WHERE r.fin AND r.id < o.open), count(r.id) FILTER (WHERE r.ok AND r.id < o.open) "
    "FROM o LEFT JOIN r ON true GROUP BY o.open"};

// Per unit: first job's created_at -> last job's done, PostgreSQL's clock.
constexpr conveyor::db::Statement kUnitTimes{
    "bench_unit_times",
    "SELECT count(d.at), extract(epoch FROM max(d.at) - min(f.created_at)), "
    "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM d.at - f.created_at) * 1000), "
    "percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM d.at - f.created_at) * 1000), "
    "percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM d.at - f.created_at) * 1000), "
    "max(extract(epoch FROM d.at - f.created_at) * 1000) "
    "FROM unnest($1::bigint[], $2::bigint[]) AS u(first_id, last_id) "
    "JOIN conveyor.job f ON f.id = u.first_id "
    "LEFT JOIN conveyor.job_status_change d ON d.job_id = u.last_id AND d.to_status = 'done'"};

// Where the latency goes: per status of the hot path, the time from the
// job's previous status change to this one (each change's `at` is when the
// status trigger wrote it, clock_timestamp()), over the phase's jobs $1..$2.
constexpr conveyor::db::Statement kHops{
    "bench_hops",
    "SELECT h.to_status, count(*), "
    "percentile_cont(0.5) WITHIN GROUP (ORDER BY h.ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY h.ms) "
    "FROM (SELECT c.to_status, extract(epoch FROM c.at - lag(c.at) OVER (PARTITION BY c.job_id ORDER BY c.id)) * 1000 "
    "      AS ms FROM conveyor.job_status_change c WHERE c.job_id BETWEEN $1 AND $2) h "
    "JOIN conveyor.job_status s ON s.name = h.to_status "
    "WHERE h.ms IS NOT NULL GROUP BY h.to_status, s.position ORDER BY s.position"};

// The jobs first..last that finished, counted poll after poll.
struct Finished {
  explicit Finished(std::int64_t first) : open(first) {}
  std::int64_t finished = 0;  // done, failed, canceled or internal_error
  std::int64_t done = 0;
  std::int64_t open;                // the first id not finished at the last poll
  std::int64_t finished_below = 0;  // the ids below `open`: all finished
  std::int64_t done_below = 0;
};

// One statement, run alone: no BEGIN and COMMIT of the bench's in the profile.
void poll_finished(conveyor::db::Session& db, std::int64_t last, Finished& f) {
  const auto r = db.exec_alone(kFinishedCount, {f.open, last});
  f.finished = f.finished_below + r[0][1].as_int();
  f.done = f.done_below + r[0][2].as_int();
  f.finished_below += r[0][3].as_int();
  f.done_below += r[0][4].as_int();
  f.open = r[0][0].as_int();
}

// Polls until `jobs` of the ids up to `last` finished, or `timeout` passed.
// A poll reads the ids from the first one not finished to `last`: in a
// chain burst most of the phase (the downstream jobs wait while the first
// ones run). With a poll every 100 ms, a 30,000-job chain burst spent 0.57
// ms of PostgreSQL statement time per job on them, about 1 us per id read.
// So the pause grows with the ids the next poll reads, 50 us an id (1 s for
// 20,000; 10 ms at the least): the polls then take about 2% of one core.
// The phase's times come from PostgreSQL's history, not from when a poll
// saw the end; its CPU window grows by the last pause at most.
bool wait_finished(conveyor::db::Session& db, std::int64_t last, std::int64_t jobs, Finished& f,
                   std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    poll_finished(db, last, f);
    if (f.finished >= jobs) return true;
    const auto now = Clock::now();
    if (now >= deadline) return false;
    const auto ids = std::max<std::int64_t>(0, last - f.open + 1);
    const auto pause =
        std::clamp(std::chrono::milliseconds(ids / 20), std::chrono::milliseconds(10), std::chrono::milliseconds(1000));
    std::this_thread::sleep_for(std::min<Clock::duration>(pause, deadline - now));
  }
}

// The result of one phase of one workload.
struct Phase {
  std::string name;  // throughput, latency
  int units = 0;
  std::int64_t jobs = 0;
  std::int64_t done = 0;
  double submit_s = 0;
  double span_s = 0;  // first created_at -> last done
  double p50 = 0, p95 = 0, p99 = 0, max = 0;
  bool timed_out = false;
  std::map<std::string, double> cpu_ms;  // CPU of each process over the phase
  Json sql;                              // --profile-sql: where PostgreSQL's time went
  Json hops = Json::array();             // per status: latency from the previous change
};

void read_hops(conveyor::db::Session& db, std::int64_t first, std::int64_t last, Phase& p) {
  db.transact([&](conveyor::db::Tx& tx) {
    for (const auto r : tx.exec(kHops, {first, last})) {
      Json hop = Json::object();
      hop["status"] = r[0].as_string();
      hop["changes"] = r[1].as_int();
      hop["p50_ms"] = r[2].as_double();
      hop["p99_ms"] = r[3].as_double();
      p.hops.push_back(std::move(hop));
    }
  });
}

void read_unit_times(conveyor::db::Session& db, const std::vector<Unit>& units, Phase& p) {
  std::vector<std::int64_t> firsts, lasts;
  for (const auto& u : units) {
    firsts.push_back(u.first);
    lasts.push_back(u.last);
  }
  db.transact([&](conveyor::db::Tx& tx) {
    auto r = tx.exec(kUnitTimes, {firsts, lasts});
    auto num = [&](int c) { return r[0][c].is_null() ? 0.0 : r[0][c].as_double(); };
    p.span_s = num(1);
    p.p50 = num(2);
    p.p95 = num(3);
    p.p99 = num(4);
    p.max = num(5);
  });
}

// ---------------------------------------------------------------- CPU

// The processes measured, by report name, and their CPU at one moment.
struct CpuReading {
  std::map<std::string, double> ms;
};

int postmaster_pid(Stack& stack) {
  std::ifstream in(stack.postgres().dir() / "data" / "postmaster.pid");
  int pid = 0;
  in >> pid;
  return pid;
}

CpuReading read_cpu(Stack& stack) {
  conveyor::bench::ProcSnapshot snap;
  CpuReading r;
  double children = 0;
  for (const auto& name : stack.names()) {
    const int pid = stack.process(name).pid();
    r.ms[name] = snap.own_ms(pid);
    children += snap.tree_ms(pid) - snap.own_ms(pid);
  }
  r.ms["devbroker"] = snap.tree_ms(stack.broker().pid());
  r.ms["postgres"] = snap.tree_ms(postmaster_pid(stack));
  r.ms["job processes"] = children;
  r.ms["bench"] = snap.own_ms(static_cast<int>(::getpid()));
  return r;
}

std::map<std::string, double> cpu_between(const CpuReading& before, const CpuReading& after) {
  std::map<std::string, double> out;
  for (const auto& [name, ms] : after.ms) {
    auto it = before.ms.find(name);
    out[name] = ms - (it == before.ms.end() ? 0 : it->second);
  }
  return out;
}

// ---------------------------------------------------------------- SQL profile

// --profile-sql: the private cluster loads pg_stat_statements and tracks
// PL/pgSQL functions (trigger functions included); each phase starts from
// reset counters and reports per job.
constexpr const char* kProfilePgOptions =
    "-c shared_preload_libraries=pg_stat_statements -c track_functions=pl -c pg_stat_statements.track=all";
constexpr conveyor::db::Statement kProfileReset{
    "bench_profile_reset",
    "SELECT pg_stat_statements_reset(), pg_stat_reset(), pg_stat_reset_shared('wal'), pg_stat_clear_snapshot()"};
// Commits, WAL, and the top-level statements (each a round trip) and their
// time, the bench's own polls left out.
#define CONVEYOR_NOT_BENCH "query NOT LIKE '%" CONVEYOR_BENCH_TAG "%'"
constexpr conveyor::db::Statement kProfileTotals{
    "bench_profile_totals",
    "SELECT ((SELECT sum(xact_commit) FROM pg_stat_database)"
    "  - (SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE NOT (" CONVEYOR_NOT_BENCH
    ")))::float8, "
    "(SELECT wal_bytes FROM pg_stat_wal)::float8, (SELECT wal_records FROM pg_stat_wal)::float8, "
    "(SELECT sum(total_exec_time) FROM pg_stat_statements WHERE toplevel AND " CONVEYOR_NOT_BENCH
    ")::float8, "
    "(SELECT sum(calls) FROM pg_stat_statements WHERE toplevel AND " CONVEYOR_NOT_BENCH ")::float8"};
#undef CONVEYOR_NOT_BENCH
constexpr conveyor::db::Statement kProfileStatements{
    "bench_profile_statements",
    "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 110), sum(calls)::float8, sum(total_exec_time)::float8, "
    "bool_or(toplevel), sum(shared_blks_hit + shared_blks_read)::float8 "
    "FROM pg_stat_statements GROUP BY 1, queryid ORDER BY 3 DESC LIMIT 15"};
constexpr conveyor::db::Statement kProfileFunctions{
    "bench_profile_functions",
    "SELECT schemaname || '.' || funcname, calls::float8, total_time::float8, self_time::float8 "
    "FROM pg_stat_user_functions ORDER BY total_time DESC LIMIT 10"};

void profile_reset(conveyor::db::Session& db) {
  db.transact([](conveyor::db::Tx& tx) { tx.exec(kProfileReset); });
}

// Per job: commits, WAL, top-level statements and their time; the statements and
// functions that took the most, in ms per job.
Json profile_read(conveyor::db::Session& db, std::int64_t jobs) {
  const double n = jobs > 0 ? static_cast<double>(jobs) : 1.0;
  return db.transact([&](conveyor::db::Tx& tx) {
    Json out;
    const auto t = tx.exec(kProfileTotals);
    auto num = [](const conveyor::db::Row& r, int c) { return r[c].is_null() ? 0.0 : r[c].as_double(); };
    out["commits_per_job"] = num(t[0], 0) / n;
    out["wal_kb_per_job"] = num(t[0], 1) / 1024 / n;
    out["wal_records_per_job"] = num(t[0], 2) / n;
    out["statement_ms_per_job"] = num(t[0], 3) / n;
    // Each a round trip (BEGIN and COMMIT included): a count, not a time,
    // so it does not move with the machine's load.
    out["statements_per_job"] = num(t[0], 4) / n;
    out["statements"] = Json::array();
    for (const auto r : tx.exec(kProfileStatements)) {
      out["statements"].push_back({{"query", r[0].as_string()},
                                   {"calls_per_job", num(r, 1) / n},
                                   {"ms_per_job", num(r, 2) / n},
                                   {"toplevel", r[3].as_bool()},
                                   {"buffers_per_job", num(r, 4) / n}});
    }
    out["functions"] = Json::array();
    for (const auto r : tx.exec(kProfileFunctions)) {
      out["functions"].push_back({{"function", r[0].as_string()},
                                  {"calls_per_job", num(r, 1) / n},
                                  {"total_ms_per_job", num(r, 2) / n},
                                  {"self_ms_per_job", num(r, 3) / n}});
    }
    return out;
  });
}

// ---------------------------------------------------------------- phases

Phase run_phase(Stack& stack, conveyor::db::Session& db, const Workload& w, const std::string& name, int units,
                double rate, const Settings& s) {
  Phase p;
  p.name = name;
  p.units = units;
  if (s.profile_sql) profile_reset(db);
  const auto before = read_cpu(stack);
  auto [submitted, submit_s] = submit_units(stack, w, units, rate, s.submitters, s.batch);
  p.submit_s = submit_s;
  std::int64_t first = submitted.front().first, last = submitted.front().last;
  for (const auto& u : submitted) {
    first = std::min(first, u.first);
    last = std::max(last, u.last);
  }
  p.jobs = static_cast<std::int64_t>(submitted.size() * w.types.size());
  Finished f(first);
  const bool all =
      wait_finished(db, last, p.jobs, f, std::chrono::milliseconds(static_cast<std::int64_t>(s.timeout_s * 1000)));
  p.cpu_ms = cpu_between(before, read_cpu(stack));
  if (s.profile_sql) p.sql = profile_read(db, p.jobs);
  p.timed_out = !all;
  p.done = f.done;
  read_unit_times(db, submitted, p);
  read_hops(db, first, last, p);
  return p;
}

Json phase_json(const Phase& p) {
  Json cpu = Json::object();
  for (const auto& [name, ms] : p.cpu_ms) cpu[name] = p.jobs > 0 ? ms / static_cast<double>(p.jobs) : 0.0;
  return {{"units", p.units},
          {"jobs", p.jobs},
          {"done", p.done},
          {"timed_out", p.timed_out},
          {"submit_s", p.submit_s},
          {"span_s", p.span_s},
          {"jobs_per_s", p.span_s > 0 ? static_cast<double>(p.done) / p.span_s : 0.0},
          {"latency_ms", {{"p50", p.p50}, {"p95", p.p95}, {"p99", p.p99}, {"max", p.max}}},
          {"cpu_ms_per_job", cpu},
          {"hops", p.hops},
          {"sql", p.sql}};
}

// Runs one workload: a warm-up unit, the throughput phase, the latency phase.
Json run_workload(Stack& stack, conveyor::db::Session& db, const Workload& w, const Settings& s) {
  Json out{{"workload", w.name}, {"job_types", w.types}, {"params", w.params}};
  conveyor::http::KeepAliveClient warm_client;
  const auto warm = submit_unit(stack, w, -1, warm_client);  // warm-up: consumer groups joined, programs started
  Finished warmed_up(warm.first);
  const bool warmed =
      wait_finished(db, warm.last, static_cast<std::int64_t>(w.types.size()), warmed_up, std::chrono::seconds(120));
  if (!warmed)
    throw std::runtime_error("the " + w.name + " warm-up did not finish within 120 s:\n" + stack.logs_tail());
  const double per_unit = static_cast<double>(w.types.size());
  if (s.jobs > 0) {
    const int units = std::max(1, static_cast<int>(std::lround(s.jobs / per_unit)));
    out["throughput"] = phase_json(run_phase(stack, db, w, "throughput", units, 0, s));
  }
  if (s.duration_s > 0) {
    const double unit_rate = s.rate / per_unit;
    const int units = std::max(1, static_cast<int>(std::lround(unit_rate * s.duration_s)));
    auto latency = phase_json(run_phase(stack, db, w, "latency", units, unit_rate, s));
    latency["rate_jobs_per_s"] = s.rate;
    latency["duration_s"] = s.duration_s;
    out["latency"] = latency;
  }
  Json rss = Json::object();
  for (const auto& name : stack.names()) rss[name] = conveyor::bench::peak_rss_mib(stack.process(name).pid());
  rss["devbroker"] = conveyor::bench::peak_rss_mib(stack.broker().pid());
  out["peak_rss_mib"] = rss;
  return out;
}

// ---------------------------------------------------------------- workloads

Json read_json(const fs::path& file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error("cannot read " + file.string());
  return Json::parse(in);
}

const Json* find_type(const Json& types, const std::string& name) {
  const auto list = types.find("job_types");
  if (list == types.end()) return nullptr;
  for (const auto& t : *list) {
    const auto n = t.find("name");
    if (n != t.end() && n->is_string() && n->get_ref<const std::string&>() == name) return &t;
  }
  return nullptr;
}

// The workloads asked for that the job types file can run; says on stderr
// why any other is skipped, and records it in `skipped`.
std::vector<Workload> pick_workloads(const Settings& s, const Json& types, Json& skipped) {
  std::vector<Workload> out;
  auto want = [&](const std::string& w) { return s.workload == "all" || s.workload == w; };
  auto skip = [&](const std::string& w, const std::string& why) {
    std::cerr << "conveyor-bench: " << w << " workload skipped: " << why << "\n";
    skipped.push_back({{"workload", w}, {"reason", why}});
  };
  if (want("process")) {
    if (find_type(types, s.type)) out.push_back({"process", {s.type}, {{"seconds", 0}}});
    else skip("process", "no " + s.type + " job type");
  }
  if (want("resident")) {
    if (const Json* t = find_type(types, "sleep-resident")) {
      // A no-op job: noop when the type takes it (the program answers done
      // and writes nothing), and seconds 0 when it takes seconds.
      const Json properties = t->value("params_schema", Json::object()).value("properties", Json::object());
      Json params = Json::object();
      if (properties.contains("seconds")) params["seconds"] = 0;
      if (properties.contains("noop")) params["noop"] = true;
      out.push_back({"resident", {"sleep-resident"}, params});
    } else {
      skip("resident", "no sleep-resident job type");
    }
  }
  if (want("chain")) {
    const std::vector<std::string> chain = {"fsc-rlie", "sws-wds", "gfsc"};
    bool all = true;
    for (const auto& t : chain) all = all && find_type(types, t) != nullptr;
    if (all) out.push_back({"chain", chain, {{"tile", "{n}"}, {"date", "2026-01-01"}}});
    else skip("chain", "the job types file lacks one of fsc-rlie, sws-wds, gfsc");
  }
  return out;
}

// ---------------------------------------------------------------- report

void print_phase_line(const Json& p, const std::string& what) {
  std::printf(
      "  %-10s %5lld jobs, %5lld done%s: %7.1f jobs/s over %6.2f s (submission %.2f s); "
      "latency p50 %.1f ms, p95 %.1f ms, p99 %.1f ms, max %.1f ms\n",
      what.c_str(), p["jobs"].get<long long>(), p["done"].get<long long>(),
      p["timed_out"].get<bool>() ? " [TIMED OUT]" : "", p["jobs_per_s"].get<double>(), p["span_s"].get<double>(),
      p["submit_s"].get<double>(), p["latency_ms"]["p50"].get<double>(), p["latency_ms"]["p95"].get<double>(),
      p["latency_ms"]["p99"].get<double>(), p["latency_ms"]["max"].get<double>());
  if (!p.contains("hops") || p["hops"].empty()) return;
  std::printf("  %-10s", "  by hop");
  for (const auto& h : p["hops"]) {
    std::printf(" %s %.1f/%.0f", h["status"].get<std::string>().c_str(), h["p50_ms"].get<double>(),
                h["p99_ms"].get<double>());
  }
  std::printf(" (ms from the previous status, p50/p99)\n");
}

// One line per process: CPU ms per job in each phase, peak memory.
void print_cpu_table(const Json& w) {
  const Json none = Json::object();
  const Json& t = w.contains("throughput") ? w["throughput"]["cpu_ms_per_job"] : none;
  const Json& l = w.contains("latency") ? w["latency"]["cpu_ms_per_job"] : none;
  const Json& names = t.empty() ? l : t;
  std::printf("  %-22s %18s %18s %14s\n", "process", "CPU ms/job (thr.)", "CPU ms/job (lat.)", "peak RSS MiB");
  double total_t = 0, total_l = 0;
  for (const auto& [name, v] : names.items()) {
    const double tv = t.value(name, 0.0), lv = l.value(name, 0.0);
    if (name != "bench" && name != "job processes") {
      total_t += tv;
      total_l += lv;
    }
    char mem[32] = "-";
    if (w["peak_rss_mib"].contains(name)) std::snprintf(mem, sizeof mem, "%.1f", w["peak_rss_mib"][name].get<double>());
    std::printf("  %-22s %18.2f %18.2f %14s\n", name.c_str(), tv, lv, mem);
  }
  std::printf("  %-22s %18.2f %18.2f\n", "total (no jobs, bench)", total_t, total_l);
}

void print_sql_profile(const Json& p, const std::string& what) {
  if (!p.contains("sql") || p["sql"].is_null()) return;
  const Json& q = p["sql"];
  std::printf(
      "  SQL (%s): %.1f commits, %.1f WAL records, %.1f KB WAL, %.1f top-level statements taking %.2f ms per job\n",
      what.c_str(), q["commits_per_job"].get<double>(), q["wal_records_per_job"].get<double>(),
      q["wal_kb_per_job"].get<double>(), q["statements_per_job"].get<double>(),
      q["statement_ms_per_job"].get<double>());
  std::printf("    %9s %8s %9s  %s\n", "ms/job", "calls/job", "buf/job",
              "statement (nested: inside a trigger or function)");
  for (const auto& st : q["statements"]) {
    std::printf("    %9.3f %8.2f %9.1f  %s%s\n", st["ms_per_job"].get<double>(), st["calls_per_job"].get<double>(),
                st["buffers_per_job"].get<double>(), st["toplevel"].get<bool>() ? "" : "(nested) ",
                st["query"].get<std::string>().c_str());
  }
  std::printf("    %9s %8s %9s  %s\n", "ms/job", "calls/job", "self ms", "function");
  for (const auto& f : q["functions"]) {
    std::printf("    %9.3f %8.2f %9.3f  %s\n", f["total_ms_per_job"].get<double>(), f["calls_per_job"].get<double>(),
                f["self_ms_per_job"].get<double>(), f["function"].get<std::string>().c_str());
  }
}

void print_report(const Json& report) {
  const auto& st = report["settings"];
  std::printf(
      "conveyor-bench: %d cores, load %s; PostgreSQL %s; %d workers (concurrency %s); %d submitters, %d jobs "
      "per request; sink answers in %d ms; executables %s\n",
      report["machine"]["nproc"].get<int>(), report["machine"]["loadavg_at_start"].get<std::string>().c_str(),
      st["durable_postgres"].get<bool>() ? "durable (fsync on, synchronous_commit on)"
                                         : "--fast-db (fsync off, synchronous_commit off)",
      st["workers"].get<int>(),
      st["concurrency"].get<int>() > 0 ? std::to_string(st["concurrency"].get<int>()).c_str() : "default",
      st["submitters"].get<int>(), st["batch"].get<int>(), st["sink_delay_ms"].get<int>(),
      st["bin_dir"].get<std::string>().c_str());
  std::printf(
      "job folders under %s, on %s\n",
      st["files_dir"].get<std::string>().empty() ? "the stack's folder" : st["files_dir"].get<std::string>().c_str(),
      report["machine"]["files_volume"].get<std::string>().c_str());
  if (report["machine"]["files_volume"].get<std::string>().find("no journal") != std::string::npos) {
    // fs/ext4/ialloc.c, recently_deleted(): without a journal a new inode
    // skips, one look-up each, every free inode deleted in the last 60 s
    // (6 min while its inode-table block is still dirty).
    std::printf(
        "  (ext4 without a journal does not reuse an inode for minutes after its deletion, and pays to skip each: "
        "a run begun within about 6 min of a large clean-up, such as the last run's, is slower; a journaled "
        "--files-dir is not)\n");
  }
  if (st["waiting"].get<int>() > 0) {
    std::printf("%d jobs waiting, through every phase, on a job that never ends\n", st["waiting"].get<int>());
  }
  for (const auto& w : report["workloads"]) {
    std::printf("\nworkload %s (%s, params %s)\n", w["workload"].get<std::string>().c_str(),
                w["job_types"].dump().c_str(), w["params"].dump().c_str());
    if (w.contains("throughput")) print_phase_line(w["throughput"], "throughput");
    if (w.contains("latency")) {
      print_phase_line(w["latency"],
                       "at " + std::to_string(std::lround(w["latency"]["rate_jobs_per_s"].get<double>())) + "/s");
    }
    print_cpu_table(w);
    if (w.contains("throughput")) print_sql_profile(w["throughput"], "throughput");
    if (w.contains("latency")) print_sql_profile(w["latency"], "latency");
  }
  for (const auto& s : report["skipped"]) {
    std::printf("\n%s workload skipped: %s\n", s["workload"].get<std::string>().c_str(),
                s["reason"].get<std::string>().c_str());
  }
}

std::string loadavg() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

// ---------------------------------------------------------------- main

// Fills in the defaults that depend on other options: the migrations and
// job types of --bin-dir's build.
void resolve_paths(Settings& s) {
  if (s.migrations_dir.empty() && !s.bin_dir.empty()) {
    const fs::path beside = fs::path(s.bin_dir) / ".." / "deploy" / "migrations";
    if (fs::is_directory(beside)) s.migrations_dir = fs::canonical(beside).string();
  }
  // Stack and TestDatabase read the migrations from CONVEYOR_MIGRATIONS_DIR.
  if (!s.migrations_dir.empty()) ::setenv("CONVEYOR_MIGRATIONS_DIR", s.migrations_dir.c_str(), 1);
  if (s.migrations_dir.empty()) s.migrations_dir = conveyor::testing::migrations_dir().string();
  if (s.job_types.empty())
    s.job_types = (fs::path(s.migrations_dir).parent_path() / "config" / "job-types.json").string();
}

Json settings_json(const Settings& s) {
  return {{"workload", s.workload},
          {"jobs", s.jobs},
          {"rate", s.rate},
          {"duration_s", s.duration_s},
          {"workers", s.workers},
          {"submitters", s.submitters},
          {"batch", s.batch},
          {"concurrency", s.concurrency},
          {"waiting", s.waiting},
          {"durable_postgres", !s.fast_db},
          {"profile_sql", s.profile_sql},
          {"sink_delay_ms", s.sink_delay_ms},
          {"files_dir", s.files_dir},
          {"bin_dir", s.bin_dir.empty() ? "this build" : s.bin_dir},
          {"migrations_dir", s.migrations_dir},
          {"job_types", s.job_types}};
}

// `n` sleep jobs that depend on one that never ends: it is ready, due in
// ten years (not_before), so admission never takes it. Submitted before the
// services start; configuration configures them at its first passes.
std::string waiting_jobs_sql(int n) {
  return "INSERT INTO conveyor.job (job_type, params, not_before) "
         "VALUES ('sleep', '{\"seconds\": 0}', now() + interval '10 years'); "
         "INSERT INTO conveyor.job (job_type, params, depends_on) "
         "SELECT 'sleep', '{\"seconds\": 0}', ARRAY[(SELECT max(id) FROM conveyor.job)] "
         "FROM generate_series(1, " +
         std::to_string(n) + ")";
}

// Waits until `n` jobs are configured (the --waiting ones), at most `timeout`.
bool all_configured(conveyor::db::Session& db, int n, std::chrono::duration<double> timeout) {
  static constexpr conveyor::db::Statement kConfigured{
      "bench_configured", CONVEYOR_BENCH_TAG " SELECT count(*) FROM conveyor.job WHERE status = 'configured'"};
  const auto deadline = Clock::now() + timeout;
  while (db.transact([](conveyor::db::Tx& tx) { return tx.exec(kConfigured)[0][0].as_int(); }) < n) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // a poll of progress, not a synchronisation
  }
  return true;
}

// --files-dir: a folder of this run's own under the given one, removed at
// the end (the job folders of every process of the stack).
struct FilesDir {
  fs::path path;
  explicit FilesDir(const std::string& parent) {
    if (parent.empty()) return;
    std::string tmpl = (fs::path(parent) / "conveyor-bench-files-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      throw std::runtime_error("--files-dir: cannot make a folder in " + parent + ": " + std::strerror(errno));
    }
    path = tmpl;
  }
  ~FilesDir() {
    std::error_code ec;
    if (!path.empty()) fs::remove_all(path, ec);
  }
  FilesDir(const FilesDir&) = delete;
  FilesDir& operator=(const FilesDir&) = delete;
};

int run(Settings& s) {
  resolve_paths(s);
  Json report{
      {"settings", settings_json(s)},
      {"machine", {{"nproc", static_cast<int>(std::thread::hardware_concurrency())}, {"loadavg_at_start", loadavg()}}},
      {"workloads", Json::array()},
      {"skipped", Json::array()}};
  const auto workloads = pick_workloads(s, read_json(s.job_types), report["skipped"]);
  // A webhook receiver in this process, as the endpoint of every webhook sink.
  conveyor::http::Server hook("127.0.0.1", 0);
  // One thread per connection: deliveries on several connections overlap.
  const auto delay = std::chrono::milliseconds(s.sink_delay_ms);
  hook.route("POST", "/hook", [delay](const conveyor::http::Request&) {
    if (delay.count() > 0) std::this_thread::sleep_for(delay);
    return conveyor::http::Response::json(Json::object());
  });
  hook.start();
  Stack::Options o;
  o.workers = s.workers;
  o.private_postgres = true;
  o.postgres_durability = s.fast_db ? Stack::Options::Durability::none : Stack::Options::Durability::full;
  o.bin_dir = s.bin_dir;
  o.job_types_file = s.job_types;
  o.env["CONVEYOR_LOG_LEVEL"] = "warn";
  o.env["CONVEYOR_SUBMIT_RATE"] = "0";  // the per-token limit (200/s by default) would cap the bench
  const FilesDir files(s.files_dir);
  if (!files.path.empty()) o.env["CONVEYOR_DATA_DIR"] = files.path.string();
  for (const char* k : {"CONTAINERS_CONF", "DOCKER_HOST", "HOME"}) {
    if (const char* v = std::getenv(k)) o.env[k] = v;
  }
  o.setup_sql = "UPDATE conveyor.system_parameters SET publication_endpoint_url = 'http://127.0.0.1:" +
                std::to_string(hook.port()) + "/hook'" +
                (s.concurrency > 0 ? ", worker_concurrency = " + std::to_string(s.concurrency) : std::string());
  if (s.profile_sql) {
    // The private cluster's server options (libs/testing reads them at start).
    std::string pg_options = kProfilePgOptions;
    if (const char* extra = std::getenv("CONVEYOR_TEST_PG_OPTIONS")) pg_options += std::string(" ") + extra;
    ::setenv("CONVEYOR_TEST_PG_OPTIONS", pg_options.c_str(), 1);
    o.setup_sql += "; CREATE EXTENSION IF NOT EXISTS pg_stat_statements";
  }
  if (s.waiting > 0) o.setup_sql += "; " + waiting_jobs_sql(s.waiting);
  Stack stack(o);
  report["machine"]["files_volume"] = conveyor::bench::volume_of(files.path.empty() ? stack.data_dir() : files.path);
  conveyor::db::Session db(stack.db().url(), "conveyor-bench");  // the one connection that polls
  if (s.waiting > 0 && !all_configured(db, s.waiting, std::chrono::duration<double>(s.timeout_s))) {
    std::cerr << "conveyor-bench: the " << s.waiting << " waiting jobs were not all configured in time\n";
    return 1;
  }
  for (const auto& w : workloads) report["workloads"].push_back(run_workload(stack, db, w, s));
  if (s.json) std::cout << report.dump(2) << "\n";
  else print_report(report);
  bool timed_out = false;
  for (const auto& w : report["workloads"]) {
    for (const char* p : {"throughput", "latency"})
      timed_out = timed_out || (w.contains(p) && w[p]["timed_out"].get<bool>());
  }
  return timed_out ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  if (auto rc = parse_args(argc, argv, s)) return *rc;
  try {
    return run(s);
  } catch (const std::exception& e) {
    std::cerr << "conveyor-bench: " << e.what() << "\n";
    return 1;
  }
}
