// Seeded chaos, end to end (issue 9). A steady stream of short jobs runs for
// CONVEYOR_CHAOS_SECONDS (default 150) while a driver, seeded by
// CONVEYOR_CHAOS_SEED (default: from the clock; always printed first),
// injects one fault every 8-15 s:
//   kill    kill -9 of a service (creation, configuration, execution,
//           publication, monitor, workerpool with its workers), of one worker
//           the pool started, or of whichever process leads the outbox relay;
//           the service is started again (a worker is replaced by the pool);
//   postgres  pg_ctl stop -m fast / -m immediate (alternating) while jobs
//           run, down 0.3-1.2 s (no worker's heartbeat goes stale) or 2-6 s,
//           started again on the same port: the stack runs on a PostgreSQL
//           cluster of its own, so the shared test cluster is not touched;
//   broker  the devbroker stopped for 10-30 s, then started on the same port.
// Every kind happens at least once per run whatever the seed (kill twice and
// postgres in both modes); CONVEYOR_CHAOS_FAULTS=kill,postgres,broker picks
// the kinds. After each fault a probe job measures the recovery time.
//
// At the end: every job is terminal within 120 s of the last fault, no
// transition is recorded twice, every history is a valid path, every `done`
// job delivered exactly its event (to a webhook receiver in this process),
// and admission capacity is back to full (nothing queued or started, and a
// batch of max workers x concurrency jobs runs all at once).
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "conveyor/http/client.hpp"
#include "conveyor/http/server.hpp"
#include "conveyor/testing/stack.hpp"
#include "e2e.hpp"

namespace {

using conveyor::e2e::expect_valid_histories;
using conveyor::testing::Stack;
using conveyor::testing::wait_until;
using json = nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr int kMaxWorkers = 3;
constexpr int kConcurrency = 4;
constexpr double kJobsPerSecond = 5;
constexpr auto kTerminalBound = 120s;  // after the last fault
constexpr auto kProbeBound = 45s;      // a fault not recovered from by then is reported as such

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string fixed1(double v) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(1) << v;
  return out.str();
}

// "[chaos] +12.3s what": every line the driver prints, offset from the start of the chaos.
class Log {
 public:
  void start() { t0_ = Clock::now(); }
  void operator()(const std::string& what) const {
    std::lock_guard g(mu_);
    std::cout << "[chaos] +" << fixed1(seconds_since(t0_)) << "s " << what << std::endl;
  }

 private:
  Clock::time_point t0_ = Clock::now();
  mutable std::mutex mu_;
};

// ---------------------------------------------------------------- settings

struct Settings {
  int seconds = 150;
  std::uint64_t seed = 0;
  std::set<std::string> kinds = {"kill", "postgres", "broker"};
  int ctest_seconds = 0;  // what the ctest TIMEOUT was configured for (0: not under ctest)
};

Settings settings_from_env() {
  Settings s;
  if (const char* v = std::getenv("CONVEYOR_CHAOS_SECONDS"); v != nullptr && *v != '\0') {
    s.seconds = std::stoi(v);
    if (s.seconds <= 0) throw std::invalid_argument("CONVEYOR_CHAOS_SECONDS must be positive");
  }
  if (const char* v = std::getenv("CONVEYOR_CHAOS_SEED"); v != nullptr && *v != '\0') {
    s.seed = std::stoull(v);
  } else {
    s.seed = static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()) ^
             (std::uint64_t{std::random_device{}()} << 32);
    s.seed %= 1000000000000ULL;  // short enough to retype
  }
  if (const char* v = std::getenv("CONVEYOR_CHAOS_FAULTS"); v != nullptr && *v != '\0') {
    s.kinds.clear();
    std::stringstream in(v);
    for (std::string k; std::getline(in, k, ',');) {
      if (k != "kill" && k != "postgres" && k != "broker") {
        throw std::invalid_argument("CONVEYOR_CHAOS_FAULTS: unknown fault '" + k + "' (kill, postgres, broker)");
      }
      s.kinds.insert(k);
    }
  }
  if (const char* v = std::getenv("CONVEYOR_CHAOS_CTEST_SECONDS"); v != nullptr && *v != '\0') {
    s.ctest_seconds = std::stoi(v);
  }
  return s;
}

// ---------------------------------------------------------------- webhook receiver

// HH:MM:SS.mmm UTC, to line deliveries up with the services' logs.
std::string utc_now() {
  const auto now = std::chrono::system_clock::now();
  const auto t = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::ostringstream out;
  out << std::put_time(&tm, "%H:%M:%S") << '.' << std::setw(3) << std::setfill('0') << ms;
  return out.str();
}

// The sink every job publishes to: counts deliveries per job id.
class WebhookReceiver {
 public:
  WebhookReceiver() : server_("127.0.0.1", 0) {
    server_.route("POST", "/hook", [this](const conveyor::http::Request& r) {
      std::lock_guard g(mu_);
      try {
        const auto event = json::parse(r.body);
        events_[std::stoll(event.at("subject").get<std::string>())].push_back(event.at("id").get<std::string>() +
                                                                              " at " + utc_now());
      } catch (const std::exception& e) {
        malformed_.push_back(std::string(e.what()) + ": " + r.body.substr(0, 200));
      }
      return conveyor::http::Response::json({{"received", true}});
    });
    server_.start();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_.port()) + "/hook"; }
  std::map<std::int64_t, std::vector<std::string>> events() const {
    std::lock_guard g(mu_);
    return events_;
  }
  std::vector<std::string> malformed() const {
    std::lock_guard g(mu_);
    return malformed_;
  }

 private:
  conveyor::http::Server server_;
  mutable std::mutex mu_;
  std::map<std::int64_t, std::vector<std::string>> events_;  // job id -> "<CloudEvent id> at <time>" received
  std::vector<std::string> malformed_;
};

