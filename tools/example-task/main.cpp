// conveyor-example-task: the stand-in programs behind the example job types
// (deploy/config/job-types.json). They behave like real processing steps —
// they print what they do, read their inputs, write outputs, fail on purpose —
// so the whole job path can be exercised without the real science software.
//
//   sleep SECONDS           sleeps (fractional allowed), printing progress;
//                           SIGTERM -> exit 143
//   fail [CODE]             prints to stderr, exits CODE (default 3)
//   flaky ATTEMPT           fails when ATTEMPT is 0, succeeds otherwise
//   alloc MB [SECONDS]      allocates MB MiB and writes every page (so it is
//                           resident), holds it SECONDS (default 0), exits 0
//   product --kind NAME --tile TILE --date DATE --out DIR [--input PATH]... [PATH]...
//                           checks and reads every input (file, or directory of
//                           files), writes DIR/<kind>_<tile>_<date>.json;
//                           missing or unreadable input -> exit 4
//   --resident              a resident job program (README, "Resident job
//                           programs"): reads job lines on stdin, "sleeps"
//                           params.seconds per job without holding up the
//                           others, answers cancels, writes one result line
//                           per job and <out_dir>/resident.json; with
//                           params.noop, answers done at once and writes
//                           nothing else (the bench's no-op job). Test hooks in
//                           params: fail (an error text), crash, malformed,
//                           oversized, ignore_cancel, stray (a non-JSON line)
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace fs = std::filesystem;

constexpr int kExitUsage = 2;
constexpr int kExitInput = 4;

volatile sig_atomic_t g_signal = 0;

extern "C" void on_signal(int sig) { g_signal = sig; }

constexpr const char* kUsage =
    "usage: conveyor-example-task sleep SECONDS\n"
    "       conveyor-example-task fail [CODE]\n"
    "       conveyor-example-task flaky ATTEMPT\n"
    "       conveyor-example-task alloc MB [SECONDS]\n"
    "       conveyor-example-task product --kind NAME --tile TILE --date DATE --out DIR "
    "[--input PATH]... [PATH]...\n"
    "       conveyor-example-task --resident\n"
    "       conveyor-example-task --help | --version\n";

int usage(const std::string& why) {
  std::cerr << "conveyor-example-task: " << why << "\n" << kUsage;
  return kExitUsage;
}

int sleep_cmd(const std::vector<std::string>& args) {
  if (args.size() != 1) return usage("sleep takes one argument, SECONDS");
  double seconds = 0;
  try {
    std::size_t used = 0;
    seconds = std::stod(args[0], &used);
    if (used != args[0].size() || !std::isfinite(seconds) || seconds < 0) throw std::invalid_argument("");
  } catch (const std::exception&) {
    return usage("sleep: '" + args[0] + "' is not a non-negative number of seconds");
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  std::cout << "sleeping " << seconds << "s (pid " << getpid() << ")" << std::endl;
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const auto end = start + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(seconds));
  auto next_report = start + std::chrono::seconds(1);
  while (clock::now() < end) {
    if (g_signal != 0) {
      const int sig = g_signal;
      std::cout << "received " << (sig == SIGTERM ? "SIGTERM" : "SIGINT") << " after "
                << std::chrono::duration<double>(clock::now() - start).count() << "s, stopping" << std::endl;
      return 128 + sig;  // 143 for SIGTERM, as a shell would report it
    }
    // Short steps so a signal is answered promptly.
    std::this_thread::sleep_for(std::min<clock::duration>(std::chrono::milliseconds(50), end - clock::now()));
    if (clock::now() >= next_report && clock::now() < end) {
      std::cout << "slept " << std::chrono::duration_cast<std::chrono::seconds>(clock::now() - start).count() << "s of "
                << seconds << "s" << std::endl;
      next_report += std::chrono::seconds(1);
    }
  }
  std::cout << "done sleeping " << seconds << "s" << std::endl;
  return 0;
}

int fail_cmd(const std::vector<std::string>& args) {
  int code = 3;
  if (args.size() > 1) return usage("fail takes at most one argument, CODE");
  if (args.size() == 1) {
    try {
      std::size_t used = 0;
      code = std::stoi(args[0], &used);
      if (used != args[0].size() || code < 1 || code > 255) throw std::invalid_argument("");
    } catch (const std::exception&) {
      return usage("fail: CODE must be an integer from 1 to 255, got '" + args[0] + "'");
    }
  }
  std::cout << "about to fail on purpose" << std::endl;
  std::cerr << "failing on purpose with exit code " << code << std::endl;
  return code;
}

