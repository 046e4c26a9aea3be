#include "fuzz.hpp"

#include <strings.h>

#include <gtest/gtest.h>
#include <zlib.h>

#ifdef CONVEYOR_FUZZ_BROTLI
#include <brotli/encode.h>
#endif

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <stdexcept>

#include "conveyor/testing/testing.hpp"

namespace conveyor::fuzz {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::uint64_t mix(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::string join(const std::set<int>& statuses) {
  std::string out;
  for (int s : statuses) out += (out.empty() ? "" : "/") + std::to_string(s);
  return out;
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string() : std::string(v);
}

}  // namespace

// ------------------------------------------------------------------ seeds

std::uint64_t run_seed() {
  static const std::uint64_t seed = [] {
    std::uint64_t s = 0;
    const std::string text = env("CONVEYOR_FUZZ_SEED");
    if (!text.empty()) {
      try {
        s = std::stoull(text, nullptr, 0);
      } catch (const std::exception&) {
        throw std::runtime_error("CONVEYOR_FUZZ_SEED: not an unsigned integer: '" + text + "'");
      }
    } else {
      std::random_device rd;
      s = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
    }
    std::cout << "[fuzz] seed=" << s << std::endl;
    return s;
  }();
  return seed;
}

std::size_t case_count(std::size_t fallback) {
  const std::string text = env("CONVEYOR_FUZZ_CASES");
  if (text.empty()) return fallback;
  try {
    return static_cast<std::size_t>(std::stoull(text));
  } catch (const std::exception&) {
    throw std::runtime_error("CONVEYOR_FUZZ_CASES: not a number: '" + text + "'");
  }
}

std::optional<std::size_t> only_case() {
  const std::string text = env("CONVEYOR_FUZZ_ONLY");
  if (text.empty()) return std::nullopt;
  try {
    return static_cast<std::size_t>(std::stoull(text));
  } catch (const std::exception&) {
    throw std::runtime_error("CONVEYOR_FUZZ_ONLY: not a case index: '" + text + "'");
  }
}

Rng Rng::for_case(std::uint64_t seed, std::string_view test, std::size_t index) {
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a of the test name
  for (const char c : test) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return Rng(mix(seed ^ mix(h + 0x632BE59BD9B4E019ull * (index + 1))));
}

std::uint64_t Rng::next() {
  state_ += 0x9E3779B97F4A7C15ull;
  std::uint64_t z = state_;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::size_t Rng::below(std::size_t n) { return n == 0 ? 0 : static_cast<std::size_t>(next() % n); }

std::int64_t Rng::between(std::int64_t lo, std::int64_t hi) {
  if (hi <= lo) return lo;
  const auto span = static_cast<std::uint64_t>(hi - lo) + 1;
  return lo + static_cast<std::int64_t>(span == 0 ? next() : next() % span);
}

bool Rng::chance(double p) { return static_cast<double>(next() >> 11) * 0x1.0p-53 < p; }

std::size_t Rng::weighted(const std::vector<int>& weights) {
  int total = 0;
  for (int w : weights) total += w;
  auto r = static_cast<int>(below(static_cast<std::size_t>(total)));
  for (std::size_t i = 0; i < weights.size(); ++i) {
    if (r < weights[i]) return i;
    r -= weights[i];
  }
  return weights.size() - 1;
}

// ------------------------------------------------------------------ judging

std::string problem_violation(const RawResponse& r, bool head) {
  std::string media = lower(r.header("content-type"));
  media = media.substr(0, media.find(';'));
  while (!media.empty() && media.back() == ' ') media.pop_back();
  if (media != "application/problem+json") {
    return "error " + std::to_string(r.status) + " is not application/problem+json (Content-Type: '" +
           r.header("content-type") + "')";
  }
  if (head) return "";
  const json body = json::parse(r.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) {
    return "error " + std::to_string(r.status) + " body is not a JSON object: " + dump(r.body, 160);
  }
  const auto title = body.find("title");
  if (title == body.end() || !title->is_string()) return "problem without a string 'title'";
  const auto status = body.find("status");
  if (status == body.end() || !status->is_number_integer() || status->get<std::int64_t>() != r.status) {
    return "problem 'status' missing or not " + std::to_string(r.status);
  }
  const auto detail = body.find("detail");
  if (detail == body.end() || !detail->is_string()) return "problem without a string 'detail'";
  return "";
}

std::string judge(const Case& c, const RawResponse& r) {
  if (!r.ok) {
    if (c.may_close && r.no_bytes && !r.timed_out) return "";
    return "no answer: " + r.error;
  }
  const int s = r.status;
  if (s < 100 || s > 599) return "status " + std::to_string(s) + " out of range";
  const bool allowed_5xx = (s == 501 && c.invented_method) || (s == 503 && c.allow_503);
  if (s >= 500 && !allowed_5xx) return "server error " + std::to_string(s);
  if (!c.expect.empty() && c.expect.count(s) == 0) {
    return "expected " + join(c.expect) + ", got " + std::to_string(s);
  }
  if (c.forbid.count(s) != 0) return "got " + std::to_string(s) + ", which this case must not get";
  if (c.expect_error && s < 400)
    return "expected an error (4xx" + std::string(c.invented_method ? " or 501" : "") + "), got " + std::to_string(s);
  if (s >= 400) {
    const bool head = c.request.raw.empty() && c.request.method == "HEAD";
    return problem_violation(r, head);
  }
  return "";
}

// ------------------------------------------------------------------ runner

Memory memory_of(int pid) {
  Memory m;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    auto value = [&line] { return std::strtol(line.c_str() + line.find(':') + 1, nullptr, 10); };
    if (line.rfind("VmRSS:", 0) == 0) m.rss_kb = value();
    if (line.rfind("VmHWM:", 0) == 0) m.hwm_kb = value();
  }
  return m;
}

Runner::Runner(testing::Stack& stack, std::string test, std::string process, int max_restarts)
    : stack_(stack),
      test_(std::move(test)),
      process_(std::move(process)),
      max_restarts_(max_restarts),
      seed_(run_seed()),
      started_(Clock::now()) {
  sample_memory();
}

bool Runner::selected(std::size_t index) {
  const auto only = only_case();
  return !only || *only == index;
}

int Runner::port() const { return stack_.port(process_); }

std::string Runner::label() const { return process_ == "creation" ? "" : " (" + process_ + ")"; }

int Runner::pid() { return stack_.process(process_).pid(); }

void Runner::sample_memory() {
  const Memory m = memory_of(pid());
  if (m.hwm_kb > peak_hwm_kb_) peak_hwm_kb_ = m.hwm_kb;
  if (m.rss_kb >= 0) last_rss_kb_ = m.rss_kb;
}

std::string Runner::reproduce(std::optional<std::size_t> index) const {
  std::string out = "reproduce: CONVEYOR_FUZZ_SEED=" + std::to_string(seed_);
  if (index) out += " CONVEYOR_FUZZ_ONLY=" + std::to_string(*index);
  return out + " ctest --preset dev -R 'Fuzz\\." + test_ + "$' -V";
}

bool Runner::run(std::size_t index, const Case& c) {
  const auto t0 = Clock::now();
  // A structured request carries the stack's operator token unless the case
  // sets its own Authorization: the fuzzed bytes reach the handlers, not
  // only the guard (issue 12). Raw cases are sent exactly as written.
  RawRequest request = c.request;
  const bool has_auth = std::any_of(request.headers.begin(), request.headers.end(),
                                    [](const auto& h) { return strcasecmp(h.first.c_str(), "authorization") == 0; });
  if (request.raw.empty() && !has_auth) {
    request.headers.emplace_back("Authorization", "Bearer " + stack_.api_token());
  }
  const std::string bytes = serialise(request);
  ExchangeOptions o;
  o.timeout = c.timeout;
  o.head_request = c.request.raw.empty() && c.request.method == "HEAD";
  o.half_close = c.half_close;
  const RawResponse r = exchange(port(), bytes, o);
  const std::string why = judge(c, r);

  ClassStats& s = stats_[c.klass];
  ++s.sent;
  ++cases_;
  std::string outcome = r.ok ? std::to_string(r.status) : r.timed_out ? "timeout" : (r.no_bytes ? "closed" : "broken");
  ++s.outcomes[outcome];
  if (!r.ok && why.empty()) ++s.closed;
  if (!why.empty()) {
    ++s.failed;
    ++failures_;
    ++failed_classes_[c.klass];
    report(index, c, bytes, r, why);
  }
  sample_memory();
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  s.seconds += took;
  if (took > 2.0 && ++slow_ <= 20) {
    std::cout << "[fuzz] slow: " << test_ << label() << " case=" << index << " class=" << c.klass << " (" << c.note
              << ") took " << std::fixed << std::setprecision(1) << took << " s" << std::endl;
  }
  // Worth waiting a moment for the process to exit: no answer (other than
  // an allowed close) or a 5xx.
  const bool allowed_close = !r.ok && c.may_close && r.no_bytes && !r.timed_out;
  return survived(index, c, bytes, (!r.ok && !allowed_close) || r.status >= 500);
}

void Runner::report(std::size_t index, const Case& c, const std::string& bytes, const RawResponse& r,
                    const std::string& why) {
  // In detail: the first 3 failures of each class, 40 in all; then one
  // line each for the next hundred.
  if (reported_ >= 40 || reported_by_class_[c.klass] >= 3) {
    if (++one_liners_ <= 100) {
      std::cout << "[fuzz] FAIL " << test_ << label() << " case=" << index << " class=" << c.klass << " (" << c.note
                << "): " << dump(why, 300) << std::endl;
    }
    return;
  }
  ++reported_;
  ++reported_by_class_[c.klass];
  std::ostringstream m;
  m << "[fuzz] FAIL " << test_ << label() << " seed=" << seed_ << " case=" << index << " class=" << c.klass << " ("
    << c.note << "): " << why << "\n  request: " << dump(bytes, 500) << "\n  response: ";
  if (r.ok) {
    m << r.status_line << " | Content-Type: " << r.header("content-type") << " | " << dump(r.body, 300);
  } else {
    m << "(none) " << r.error;
  }
  m << "\n  " << reproduce(index);
  ADD_FAILURE() << m.str();
}

bool Runner::survived(std::size_t index, const Case& c, const std::string& bytes, bool suspicious) {
  testing::ChildProcess& p = stack_.process(process_);
  bool dead = !p.running();
  // A process killed while answering is reaped a moment after the reset.
  if (!dead && suspicious) dead = p.wait(300ms).has_value();
  if (!dead) return true;
  const std::optional<int> status = p.wait(0ms);
  ++failures_;
  ++failed_classes_[c.klass + " (crash)"];
  std::ostringstream m;
  m << "[fuzz] conveyor-" << process_ << " DIED (" << describe_exit(status) << ") on " << test_ << " seed=" << seed_
    << " case=" << index << " class=" << c.klass << " (" << c.note << ")\n  request: " << dump(bytes, 500) << "\n  "
    << reproduce(index) << "\n  its log ends:\n"
    << log_tail(stack_, process_);
  ADD_FAILURE() << m.str();
  std::cout << "[fuzz] conveyor-" << process_ << " died (" << describe_exit(status) << ") at case " << index
            << " class=" << c.klass << std::endl;
  if (restarts_ >= max_restarts_) {
    ADD_FAILURE() << "[fuzz] " << test_ << ": conveyor-" << process_ << " died " << (restarts_ + 1)
                  << " times; the remaining cases are not sent. " << reproduce(std::nullopt);
    return false;
  }
  ++restarts_;
  try {
    stack_.start(process_);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "[fuzz] conveyor-" << process_ << " could not be started again: " << e.what();
    return false;
  }
  std::cout << "[fuzz] conveyor-" << process_ << " started again (restart " << restarts_ << " of at most "
            << max_restarts_ << ")" << std::endl;
  sample_memory();
  return true;
}

bool Runner::healthz(std::chrono::milliseconds timeout) {
  const RawResponse r = get(port(), "/healthz", timeout);
  return r.ok && r.status == 200;
}

void Runner::expect_alive(const std::string& after) {
  testing::ChildProcess& p = stack_.process(process_);
  if (!p.running()) {
    ADD_FAILURE() << "[fuzz] conveyor-" << process_ << " is not running after " << after << " ("
                  << describe_exit(p.wait(0ms)) << "); " << reproduce(std::nullopt) << "\n  its log ends:\n"
                  << log_tail(stack_, process_);
    return;
  }
  const RawResponse r = get(port(), "/healthz", 2s);
  if (!r.ok || r.status != 200) {
    ADD_FAILURE() << "[fuzz] conveyor-" << process_ << " did not answer GET /healthz within 2 s after " << after << ": "
                  << (r.ok ? r.status_line : r.error) << "; " << reproduce(std::nullopt);
  }
}

void Runner::expect_memory_below(long limit_mb) {
  sample_memory();
  std::cout << "[fuzz] " << test_ << ": conveyor-" << process_ << " VmRSS " << last_rss_kb_ / 1024 << " MB, peak VmHWM "
            << peak_hwm_kb_ / 1024 << " MB (bound " << limit_mb << " MB"
            << (restarts_ > 0 ? ", over " + std::to_string(restarts_ + 1) + " incarnations" : std::string()) << ")"
            << std::endl;
  EXPECT_LT(peak_hwm_kb_, limit_mb * 1024)
      << "[fuzz] " << test_ << ": the resident set of conveyor-" << process_ << " peaked at " << peak_hwm_kb_ / 1024
      << " MB (VmHWM), over the " << limit_mb << " MB bound; " << reproduce(std::nullopt);
}

void Runner::summary() {
  const double secs = std::chrono::duration<double>(Clock::now() - started_).count();
  std::ostringstream out;
  out << "[fuzz] " << test_ << label() << " seed=" << seed_ << ": " << cases_ << " cases in " << std::fixed
      << std::setprecision(1) << secs << " s, " << failures_ << " failures, " << restarts_ << " restarts\n";
  out << "[fuzz]   " << std::left << std::setw(18) << "class" << std::right << std::setw(6) << "sent" << std::setw(8)
      << "failed" << std::setw(8) << "secs"
      << "  outcomes\n";
  for (const auto& [klass, s] : stats_) {
    out << "[fuzz]   " << std::left << std::setw(18) << klass << std::right << std::setw(6) << s.sent << std::setw(8)
        << s.failed << std::setw(8) << s.seconds << "  ";
    for (const auto& [outcome, n] : s.outcomes) out << outcome << "x" << n << " ";
    out << "\n";
  }
  std::cout << out.str() << std::flush;
  if (failures_ > reported_) {
    std::ostringstream m;
    m << "[fuzz] " << test_ << label() << ": " << failures_ << " failures in all (" << reported_
      << " shown above), by class:";
    for (const auto& [klass, n] : failed_classes_) m << " " << klass << "=" << n;
    m << "; " << reproduce(std::nullopt);
    ADD_FAILURE() << m.str();
  }
}

// ------------------------------------------------------------------ helpers

FuzzTypes::FuzzTypes() {
  const auto defaults = testing::migrations_dir().parent_path() / "config" / "job-types.json";
  std::ifstream in(defaults);
  if (!in) throw std::runtime_error("cannot read " + defaults.string());
  json file = json::parse(in);
  file["job_types"].push_back({
      {"name", "fuzz-any"},
      {"description", "fuzz test: any params object, so odd params reach PostgreSQL"},
      {"command", {"conveyor-example-task", "sleep", "0"}},
      {"timeout_s", 60},
      {"max_attempts", 1},
      {"retry_backoff_s", 0},
      {"params_schema", {{"type", "object"}}},
  });
  path_ = (std::filesystem::temp_directory_path() / (testing::unique_name("fuzz-types") + ".json")).string();
  std::ofstream(path_) << file.dump(2);
}

FuzzTypes::~FuzzTypes() {
  std::error_code ec;
  std::filesystem::remove(path_, ec);
}

testing::Stack::Options FuzzTypes::options(std::vector<std::string> services, int workers) const {
  testing::Stack::Options o;
  o.services = std::move(services);
  o.workers = workers;
  o.job_types_file = path_;
  return o;
}

std::string nested(Rng& rng, std::size_t depth, Nest kind, const std::string& leaf) {
  std::string open;
  std::string close;
  open.reserve(depth * 5);
  close.reserve(depth);
  for (std::size_t i = 0; i < depth; ++i) {
    const bool array = kind == Nest::arrays || (kind == Nest::mixed && rng.chance(0.5));
    open += array ? "[" : "{\"a\":";
    close += array ? ']' : '}';
  }
  std::reverse(close.begin(), close.end());
  return open + leaf + close;
}

std::string quote_raw(std::string_view bytes) {
  std::string out = "\"";
  for (const char ch : bytes) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\u%04x", c);
      out += esc;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

namespace {

// Raw deflate of `in` ending with `flush`, continuing `z`'s stream.
std::string deflate_raw(z_stream& z, std::string_view in, int flush) {
  std::string out;
  std::vector<unsigned char> buf(1 << 16);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  while (true) {
    z.next_out = buf.data();
    z.avail_out = static_cast<uInt>(buf.size());
    const int rc = deflate(&z, flush);
    if (rc == Z_STREAM_ERROR) throw std::runtime_error("deflate failed");
    out.append(reinterpret_cast<const char*>(buf.data()), buf.size() - z.avail_out);
    if (z.avail_out != 0 && z.avail_in == 0) break;
  }
  return out;
}

void put_le32(std::string& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

}  // namespace

std::string deflate_bomb(const std::string& prefix, std::size_t inflated, bool gzip_format) {
  // After Z_FULL_FLUSH the compressor forgets what came before, so every
  // 1 MiB of spaces compresses to the same bytes: compress one and repeat
  // it, then frame the raw deflate stream as gzip or zlib by hand.
  constexpr std::size_t kBlock = 1 << 20;
  const std::string spaces(kBlock, ' ');
  z_stream z{};
  if (deflateInit2(&z, 9, Z_DEFLATED, -15, 9, Z_RLE) != Z_OK) throw std::runtime_error("deflateInit2 failed");
  std::string stream = deflate_raw(z, prefix, Z_FULL_FLUSH);
  std::uint32_t crc = static_cast<std::uint32_t>(
      crc32(0L, reinterpret_cast<const Bytef*>(prefix.data()), static_cast<uInt>(prefix.size())));
  std::uint32_t adler = static_cast<std::uint32_t>(
      adler32(1L, reinterpret_cast<const Bytef*>(prefix.data()), static_cast<uInt>(prefix.size())));
  const auto block_crc = crc32(0L, reinterpret_cast<const Bytef*>(spaces.data()), kBlock);
  const auto block_adler = adler32(1L, reinterpret_cast<const Bytef*>(spaces.data()), kBlock);
  std::size_t left = inflated > prefix.size() ? inflated - prefix.size() : 0;
  std::string segment;
  while (left >= kBlock) {
    if (segment.empty()) {
      segment = deflate_raw(z, spaces, Z_FULL_FLUSH);
      stream += segment;
    } else {
      stream += segment;
    }
    crc = static_cast<std::uint32_t>(crc32_combine(crc, block_crc, kBlock));
    adler = static_cast<std::uint32_t>(adler32_combine(adler, block_adler, kBlock));
    left -= kBlock;
  }
  const std::string_view rest(spaces.data(), left);
  stream += deflate_raw(z, rest, Z_FINISH);
  crc = static_cast<std::uint32_t>(
      crc32_combine(crc, crc32(0L, reinterpret_cast<const Bytef*>(rest.data()), static_cast<uInt>(left)),
                    static_cast<z_off_t>(left)));
  adler = static_cast<std::uint32_t>(
      adler32_combine(adler, adler32(1L, reinterpret_cast<const Bytef*>(rest.data()), static_cast<uInt>(left)),
                      static_cast<z_off_t>(left)));
  deflateEnd(&z);

  std::string out;
  if (gzip_format) {
    out = std::string("\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03", 10);
    out += stream;
    put_le32(out, crc);
    put_le32(out, static_cast<std::uint32_t>(inflated & 0xffffffffu));
  } else {
    out = "\x78\xda";
    out += stream;
    for (int i = 3; i >= 0; --i) out += static_cast<char>((adler >> (8 * i)) & 0xff);
  }
  return out;
}

std::string gzip_of(std::string_view data) { return deflate_bomb(std::string(data), data.size(), true); }

bool have_brotli() {
#ifdef CONVEYOR_FUZZ_BROTLI
  return true;
#else
  return false;
#endif
}

std::string brotli_bomb(const std::string& prefix, std::size_t inflated) {
#ifdef CONVEYOR_FUZZ_BROTLI
  BrotliEncoderState* s = BrotliEncoderCreateInstance(nullptr, nullptr, nullptr);
  if (s == nullptr) throw std::runtime_error("BrotliEncoderCreateInstance failed");
  BrotliEncoderSetParameter(s, BROTLI_PARAM_QUALITY, 1);
  BrotliEncoderSetParameter(s, BROTLI_PARAM_LGWIN, 24);
  std::string out;
  std::string spaces(1 << 20, ' ');
  auto pump = [&](const char* data, std::size_t n, BrotliEncoderOperation op) {
    std::size_t avail_in = n;
    const auto* next_in = reinterpret_cast<const std::uint8_t*>(data);
    while (true) {
      std::size_t avail_out = 0;
      if (!BrotliEncoderCompressStream(s, op, &avail_in, &next_in, &avail_out, nullptr, nullptr)) {
        throw std::runtime_error("BrotliEncoderCompressStream failed");
      }
      while (BrotliEncoderHasMoreOutput(s)) {
        std::size_t size = 0;
        const std::uint8_t* chunk = BrotliEncoderTakeOutput(s, &size);
        out.append(reinterpret_cast<const char*>(chunk), size);
      }
      if (op == BROTLI_OPERATION_FINISH ? BrotliEncoderIsFinished(s) : avail_in == 0) break;
    }
  };
  pump(prefix.data(), prefix.size(), BROTLI_OPERATION_PROCESS);
  std::size_t left = inflated > prefix.size() ? inflated - prefix.size() : 0;
  while (left > 0) {
    const std::size_t n = std::min(left, spaces.size());
    pump(spaces.data(), n, BROTLI_OPERATION_PROCESS);
    left -= n;
  }
  pump(nullptr, 0, BROTLI_OPERATION_FINISH);
  BrotliEncoderDestroyInstance(s);
  return out;
#else
  (void)prefix;
  (void)inflated;
  return "";
#endif
}

std::optional<double> metric_sum(const std::string& text, const std::string& name) {
  std::optional<double> sum;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#' || line.rfind(name, 0) != 0) continue;
    std::size_t pos = name.size();
    if (pos >= line.size() || (line[pos] != '{' && line[pos] != ' ')) continue;
    if (line[pos] == '{') {
      pos = line.find('}', pos);
      if (pos == std::string::npos) continue;
      ++pos;
    }
    const double v = std::strtod(line.c_str() + pos, nullptr);
    sum = sum.value_or(0) + v;
  }
  return sum;
}

std::size_t metric_series(const std::string& text, const std::string& name) {
  std::size_t n = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name, 0) == 0 && line.size() > name.size() &&
        (line[name.size()] == '{' || line[name.size()] == ' ')) {
      ++n;
    }
  }
  return n;
}

RawResponse get(int port, const std::string& path, std::chrono::milliseconds timeout) {
  ExchangeOptions o;
  o.timeout = timeout;
  return exchange(port, "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", o);
}

std::string describe_exit(std::optional<int> status) {
  if (!status) return "no exit status";
  if (*status > 128) {
    const int sig = *status - 128;
    return "killed by signal " + std::to_string(sig) + " (" + strsignal(sig) + ")";
  }
  return "exited with status " + std::to_string(*status);
}

std::string log_tail(testing::Stack& stack, const std::string& process, std::size_t lines) {
  std::ifstream in(stack.data_dir() / (process + ".log"));
  std::vector<std::string> all;
  for (std::string l; std::getline(in, l);) all.push_back(l.size() > 400 ? l.substr(0, 400) + "..." : l);
  std::string out;
  for (std::size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) out += "    " + all[i] + "\n";
  return out;
}

}  // namespace conveyor::fuzz