// `sleep` (0-0.3 s here) with five attempts (each lost worker costs one),
// published to the receiver and to a file catalog.
struct JobTypesFile : conveyor::e2e::SleepTypeFile {
  explicit JobTypesFile(const std::string& webhook_url)
      : SleepTypeFile(60, 5,
                      json::array({json{{"kind", "webhook"}, {"url", webhook_url}}, conveyor::e2e::file_sink()})) {}
};

// ---------------------------------------------------------------- submitting

// The creation service's URL: it changes when creation is started again.
class ApiUrl {
 public:
  ApiUrl(std::string url, std::string token) : url_(std::move(url)), token_(std::move(token)) {}
  std::string get() const {
    std::lock_guard g(mu_);
    return url_;
  }
  void set(std::string url) {
    std::lock_guard g(mu_);
    url_ = std::move(url);
  }
  // The stack's operator token (it does not change).
  const std::string& token() const { return token_; }

 private:
  mutable std::mutex mu_;
  std::string url_;
  const std::string token_;
};

struct PostResult {
  std::optional<std::int64_t> id;
  int retries = 0;
  std::string error;  // why there is no id
};

// POSTs one job with an Idempotency-Key until it is answered 200/201 (a
// restarted creation, PostgreSQL down: the same request again, so nothing is
// lost or doubled) or `deadline` passes. A 4xx other than 408/429 is final.
PostResult post_job(const ApiUrl& api, const json& body, const std::string& key, Clock::time_point deadline,
                    const std::atomic<bool>* abandon = nullptr) {
  PostResult out;
  std::string last;
  while (true) {
    try {
      auto r = conveyor::http::http_request(
          "POST", api.get() + "/v1/jobs", body.dump(),
          {{"Content-Type", "application/json"}, {"Authorization", "Bearer " + api.token()}, {"Idempotency-Key", key}},
          3s);
      if (r.status == 200 || r.status == 201) {
        out.id = json::parse(r.body).at("id").get<std::int64_t>();
        return out;
      }
      last = "HTTP " + std::to_string(r.status) + ": " + r.body.substr(0, 300);
      if (r.status >= 400 && r.status < 500 && r.status != 408 && r.status != 429) {
        out.error = last;
        return out;
      }
    } catch (const std::exception& e) {
      last = e.what();  // not listening (being restarted) or timed out
    }
    ++out.retries;
    if (Clock::now() >= deadline || (abandon != nullptr && *abandon)) {
      out.error = "not answered before the deadline; last: " + last;
      return out;
    }
    std::this_thread::sleep_for(100ms);  // back-off before the same request again
  }
}

// Submits sleep jobs of 0-0.3 s at a steady rate from its own thread until stop().
class Submitter {
 public:
  Submitter(const ApiUrl& api, std::uint64_t seed, std::string key_prefix)
      : api_(api), rng_(seed), prefix_(std::move(key_prefix)) {
    thread_ = std::thread([this] { main(); });
  }
  ~Submitter() {
    abandon_ = true;
    stop();
  }
  // No new job after this; the one in flight is still sent until answered (30 s at most).
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::vector<std::int64_t> ids() const {
    std::lock_guard g(mu_);
    return ids_;
  }
  std::vector<std::string> errors() const {
    std::lock_guard g(mu_);
    return errors_;
  }
  int retries() const { return retries_; }

 private:
  void main() {
    const auto period =
        std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / kJobsPerSecond));
    auto next = Clock::now();
    for (int i = 0; !stop_; ++i) {
      const double seconds = static_cast<double>(rng_() % 31) / 100.0;
      const json body = {{"job_type", "sleep"}, {"params", {{"seconds", seconds}}}};
      // Until answered while the run goes on; 30 s more once stopped.
      auto r = post_job(api_, body, prefix_ + std::to_string(i), Clock::time_point::max(), &stop_);
      if (!r.id && !abandon_) {
        auto more = post_job(api_, body, prefix_ + std::to_string(i), Clock::now() + 30s, &abandon_);
        more.retries += r.retries;
        r = more;
      }
      retries_ += r.retries;
      {
        std::lock_guard g(mu_);
        if (r.id) ids_.push_back(*r.id);
        else errors_.push_back("submission " + std::to_string(i) + ": " + r.error);
      }
      next = std::max(next + period, Clock::now() - period);
      std::this_thread::sleep_until(next);  // pacing: the steady rate
    }
  }
  const ApiUrl& api_;
  std::mt19937_64 rng_;
  std::string prefix_;
  mutable std::mutex mu_;
  std::vector<std::int64_t> ids_;
  std::vector<std::string> errors_;
  std::atomic<int> retries_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> abandon_{false};
  std::thread thread_;
};

