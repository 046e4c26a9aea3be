#pragma once
// The seeded fuzz test's machinery (issue 9): a reproducible RNG per case,
// the case type and its judgement (no 5xx, every error problem+json, the
// expected status when a case has one), a Runner that sends cases to a
// Stack's service and keeps it alive (a crash is reported with the case and
// the service restarted), per-class statistics, memory readings from /proc,
// and generators of request bodies, bombs and events.
//
// Reproducing: every run prints "[fuzz] seed=N"; a failure prints its case
// index. CONVEYOR_FUZZ_SEED=N reruns the same cases, CONVEYOR_FUZZ_ONLY=I
// sends only case I of each test, CONVEYOR_FUZZ_CASES=C sets the size of
// the random mix (default 3000).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "conveyor/testing/stack.hpp"
#include "raw_http.hpp"

namespace conveyor::fuzz {

// ------------------------------------------------------------------ seeds

// The run's seed: CONVEYOR_FUZZ_SEED, else random; printed once per process.
std::uint64_t run_seed();
// CONVEYOR_FUZZ_CASES or `fallback`.
std::size_t case_count(std::size_t fallback);
// CONVEYOR_FUZZ_ONLY: the one case index to send, if set.
std::optional<std::size_t> only_case();

// A small deterministic generator (splitmix64): the same seed gives the same
// cases with any standard library.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  // The generator of case `index` of test `test`, from the run's seed.
  static Rng for_case(std::uint64_t seed, std::string_view test, std::size_t index);
  std::uint64_t next();
  std::size_t below(std::size_t n);                        // [0, n), n > 0
  std::int64_t between(std::int64_t lo, std::int64_t hi);  // [lo, hi]
  bool chance(double p);
  template <class T>
  const T& pick(const std::vector<T>& items) {
    return items[below(items.size())];
  }
  // Index chosen with the given weights.
  std::size_t weighted(const std::vector<int>& weights);

 private:
  std::uint64_t state_;
};

// ------------------------------------------------------------------ cases

struct Case {
  std::string klass;  // "bad_json", "deep_nesting"... (statistics, reports)
  std::string note;   // what it is, for reports ("params nested 100000 deep")
  RawRequest request;
  // Statuses the case must get; empty: any status below 500.
  std::set<int> expect;
  bool expect_error = false;     // some 4xx (or 501 for invented methods) when expect is empty
  std::set<int> forbid;          // statuses it must not get (415 for a JSON content type)
  bool invented_method = false;  // 501 is allowed (and counts as an error)
  bool allow_503 = false;        // /readyz may say not ready
  bool may_close = false;        // malformed framing: closing without an answer is allowed
  bool half_close = false;       // shutdown(SHUT_WR) after the request
  std::chrono::milliseconds timeout{10000};
};

// "" when the response is acceptable for the case, else why not.
std::string judge(const Case& c, const RawResponse& r);
// "" when `r` is an RFC 9457 problem: Content-Type application/problem+json
// and (unless `head`) a JSON object with title, status (= the response's)
// and detail.
std::string problem_violation(const RawResponse& r, bool head);

// ------------------------------------------------------------------ runner

struct Memory {
  long rss_kb = -1;  // VmRSS
  long hwm_kb = -1;  // VmHWM: the peak resident set
};
Memory memory_of(int pid);

// Sends cases to one process of a Stack (its HTTP port), judges them, keeps
// statistics, and reports failures with the seed, the case index and a
// truncated dump of the request and response. When the process dies, the
// failure names the case that killed it (exit status, log tail) and the
// process is started again, at most `max_restarts` times.
class Runner {
 public:
  Runner(testing::Stack& stack, std::string test, std::string process = "creation", int max_restarts = 4);

  // Whether case `index` is to be sent (CONVEYOR_FUZZ_ONLY).
  static bool selected(std::size_t index);
  // Sends case `index`; false when the test should stop (the process died
  // more than max_restarts times).
  bool run(std::size_t index, const Case& c);
  int port() const;
  int pid();
  // GET /healthz answered 200 within `timeout`.
  bool healthz(std::chrono::milliseconds timeout = std::chrono::seconds(2));
  // Adds a failure unless the process runs and answers /healthz within 2 s.
  void expect_alive(const std::string& after);
  // Adds a failure unless the peak resident set of every incarnation of the
  // process stayed under `limit_mb`.
  void expect_memory_below(long limit_mb);
  // Prints per-class counts and statuses; adds one failure summarising the
  // failures not reported one by one.
  void summary();
  std::size_t failures() const { return failures_; }
  std::uint64_t seed() const { return seed_; }
  const std::string& test() const { return test_; }
  // A failure report's reproduction hint.
  std::string reproduce(std::optional<std::size_t> index) const;
  // " (execution)" for a process other than creation, for reports.
  std::string label() const;
  // Samples the process's memory (peak kept across incarnations).
  void sample_memory();