int flaky_cmd(const std::vector<std::string>& args) {
  if (args.size() != 1) return usage("flaky takes one argument, ATTEMPT");
  if (args[0] == "0") {
    std::cerr << "attempt 0: failing on purpose (a retry will succeed)" << std::endl;
    return 3;
  }
  std::cout << "attempt " << args[0] << ": succeeded" << std::endl;
  return 0;
}

// One input as listed in the product: path, bytes read, and a checksum proving
// it was read.
struct InputInfo {
  std::string path;
  std::uintmax_t size = 0;
  std::uint64_t fnv1a = 0;
};

bool read_file(const fs::path& p, InputInfo& info) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return false;
  std::uint64_t h = 1469598103934665603ull;
  char buf[8192];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    for (std::streamsize i = 0; i < in.gcount(); ++i) {
      h = (h ^ static_cast<unsigned char>(buf[i])) * 1099511628211ull;
    }
    info.size += static_cast<std::uintmax_t>(in.gcount());
  }
  if (in.bad()) return false;
  info.path = p.string();
  info.fnv1a = h;
  return true;
}

std::string hex(std::uint64_t v) {
  char s[17];
  std::snprintf(s, sizeof s, "%016llx", static_cast<unsigned long long>(v));
  return s;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char s[32];
  std::strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return s;
}

// What `product` was asked for.
struct ProductArgs {
  std::string kind, tile, date, out;
  std::vector<std::string> inputs;
};

// Reads `product`'s options into `a`; 0, or usage()'s exit code.
int parse_product_args(const std::vector<std::string>& args, ProductArgs& a) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    auto value = [&](std::string& into) {
      if (i + 1 >= args.size()) return false;
      into = args[++i];
      return true;
    };
    bool ok = true;
    if (arg == "--kind") ok = value(a.kind);
    else if (arg == "--tile") ok = value(a.tile);
    else if (arg == "--date") ok = value(a.date);
    else if (arg == "--out") ok = value(a.out);
    else if (arg == "--input") {
      std::string p;
      ok = value(p);
      a.inputs.push_back(p);
    } else if (arg.rfind("--", 0) == 0) return usage("product: unknown option " + arg);
    else a.inputs.push_back(arg);  // {inputs} expands to bare paths
    if (!ok) return usage("product: " + arg + " needs a value");
  }
  if (a.kind.empty() || a.tile.empty() || a.date.empty() || a.out.empty()) {
    return usage("product: --kind, --tile, --date and --out are required");
  }
  // These become a file name: refuse anything that could leave DIR.
  static const std::regex safe("^[A-Za-z0-9][A-Za-z0-9._-]*$");
  const std::pair<const char*, const std::string*> named[] = {
      {"--kind", &a.kind}, {"--tile", &a.tile}, {"--date", &a.date}};
  for (const auto& [name, v] : named) {
    if (!std::regex_match(*v, safe)) {
      return usage(std::string("product: ") + name + " '" + *v + "' must be [A-Za-z0-9._-]");
    }
  }
  return 0;
}

// Reads every input (a file, or every regular file of a directory: an
// upstream job's output) into `read`; 0, or kExitInput.
int read_inputs(const std::vector<std::string>& inputs, std::vector<InputInfo>& read) {
  for (const auto& in : inputs) {
    std::error_code ec;
    const fs::path p(in);
    if (!fs::exists(p, ec)) {
      std::cerr << "input not found: " << in << std::endl;
      return kExitInput;
    }
    std::vector<fs::path> files;
    if (fs::is_directory(p, ec)) {
      // An upstream job's output directory: every regular file in it.
      for (const auto& e : fs::directory_iterator(p, ec)) {
        if (e.is_regular_file()) files.push_back(e.path());
      }
      if (ec) {
        std::cerr << "input not readable: " << in << ": " << ec.message() << std::endl;
        return kExitInput;
      }
      std::sort(files.begin(), files.end());
    } else {
      files.push_back(p);
    }
    for (const auto& f : files) {
      InputInfo info;
      if (!read_file(f, info)) {
        std::cerr << "input not readable: " << f.string() << std::endl;
        return kExitInput;
      }
      std::cout << "read input " << info.path << " (" << info.size << " bytes)" << std::endl;
      read.push_back(info);
    }
  }
  return 0;
}