// ---------------------------------------------------------------- processes

// "pid (comm) state ppid ..." of /proc/<pid>/stat.
struct ProcStat {
  std::string comm;
  char state = 0;
  int ppid = 0;
};
std::optional<ProcStat> proc_stat(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return std::nullopt;
  const auto open = stat.find('('), close = stat.rfind(')');
  if (open == std::string::npos || close == std::string::npos) return std::nullopt;
  ProcStat s;
  s.comm = stat.substr(open + 1, close - open - 1);
  std::istringstream rest(stat.substr(close + 1));
  rest >> s.state >> s.ppid;
  return s;
}

// Live worker processes the pool started (children of the pool process).
std::vector<int> pool_workers(int pool_pid) {
  std::vector<int> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    const int pid = std::stoi(name);
    auto s = proc_stat(pid);
    if (s && s->comm == "conveyor-worker" && s->state != 'Z' && s->ppid == pool_pid) out.push_back(pid);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The inode of the TCP socket 127.0.0.1:local_port -> *:remote_port, from /proc/net/tcp.
std::optional<std::string> tcp_socket_inode(int local_port, int remote_port) {
  std::ifstream in("/proc/net/tcp");
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string sl, local, remote, st, queues, timer, retr, uid, timeout, inode;
    f >> sl >> local >> remote >> st >> queues >> timer >> retr >> uid >> timeout >> inode;
    auto port_of = [](const std::string& addr) {
      const auto colon = addr.find(':');
      return colon == std::string::npos ? -1 : std::stoi(addr.substr(colon + 1), nullptr, 16);
    };
    if (port_of(local) == local_port && port_of(remote) == remote_port) return inode;
  }
  return std::nullopt;
}

bool holds_socket(int pid, const std::string& inode) {
  std::error_code ec;
  const std::string want = "socket:[" + inode + "]";
  for (const auto& fd : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    std::error_code lec;
    if (std::filesystem::read_symlink(fd.path(), lec).string() == want) return true;
  }
  return false;
}

// ---------------------------------------------------------------- database

std::optional<std::string> try_value(Stack& stack, const std::string& sql) {
  try {
    return stack.db().query_value(sql);
  } catch (const std::exception&) {
    return std::nullopt;  // PostgreSQL restarting
  }
}

int count(Stack& stack, const std::string& sql) { return std::stoi(stack.db().query_value(sql)); }

const char* const kTerminal = "('done','failed','canceled','internal_error')";

// What a failure message needs about jobs that are not terminal: per status,
// then the first ones with their worker, then the history of a few.
std::string describe_unfinished(Stack& stack) {
  std::ostringstream out;
  try {
    out << "not terminal, by status:";
    for (const auto& r :
         stack.db().query(std::string("SELECT status, count(*) FROM conveyor.job WHERE status NOT IN ") + kTerminal +
                          " GROUP BY 1 ORDER BY 1")) {
      out << " " << r[0] << "=" << r[1];
    }
    out << "\nfirst of them (id status attempt updated_s_ago error | worker: name status pid running "
           "heartbeat_s_ago process):\n";
    auto rows = stack.db().query(
        std::string("SELECT j.id, j.status, j.attempt, round(extract(epoch FROM now() - j.updated_at))::int, "
                    "coalesce(j.error_subtype, '-'), coalesce(w.name, '-'), coalesce(w.status, '-'), "
                    "coalesce(w.pid::text, ''), coalesce(w.running::text, '-'), "
                    "coalesce(round(extract(epoch FROM now() - w.last_heartbeat))::int::text, '-') "
                    "FROM conveyor.job j LEFT JOIN conveyor.worker w ON w.id = j.worker_id "
                    "WHERE j.status NOT IN ") +
        kTerminal + " ORDER BY j.id LIMIT 25");
    for (const auto& r : rows) {
      std::string process = "-";
      if (!r[7].empty()) {
        auto s = proc_stat(std::stoi(r[7]));
        process = (s && s->state != 'Z') ? "alive" : "gone";
      }
      out << "  job " << r[0] << " " << r[1] << " attempt=" << r[2] << " updated " << r[3] << "s ago error=" << r[4]
          << " | worker " << r[5] << " " << r[6] << " pid=" << r[7] << " running=" << r[8] << " heartbeat " << r[9]
          << "s ago, process " << process << "\n";
    }
    for (std::size_t i = 0; i < rows.size() && i < 3; ++i) {
      out << "  history of job " << rows[i][0] << ":";
      for (const auto& h :
           stack.db().query("SELECT coalesce(from_status, '(insert)'), to_status, actor, to_char(at, 'HH24:MI:SS.MS') "
                            "FROM conveyor.job_status_change WHERE job_id = " +
                            rows[i][0] + " ORDER BY id")) {
        out << " " << h[0] << "->" << h[1] << " (" << h[2] << " " << h[3] << ")";
      }
      out << "\n";
    }
    out << "workers:";
    for (const auto& w : stack.db().query("SELECT name, status, pid, running FROM conveyor.worker "
                                          "WHERE status IN ('active','draining') ORDER BY id")) {
      out << " " << w[0] << "(" << w[1] << " pid " << w[2] << " running " << w[3] << ")";
    }
    out << "\n";
  } catch (const std::exception& e) {
    out << "(cannot query the database: " << e.what() << ")\n";
  }
  return out.str();
}