 private:
  struct ClassStats {
    std::size_t sent = 0;
    std::size_t failed = 0;
    std::size_t closed = 0;                       // answered by closing (allowed for malformed framing)
    double seconds = 0;                           // spent sending, answering and judging
    std::map<std::string, std::size_t> outcomes;  // "400", "closed", "no answer"...
  };
  void report(std::size_t index, const Case& c, const std::string& bytes, const RawResponse& r, const std::string& why);
  // After a case: was the process killed by it? Reports and restarts.
  bool survived(std::size_t index, const Case& c, const std::string& bytes, bool suspicious);

  testing::Stack& stack_;
  std::string test_;
  std::string process_;
  int max_restarts_;
  int restarts_ = 0;
  std::uint64_t seed_;
  std::size_t failures_ = 0;
  std::size_t reported_ = 0;
  std::size_t one_liners_ = 0;
  std::size_t slow_ = 0;
  std::map<std::string, std::size_t> reported_by_class_;
  std::size_t cases_ = 0;
  std::map<std::string, ClassStats> stats_;
  std::map<std::string, std::size_t> failed_classes_;
  long peak_hwm_kb_ = 0;
  long last_rss_kb_ = 0;
  Clock::time_point started_;
};

// ------------------------------------------------------------------ helpers

// The example job types plus "fuzz-any" (params: any object, so odd params
// reach PostgreSQL; a zero-second sleep without sinks), in a file of their
// own that the destructor removes. options(): a Stack of those services
// (default only conveyor-creation, no workers) with these job types.
class FuzzTypes {
 public:
  FuzzTypes();
  ~FuzzTypes();
  FuzzTypes(const FuzzTypes&) = delete;
  FuzzTypes& operator=(const FuzzTypes&) = delete;
  testing::Stack::Options options(std::vector<std::string> services = {"creation"}, int workers = 0) const;

 private:
  std::string path_;
};

// A JSON value nested `depth` levels deep around `leaf`: arrays ("[[[1]]]"),
// objects ('{"a":{"a":1}}') or a random mix of both.
enum class Nest { arrays, objects, mixed };
std::string nested(Rng& rng, std::size_t depth, Nest kind, const std::string& leaf = "1");

// A JSON string literal of `bytes`: quotes, backslashes and control
// characters escaped, everything else (invalid UTF-8 too) passed as is.
std::string quote_raw(std::string_view bytes);

// Compressed bodies. gzip/zlib: deflate of `prefix` followed by spaces up to
// `inflated` bytes (zlib1g); brotli likewise when built with libbrotlienc
// (empty string otherwise).
std::string deflate_bomb(const std::string& prefix, std::size_t inflated, bool gzip_format);
std::string gzip_of(std::string_view data);
bool have_brotli();
std::string brotli_bomb(const std::string& prefix, std::size_t inflated);

// Sum of the samples of metric `name` in Prometheus text (any labels).
std::optional<double> metric_sum(const std::string& text, const std::string& name);
// Number of samples (series) of metric `name`.
std::size_t metric_series(const std::string& text, const std::string& name);

// GET `path` on 127.0.0.1:port through the raw client.
RawResponse get(int port, const std::string& path, std::chrono::milliseconds timeout = std::chrono::seconds(5));

// "signal 11 (Segmentation fault)" or "exit 1" from a ChildProcess status.
std::string describe_exit(std::optional<int> status);
// The last `lines` lines of a process log in the stack's data dir.
std::string log_tail(testing::Stack& stack, const std::string& process, std::size_t lines = 15);

// The random mix: case `index`. Classes and weights are in generators.cpp.
Case random_case(Rng& rng);
// A random case for the admin endpoints every service has.
Case random_admin_case(Rng& rng);
// An HTTP method token that no server knows ("FROB", "x-Y~").
std::string invented_method(Rng& rng);
// A fuzz-any submission of about `size` bytes (a long string in params).
std::string padded_submit(std::size_t size);

// A JSON string literal of 1-6 random atoms: valid UTF-8 pieces, invalid
// UTF-8, JSON escapes (U+0000 among them) and invalid escapes (a lone
// surrogate, "\u12"). `invalid`: no JSON parser may accept it.
struct UnicodeLiteral {
  std::string text;  // "\"...\""
  bool invalid = false;
  bool nul = false;  // decodes to a string holding U+0000
};
UnicodeLiteral unicode_literal(Rng& rng);

}  // namespace conveyor::fuzz