// Writes OUT/<kind>_<tile>_<date>.json naming the inputs read; 0, or 1.
int write_product(const ProductArgs& a, const std::vector<InputInfo>& read) {
  std::error_code ec;
  fs::create_directories(a.out, ec);
  if (ec) {
    std::cerr << "cannot create output directory " << a.out << ": " << ec.message() << std::endl;
    return 1;
  }
  nlohmann::json doc = {{"kind", a.kind},
                        {"tile", a.tile},
                        {"date", a.date},
                        {"created_at", utc_now()},
                        {"inputs", nlohmann::json::array()}};
  for (const auto& r : read) {
    doc["inputs"].push_back({{"path", r.path}, {"size", r.size}, {"fnv1a", hex(r.fnv1a)}});
  }
  const fs::path file = fs::path(a.out) / (a.kind + "_" + a.tile + "_" + a.date + ".json");
  // Write then rename, so a reader never sees half a product.
  const fs::path tmp = file.string() + ".tmp";
  {
    std::ofstream o(tmp, std::ios::trunc);
    o << doc.dump(2) << "\n";
    if (!o.flush()) {
      std::cerr << "cannot write " << tmp.string() << std::endl;
      return 1;
    }
  }
  fs::rename(tmp, file, ec);
  if (ec) {
    std::cerr << "cannot write " << file.string() << ": " << ec.message() << std::endl;
    return 1;
  }
  std::cout << "wrote " << file.string() << std::endl;
  return 0;
}

int product_cmd(const std::vector<std::string>& args) {
  ProductArgs a;
  if (const int rc = parse_product_args(args, a); rc != 0) return rc;
  std::cout << "product " << a.kind << " for tile " << a.tile << " on " << a.date << ": " << a.inputs.size()
            << " input(s)" << std::endl;
  std::vector<InputInfo> read;
  if (const int rc = read_inputs(a.inputs, read); rc != 0) return rc;
  return write_product(a, read);
}

}  // namespace

// A job of known memory use (issue 11: peak RSS per attempt).
int alloc_cmd(const std::vector<std::string>& args) {
  if (args.empty() || args.size() > 2) return usage("alloc takes MB and optionally SECONDS");
  long long mb = 0;
  double seconds = 0;
  try {
    std::size_t used = 0;
    mb = std::stoll(args[0], &used);
    if (used != args[0].size() || mb < 0 || mb > 1024 * 1024) throw std::invalid_argument("mb");
    if (args.size() == 2) {
      seconds = std::stod(args[1], &used);
      if (used != args[1].size() || !(seconds >= 0) || seconds > 3600) throw std::invalid_argument("s");
    }
  } catch (const std::exception&) {
    return usage("alloc: MB must be an integer (0..1048576), SECONDS a number (0..3600)");
  }
  const std::size_t bytes = static_cast<std::size_t>(mb) * 1024 * 1024;
  std::vector<char> block(bytes);
  for (std::size_t i = 0; i < bytes; i += 4096) block[i] = static_cast<char>(i / 4096);
  std::cout << "allocated " << mb << " MiB" << std::endl;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  // Read it back so the writes cannot be optimised away.
  long long sum = 0;
  for (std::size_t i = 0; i < bytes; i += 4096) sum += block[i];
  std::cout << "released " << mb << " MiB (" << sum % 7 << ")" << std::endl;
  return 0;
}