// ---------------------------------------------------------------- faults

struct Fault {
  std::string kind;    // kill | postgres | broker
  std::string detail;  // kill: the target; postgres: fast | immediate
};

// The faults in order, from the seeded generator: first (in a seeded order)
// two kills, a fast and an immediate PostgreSQL restart and a broker stop
// (those of the enabled kinds), then at random (kill 3 : postgres 1 : broker 1).
// Kill targets come from a shuffled bag, so each is hit before any twice.
class Planner {
 public:
  Planner(std::mt19937_64& rng, const std::set<std::string>& kinds) : rng_(rng), kinds_(kinds) {
    immediate_next_ = rng_() % 2 == 1;
    if (kinds_.count("kill")) mandatory_.insert(mandatory_.end(), {{"kill", ""}, {"kill", ""}});
    if (kinds_.count("postgres")) mandatory_.insert(mandatory_.end(), {{"postgres", ""}, {"postgres", ""}});
    if (kinds_.count("broker")) mandatory_.push_back({"broker", ""});
    std::shuffle(mandatory_.begin(), mandatory_.end(), rng_);
  }
  bool mandatory_left() const { return !mandatory_.empty(); }
  Fault next() {
    Fault f;
    if (!mandatory_.empty()) {
      f = mandatory_.front();
      mandatory_.pop_front();
    } else {
      std::vector<std::string> weighted;
      for (const auto& k : kinds_) weighted.insert(weighted.end(), k == "kill" ? 3 : 1, k);
      f.kind = weighted[rng_() % weighted.size()];
    }
    if (f.kind == "kill") {
      if (bag_.empty()) {
        bag_ = {"creation", "configuration", "execution", "publication",
                "monitor",  "workerpool",    "worker",    "relay-leader"};
        std::shuffle(bag_.begin(), bag_.end(), rng_);
      }
      f.detail = bag_.back();
      bag_.pop_back();
    } else if (f.kind == "postgres") {
      f.detail = immediate_next_ ? "immediate" : "fast";
      immediate_next_ = !immediate_next_;
    }
    return f;
  }

 private:
  std::mt19937_64& rng_;
  std::set<std::string> kinds_;
  std::deque<Fault> mandatory_;
  std::vector<std::string> bag_;
  bool immediate_next_ = false;
};