namespace {

// --resident: one event loop; a job's "sleep" is a due time, so one slow job
// holds up no other.
struct ResidentJob {
  std::int64_t id = 0;
  std::chrono::steady_clock::time_point due;
  std::string out_dir;
  nlohmann::json params;
  std::size_t in_flight_at_start = 0;  // jobs in flight when it arrived, itself included
};

void emit(const nlohmann::json& message) {
  std::cout << message.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n" << std::flush;
}

void job_log(std::int64_t id, const std::string& text) { emit({{"id", id}, {"log", text}}); }

int resident_served = 0;

void complete(const ResidentJob& job) {
  const auto& p = job.params;
  if (p.value("malformed", false)) {
    std::cout << "{\"id\":" << job.id << ",\"status\":" << std::endl;  // cut short
    return;
  }
  if (p.value("oversized", false)) {
    std::cout << "{\"id\":" << job.id << ",\"status\":\"done\",\"outputs\":\"" << std::string(2 * 1024 * 1024, 'x')
              << "\"}" << std::endl;
    return;
  }
  if (auto f = p.find("fail"); f != p.end() && f->is_string()) {
    emit({{"id", job.id}, {"status", "failed"}, {"error", f->get<std::string>()}});
    return;
  }
  ++resident_served;
  const nlohmann::json outputs = {
      {"pid", getpid()}, {"served", resident_served}, {"in_flight", job.in_flight_at_start}};
  std::error_code ec;
  if (!job.out_dir.empty() && fs::is_directory(job.out_dir, ec)) {
    std::ofstream(fs::path(job.out_dir) / "resident.json") << outputs.dump() << "\n";
  }
  job_log(job.id, "done");
  emit({{"id", job.id}, {"status", "done"}, {"outputs", outputs}});
}

// One line from the worker: a job, or a cancel.
void take(const std::string& line, std::map<std::int64_t, ResidentJob>& jobs) {
  const auto m = nlohmann::json::parse(line, nullptr, false);
  if (!m.is_object()) {
    std::cerr << "not a JSON object: " << line.substr(0, 200) << std::endl;
    return;
  }
  if (auto c = m.find("cancel"); c != m.end() && c->is_number_integer()) {
    const auto it = jobs.find(c->get<std::int64_t>());
    if (it == jobs.end() || it->second.params.value("ignore_cancel", false)) return;
    emit(
        {{"id", it->first}, {"status", "failed"}, {"error", "stopped: " + m.value("reason", std::string("canceled"))}});
    jobs.erase(it);
    return;
  }
  ResidentJob job;
  job.id = m.value("id", std::int64_t{0});
  job.out_dir = m.value("out_dir", std::string());
  job.params = m.value("params", nlohmann::json::object());
  if (job.params.is_object() && job.params.value("noop", false)) {
    // A no-op job: its answer, and nothing else (no log line, no file).
    emit({{"id", job.id}, {"status", "done"}});
    return;
  }
  double seconds = 0;
  if (auto s = job.params.find("seconds"); s != job.params.end() && s->is_number()) {
    seconds = std::max(0.0, s->get<double>());
  }
  job.due = std::chrono::steady_clock::now() +
            std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(seconds));
  job.in_flight_at_start = jobs.size() + 1;
  job_log(job.id, "sleeping " + std::to_string(seconds) + "s (pid " + std::to_string(getpid()) + ", " +
                      std::to_string(job.in_flight_at_start) + " in flight)");
  if (auto s = job.params.find("stray"); s != job.params.end() && s->is_string()) {
    std::cout << s->get<std::string>() << std::endl;
  }
  if (job.params.value("crash", false)) {
    std::cerr << "crashing on purpose (job " << job.id << ")" << std::endl;
    std::abort();
  }
  jobs.emplace(job.id, std::move(job));
}

int resident_cmd() {
  std::map<std::int64_t, ResidentJob> jobs;
  std::string buffer;
  bool open = true;
  while (open || !jobs.empty()) {
    // Due jobs first, then wait for input until the next one is due.
    const auto now = std::chrono::steady_clock::now();
    auto next = now + std::chrono::hours(1);
    for (auto it = jobs.begin(); it != jobs.end();) {
      if (it->second.due <= now) {
        complete(it->second);
        it = jobs.erase(it);
      } else {
        next = std::min(next, it->second.due);
        ++it;
      }
    }
    if (!open) {
      std::this_thread::sleep_until(next);
      continue;
    }
    pollfd p{0, POLLIN, 0};
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count() + 1;
    if (::poll(&p, 1, static_cast<int>(std::min<long long>(wait, 60'000))) <= 0) continue;
    char chunk[65536];
    const ssize_t n = ::read(0, chunk, sizeof chunk);
    if (n <= 0) {
      open = false;  // the worker is stopping: finish what is in flight, then exit
      continue;
    }
    buffer.append(chunk, static_cast<std::size_t>(n));
    for (std::size_t nl; (nl = buffer.find('\n')) != std::string::npos;) {
      take(buffer.substr(0, nl), jobs);
      buffer.erase(0, nl + 1);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) return usage("missing subcommand");
  const std::string cmd = args[0];
  args.erase(args.begin());
  if (cmd == "sleep") return sleep_cmd(args);
  if (cmd == "fail") return fail_cmd(args);
  if (cmd == "flaky") return flaky_cmd(args);
  if (cmd == "product") return product_cmd(args);
  if (cmd == "alloc") return alloc_cmd(args);
  if (cmd == "--resident" || cmd == "resident") return resident_cmd();
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    std::cout << kUsage;
    return 0;
  }
  if (cmd == "--version") {
    std::cout << "conveyor-example-task " << CONVEYOR_VERSION << "\n";
    return 0;
  }
  return usage("unknown subcommand '" + cmd + "'");
}