double uniform(std::mt19937_64& rng, double lo, double hi) {
  return std::uniform_real_distribution<double>(lo, hi)(rng);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const auto n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

class Driver {
 public:
  Driver(Stack& stack, ApiUrl& api, Log& log, std::uint64_t seed) : stack_(stack), api_(api), log_(log), rng_(seed) {}

  std::mt19937_64& rng() { return rng_; }

  // Started again like a supervisor would, and reported as a failure: a
  // service must not die of a fault that was not aimed at it.
  void supervise() {
    for (const auto& name : stack_.names()) {
      if (Stack::base_name(name) == "worker") continue;
      auto& p = stack_.process(name);
      if (p.running()) continue;
      const auto status = p.wait(0ms);
      const std::string what = name + " exited on its own (status " + (status ? std::to_string(*status) : "?") + ")";
      log_(what + "; starting it again");
      died_.push_back(what);
      restart(name);
    }
  }

  // Sleeps `seconds` (pacing, not synchronisation), supervising meanwhile.
  void pause(double seconds) {
    const auto until =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    while (Clock::now() < until) {
      supervise();
      std::this_thread::sleep_until(std::min(until, Clock::now() + 250ms));
    }
  }

  // Injects `f`; returns when the fault is over (the process started again,
  // PostgreSQL or the broker back) and the recovery probe is done or given up.
  void inject(const Fault& f) {
    ++faults_;
    const std::string label =
        f.kind == "kill" ? "kill -9 " + f.detail : f.kind + (f.detail.empty() ? "" : " " + f.detail);
    Clock::time_point over;
    if (f.kind == "kill") {
      over = kill(f.detail);
    } else if (f.kind == "postgres") {
      // Short outages (0.3-1.2 s: with a heartbeat a second, no worker's
      // goes 3 s stale, so none is declared lost and its jobs are not
      // requeued) and long ones (2-6 s: workers declared lost) alternate in
      // pairs: short, long, long, short...; with the mode alternating on
      // its own, the first four cover every combination.
      const bool short_outage = postgres_restarts_ % 4 == 0 || postgres_restarts_ % 4 == 3;
      ++postgres_restarts_;
      const double down = short_outage ? uniform(rng_, 0.3, 1.2) : uniform(rng_, 2, 6);
      const auto mode = f.detail == "immediate" ? conveyor::testing::PostgresCluster::StopMode::immediate
                                                : conveyor::testing::PostgresCluster::StopMode::fast;
      // Aimed at jobs in flight: their outcome is due while PostgreSQL is down.
      int running = 0;
      wait_until(
          [&] {
            auto n = try_value(stack_, "SELECT count(*) FROM conveyor.job WHERE status = 'started'");
            running = n ? std::stoi(*n) : 0;
            return running >= 2;
          },
          5s);
      log_("postgres: pg_ctl stop -m " + f.detail + " with " + std::to_string(running) + " jobs started, down for " +
           fixed1(down) + " s");
      auto t = Clock::now();
      stack_.postgres().stop(mode);
      log_("postgres stopped (" + fixed1(seconds_since(t)) + " s)");
      std::this_thread::sleep_until(t +
                                    std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(down)));
      t = Clock::now();
      stack_.postgres().start();
      over = Clock::now();
      log_("postgres started again on port " + std::to_string(stack_.postgres().port()) + " (pg_ctl start " +
           fixed1(seconds_since(t)) + " s)");
    } else {
      const double down = uniform(rng_, 10, 30);
      log_("broker stopped for " + fixed1(down) + " s");
      const auto t = Clock::now();
      stack_.broker().stop();
      pause_unsupervised(t, down);
      stack_.broker().resume();
      over = Clock::now();
      log_("broker started again (" + stack_.broker().bootstrap() + ")");
    }
    last_fault_over_ = over;
    probe(label, over);
  }

  Clock::time_point last_fault_over() const { return last_fault_over_; }
  const std::vector<std::string>& died() const { return died_; }
  int probes() const { return probes_; }

  void report_recovery() const {
    std::ostringstream out;
    out << "recovery";
    if (recovered_.empty()) {
      out << " median=n/a worst=n/a";
    } else {
      out << " median=" << fixed1(median(recovered_)) << "s";
      if (unrecovered_ > 0) out << " worst=>" << std::chrono::duration<double>(kProbeBound).count() << "s";
      else out << " worst=" << fixed1(*std::max_element(recovered_.begin(), recovered_.end())) << "s";
    }
    out << " (faults=" << faults_ << ", recovered=" << recovered_.size() << ", not recovered within "
        << std::chrono::duration<double>(kProbeBound).count() << "s=" << unrecovered_ << ")";
    std::cout << "[chaos] " << out.str() << std::endl;
  }

 private:
  // While the broker is down a service cannot become ready, so nothing is
  // started again meanwhile: an exit is found by the next supervise().
  static void pause_unsupervised(Clock::time_point from, double seconds) {
    std::this_thread::sleep_until(from +
                                  std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds)));
  }

  void restart(const std::string& name) {
    stack_.start(name);
    if (name == "creation") api_.set(stack_.api_url());
  }

  // kill -9 of `target`; returns when it is started again (a worker: at once,
  // the pool replaces it).
  Clock::time_point kill(std::string target) {
    const auto pick = rng_();  // drawn whatever the target, so the sequence stays the seed's
    if (target == "worker") {
      std::vector<int> workers;
      wait_until([&] { return !(workers = pool_workers(stack_.process("workerpool").pid())).empty(); }, 15s);
      if (workers.empty()) {
        log_("kill -9 worker: the pool runs no worker process right now; killing the pool instead");
        target = "workerpool";
      } else {
        const int pid = workers[pick % workers.size()];
        ::kill(pid, SIGKILL);
        log_("kill -9 worker pid " + std::to_string(pid) + " (one of " + std::to_string(workers.size()) +
             " the pool runs; the pool replaces it)");
        return Clock::now();
      }
    }
    if (target == "relay-leader") {
      auto leader = relay_leader();
      if (!leader) {
        log_("kill -9 relay leader: no process holds the relay lock right now; killing execution instead");
        target = "execution";
      } else if (leader->first.empty()) {
        ::kill(leader->second, SIGKILL);
        log_("kill -9 relay leader: worker pid " + std::to_string(leader->second));
        return Clock::now();
      } else {
        log_("the relay leader is " + leader->first + " (pid " + std::to_string(leader->second) + ")");
        target = leader->first;
      }
    }
    const int pid = stack_.process(target).pid();
    log_("kill -9 " + target + " (pid " + std::to_string(pid) + ")");
    const auto t = Clock::now();
    stack_.kill(target, SIGKILL);
    restart(target);
    log_(target + " started again and ready (" + fixed1(seconds_since(t)) + " s)");
    return t;
  }

  // The process whose relay holds the advisory lock: {stack name, pid}, or
  // {"", pid} for a worker the pool started. Matched through the TCP socket
  // of the lock holder's session (pg_stat_activity.client_port).
  std::optional<std::pair<std::string, int>> relay_leader() {
    auto port = try_value(stack_,
                          "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                          "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'conveyor-relay' "
                          "AND a.datname = current_database() LIMIT 1");
    if (!port || port->empty()) return std::nullopt;
    auto inode = tcp_socket_inode(std::stoi(*port), stack_.postgres().port());
    if (!inode) return std::nullopt;
    for (const auto& name : stack_.names()) {
      if (Stack::base_name(name) == "worker") continue;
      const int pid = stack_.process(name).pid();
      if (holds_socket(pid, *inode)) return std::make_pair(name, pid);
    }
    for (int pid : pool_workers(stack_.process("workerpool").pid())) {
      if (holds_socket(pid, *inode)) return std::make_pair(std::string(), pid);
    }
    return std::nullopt;
  }

  // A fresh job through the whole path: the time from the end of the fault
  // until it is done is the recovery time.
  void probe(const std::string& label, Clock::time_point over) {
    const auto deadline = over + kProbeBound;
    const std::string key = "probe-" + std::to_string(++probes_);
    auto r = post_job(api_, {{"job_type", "sleep"}, {"params", {{"seconds", 0}}}}, key, deadline);
    std::string status = "not submitted: " + r.error;
    bool done = false;
    if (r.id) {
      const std::string id = std::to_string(*r.id);
      done = wait_until(
          [&] {
            if (auto s = try_value(stack_, "SELECT status FROM conveyor.job WHERE id = " + id)) status = *s;
            return status == "done";
          },
          std::chrono::duration_cast<std::chrono::milliseconds>(std::max(deadline - Clock::now(), Clock::duration{})));
      status = "job " + id + " " + status;
    }
    if (done) {
      const double s = std::chrono::duration<double>(Clock::now() - over).count();
      recovered_.push_back(s);
      log_("recovered from " + label + " in " + fixed1(s) + " s (probe " + status + ")");
    } else {
      ++unrecovered_;
      log_("NOT recovered from " + label + " within " + fixed1(std::chrono::duration<double>(kProbeBound).count()) +
           " s: probe " + status);
    }
  }

  Stack& stack_;
  ApiUrl& api_;
  Log& log_;
  std::mt19937_64 rng_;
  int faults_ = 0;
  int postgres_restarts_ = 0;
  int probes_ = 0;
  int unrecovered_ = 0;
  std::vector<double> recovered_;
  std::vector<std::string> died_;
  Clock::time_point last_fault_over_ = Clock::now();
};

// ---------------------------------------------------------------- checks

// No transition recorded twice. A job may legitimately walk started -> ready
// -> queued -> started again, but only with attempt + 1 (retry, requeue of a
// lost worker's job), so a change is identified by (job, from, to, attempt),
// the attempt taken from the event the status trigger wrote with it (outbox,
// same transaction; re-emitted copies excluded). Publication retries
// (processed -> external_error -> error_checked -> processed) repeat within
// one attempt by design and are left out.
void expect_no_transition_twice(Stack& stack) {
  // Joined here rather than in SQL: the planner cannot estimate the jsonb key
  // and picks a nested loop that grows with the square of the run.
  std::map<std::string, std::vector<std::string>> attempt_of;  // change id -> attempts of its events
  for (const auto& e :
       stack.db().query("SELECT payload->>'change_id', coalesce(payload->>'attempt', '?') "
                        "FROM conveyor.outbox WHERE topic = 'jobs' AND payload->>'reemitted' IS NULL")) {
    attempt_of[e[0]].push_back(e[1]);
  }
  std::map<std::tuple<std::string, std::string, std::string, std::string>, int> seen;
  int missing = 0, doubled = 0;
  for (const auto& c : stack.db().query("SELECT id, job_id, coalesce(from_status, '(insert)'), to_status "
                                        "FROM conveyor.job_status_change ORDER BY id")) {
    auto it = attempt_of.find(c[0]);
    if (it == attempt_of.end()) {
      if (++missing <= 5)
        ADD_FAILURE() << "job " << c[1] << ": " << c[2] << " -> " << c[3] << " (change " << c[0]
                      << ") has no event in the outbox";
      continue;
    }
    if (it->second.size() > 1 && ++doubled <= 5) {
      ADD_FAILURE() << "job " << c[1] << ": " << c[2] << " -> " << c[3] << " (change " << c[0] << ") has "
                    << it->second.size() << " events";
    }
    const bool publication_retry = (c[2] == "processed" || c[2] == "external_error" || c[2] == "error_checked") &&
                                   (c[3] == "external_error" || c[3] == "error_checked" || c[3] == "processed");
    if (!publication_retry) ++seen[{c[1], c[2], c[3], it->second.front()}];
  }
  int dups = 0;
  for (const auto& [key, n] : seen) {
    if (n > 1 && ++dups <= 20) {
      ADD_FAILURE() << "job " << std::get<0>(key) << ": " << std::get<1>(key) << " -> " << std::get<2>(key)
                    << " recorded " << n << " times at attempt " << std::get<3>(key);
    }
  }
  EXPECT_EQ(dups, 0) << "transitions recorded twice (first 20 above)";
  // The attempt above comes from the change's own event: each change has exactly one.
  EXPECT_EQ(missing, 0) << "status changes without the event the status trigger writes in the same transaction";
  EXPECT_EQ(doubled, 0) << "status changes with more than one event";
}

// Every done job delivered exactly its event (id job-<id>-attempt-<n>-published
// for the attempt it finished with) and has its catalog entry; no job was
// delivered more than once.
void expect_published_exactly_once(Stack& stack, const WebhookReceiver& receiver) {
  const auto events = receiver.events();
  for (const auto& m : receiver.malformed()) ADD_FAILURE() << "malformed webhook delivery: " << m;
  int wrong = 0;
  for (const auto& [id, ids] : events) {
    if (ids.size() > 1 && ++wrong <= 20) {
      std::string all;
      for (const auto& e : ids) all += "; " + e;
      ADD_FAILURE() << "job " << id << " delivered " << ids.size() << " times:" << all;
    }
  }
  const auto done = stack.db().query("SELECT id, attempt FROM conveyor.job WHERE status = 'done' ORDER BY id");
  const auto catalog = stack.data_dir() / "catalog";
  for (const auto& row : done) {
    const auto id = std::stoll(row[0]);
    const std::string expected = "job-" + row[0] + "-attempt-" + row[1] + "-published";
    auto it = events.find(id);
    if (it == events.end() || it->second.empty()) {
      if (++wrong <= 20) ADD_FAILURE() << "done job " << id << " delivered no event";
    } else if (it->second.front().substr(0, it->second.front().find(' ')) != expected) {
      if (++wrong <= 20)
        ADD_FAILURE() << "done job " << id << " delivered " << it->second.front() << ", not " << expected;
    }
    if (!std::filesystem::exists(catalog / ("job-" + row[0] + ".json")) && ++wrong <= 20) {
      ADD_FAILURE() << "done job " << id << " has no catalog entry";
    }
  }
  EXPECT_EQ(wrong, 0) << "publication problems (first 20 above) among " << done.size() << " done jobs";
}

// ---------------------------------------------------------------- the test

TEST(Chaos, SteadyJobStreamUnderSeededFaults) {
  const Settings settings = settings_from_env();
  std::cout << "[chaos] seed=" << settings.seed << std::endl;
  ::testing::Test::RecordProperty("seed", std::to_string(settings.seed));
  {
    std::string kinds;
    for (const auto& k : settings.kinds) kinds += (kinds.empty() ? "" : ",") + k;
    std::cout << "[chaos] seconds=" << settings.seconds << " faults=" << kinds
              << " (replay: CONVEYOR_CHAOS_SEED=" << settings.seed << " CONVEYOR_CHAOS_SECONDS=" << settings.seconds
              << " CONVEYOR_CHAOS_FAULTS=" << kinds << ")" << std::endl;
  }
  if (settings.ctest_seconds > 0 && settings.seconds > settings.ctest_seconds) {
    std::cout << "[chaos] warning: ctest's TIMEOUT was configured for " << settings.ctest_seconds
              << " s of chaos; configure with CONVEYOR_CHAOS_SECONDS=" << settings.seconds
              << " as well, or run the executable directly" << std::endl;
  }
  ASSERT_FALSE(settings.kinds.empty());

  WebhookReceiver receiver;
  JobTypesFile types(receiver.url());
  Stack::Options o;
  o.workers = 0;
  o.services = {"creation", "configuration", "execution", "publication", "monitor", "workerpool"};
  o.job_types_file = types.path();
  o.env = {{"CONVEYOR_WORKERPOOL_SCALE_DOWN_DELAY_MS", "2000"}};
  o.private_postgres = true;
  o.broker_port = conveyor::testing::free_restartable_port();
  // Heartbeats every second, a worker lost after 3 s (as e2e_faults); stall
  // thresholds of 15 s so that the reconciler acts within the run.
  o.setup_sql =
      "UPDATE conveyor.system_parameters SET worker_heartbeat_interval_s = 1, worker_heartbeat_timeout_s = 3, "
      "min_number_of_worker_instances = 1, max_number_of_worker_instances = " +
      std::to_string(kMaxWorkers) + ", worker_concurrency = " + std::to_string(kConcurrency) +
      ", stall_initialized_s = 15, stall_configured_s = 15, stall_ready_s = 15, stall_queued_s = 15, "
      "stall_processed_s = 15, stall_error_checked_s = 15";
  const auto setup = Clock::now();
  Stack stack(o);
  std::cout << "[chaos] stack up in " << fixed1(seconds_since(setup)) << " s (postgres port " << stack.postgres().port()
            << ", broker " << stack.broker().bootstrap() << ", data " << stack.data_dir() << ")" << std::endl;

  Log log;
  log.start();
  ApiUrl api(stack.api_url(), stack.api_token());
  Driver driver(stack, api, log, settings.seed);
  Planner planner(driver.rng(), settings.kinds);
  Submitter submitter(api, settings.seed ^ 0x5eed5eed5eed5eedULL, "chaos-");

  // ---- the chaos phase
  const auto t0 = Clock::now();
  const auto end = t0 + std::chrono::seconds(settings.seconds);
  std::string aborted;
  while (true) {
    const double gap = uniform(driver.rng(), 8, 15);
    const auto at = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap));
    // Each kind at least once; more while time remains.
    if (!planner.mandatory_left() && at > end - 10s) break;
    const Fault fault = planner.next();
    try {
      driver.pause(gap);
      driver.inject(fault);
    } catch (const std::exception& e) {
      aborted = fault.kind + " " + fault.detail + ": " + e.what();
      log("fault failed, no more faults: " + aborted);
      break;
    }
  }
  const auto last_fault = driver.last_fault_over();
  log("chaos over; stopping the submitter");
  submitter.stop();
  EXPECT_EQ(aborted, "") << "a fault could not be injected or recovered from by the harness\n" << stack.logs_tail(40);
  const auto ids = submitter.ids();
  for (const auto& e : submitter.errors()) ADD_FAILURE() << e;
  log(std::to_string(ids.size()) + " jobs submitted (" + std::to_string(submitter.retries()) +
      " requests sent again), plus " + std::to_string(driver.probes()) + " probes");
  driver.report_recovery();

  // ---- every job terminal within the bound after the last fault
  const bool terminal = wait_until(
      [&] {
        auto n = try_value(stack, std::string("SELECT count(*) FROM conveyor.job WHERE status NOT IN ") + kTerminal);
        return n && *n == "0";
      },
      std::chrono::duration_cast<std::chrono::milliseconds>(
          std::max(last_fault + kTerminalBound - Clock::now(), Clock::duration{})));
  if (terminal) {
    log("every job terminal " + fixed1(std::chrono::duration<double>(Clock::now() - last_fault).count()) +
        " s after the last fault");
  } else {
    log("NOT every job terminal " + fixed1(std::chrono::duration<double>(kTerminalBound).count()) +
        " s after the last fault");
  }
  EXPECT_TRUE(terminal) << "jobs not terminal " << std::chrono::duration<double>(kTerminalBound).count()
                        << " s after the last fault (seed " << settings.seed << ")\n"
                        << describe_unfinished(stack) << stack.logs_tail(40);

  // ---- processes that died of a fault not aimed at them
  driver.supervise();
  for (const auto& d : driver.died()) ADD_FAILURE() << d << " during the run (seed " << settings.seed << ")";

  // ---- the summary
  {
    std::string by_status;
    for (const auto& r : stack.db().query("SELECT status, coalesce(error_subtype, ''), count(*) FROM conveyor.job "
                                          "GROUP BY 1, 2 ORDER BY 1, 2")) {
      by_status += " " + r[0] + (r[1].empty() ? "" : "/" + r[1]) + "=" + r[2];
    }
    log("jobs by status:" + by_status + "; requeues/retries: " +
        stack.db().query_value("SELECT count(*) FROM conveyor.job_status_change WHERE from_status = 'started' "
                               "AND to_status = 'ready'") +
        ", highest attempt: " + stack.db().query_value("SELECT max(attempt) FROM conveyor.job"));
  }
  // Every request made one job, and every job came from a request.
  EXPECT_EQ(count(stack, "SELECT count(*) FROM conveyor.job"), static_cast<int>(ids.size()) + driver.probes())
      << "a request sent again made a second job, or a job came from nowhere";
  EXPECT_EQ(std::set<std::int64_t>(ids.begin(), ids.end()).size(), ids.size()) << "two keys answered with one job";

  // ---- histories, transitions (publication: after the capacity batch, which publishes too)
  expect_valid_histories(stack);
  expect_no_transition_twice(stack);
  log("histories and transitions checked");

  // ---- admission capacity back to full
  const int holding = count(stack, "SELECT count(*) FROM conveyor.job WHERE status IN ('queued','started')");
  EXPECT_EQ(holding, 0) << "jobs still holding admission capacity\n" << describe_unfinished(stack);
  const bool idle = wait_until(
      [&] {
        return count(stack,
                     "SELECT coalesce(sum(running), 0) FROM conveyor.worker "
                     "WHERE status IN ('active','draining')") == 0;
      },
      10s);
  EXPECT_TRUE(idle) << "workers still report running jobs:\n" << describe_unfinished(stack);
  log(std::to_string(holding) + " jobs queued or started" + (idle ? ", no worker running one" : ", workers busy"));
  const int capacity = kMaxWorkers * kConcurrency;
  {
    const auto t = Clock::now();
    std::vector<std::string> cap;
    for (int i = 0; i < capacity; ++i) {
      auto r = post_job(api, {{"job_type", "sleep"}, {"params", {{"seconds", 10}}}}, "capacity-" + std::to_string(i),
                        Clock::now() + 30s);
      if (r.id) cap.push_back(std::to_string(*r.id));
      else ADD_FAILURE() << "capacity job " << i << ": " << r.error;
    }
    std::string list;
    for (const auto& id : cap) list += (list.empty() ? "" : ",") + id;
    if (list.empty()) list = "0";
    int peak = 0;
    const bool all_at_once = wait_until(
        [&] {
          peak = std::max(peak, count(stack, "SELECT count(*) FROM conveyor.job WHERE status = 'started' AND id IN (" +
                                                 list + ")"));
          return peak == capacity;
        },
        40s);
    log("capacity: " + std::to_string(peak) + " of " + std::to_string(capacity) + " jobs ran at once, " +
        fixed1(seconds_since(t)) + " s after submission");
    EXPECT_TRUE(all_at_once) << "admission capacity not back to full: at most " << peak << " of " << capacity
                             << " (max workers " << kMaxWorkers << " x concurrency " << kConcurrency
                             << ") jobs ran at once\n"
                             << describe_unfinished(stack) << stack.logs_tail(30);
    const bool done = wait_until(
        [&] {
          return count(stack, "SELECT count(*) FROM conveyor.job WHERE status = 'done' AND id IN (" + list + ")") ==
                 static_cast<int>(cap.size());
        },
        30s);
    log(std::string("capacity jobs ") + (done ? "all done " : "NOT all done ") + fixed1(seconds_since(t)) +
        " s after submission");
    EXPECT_TRUE(done) << "the capacity batch did not complete\n" << describe_unfinished(stack);
  }

  // ---- every done job published exactly its event
  expect_published_exactly_once(stack, receiver);
  driver.report_recovery();
}

}  // namespace
