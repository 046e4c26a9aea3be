// Seeded fuzz test of the REST API and of the event consumers (issue 9), on
// real processes (conveyor::testing::Stack). Each TEST is one class of
// what a fuzzer found, so a failure is named; RandomRequests is the
// generated mix (CONVEYOR_FUZZ_CASES, default 3000). Every HTTP case must
// get: no 5xx (501 only for invented methods), every error as
// application/problem+json with title/status/detail, the expected status
// where the case has one; the service must stay up and answer /healthz,
// and its resident set stay bounded. See fuzz.hpp for reproducing a case.
#include "fuzz.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "conveyor/bus/cloudevent.hpp"
#include "conveyor/bus/kafka.hpp"
#include "conveyor/bus/topics.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/http/client.hpp"
#include "conveyor/testing/stack.hpp"
#include "conveyor/testing/testing.hpp"

namespace {

using namespace conveyor::fuzz;
using conveyor::testing::Stack;
using conveyor::testing::wait_until;
using json = nlohmann::json;
using namespace std::chrono_literals;

constexpr long kMemoryBoundMb = 150;
constexpr std::size_t kMiB = 1024 * 1024;

RawRequest json_post(const std::string& method, const std::string& target, std::string body,
                     const std::string& content_type = "application/json") {
  RawRequest r;
  r.method = method;
  r.target = target;
  if (!content_type.empty()) r.headers.emplace_back("Content-Type", content_type);
  r.body = std::move(body);
  return r;
}

Case make_case(std::string klass, std::string note, RawRequest request, std::set<int> expect = {}) {
  Case c;
  c.klass = std::move(klass);
  c.note = std::move(note);
  c.request = std::move(request);
  c.expect = std::move(expect);
  return c;
}

// Sends a fixed list of cases (index = position in the list).
void run_all(Runner& runner, const std::vector<Case>& cases) {
  for (std::size_t i = 0; i < cases.size(); ++i) {
    if (!Runner::selected(i)) continue;
    if (!runner.run(i, cases[i])) break;
  }
}

std::size_t jitter(Rng& rng, std::size_t n) { return n - n / 10 + rng.below(n / 10 + 1); }

// ------------------------------------------------------------------ classes

// 1. Deeply nested JSON: 400 problem+json (a depth limit ~64), never a crash.
TEST(Fuzz, DeepNesting) {
  FuzzTypes types;
  Stack stack(types.options());
  Runner runner(stack, "DeepNesting", "creation", 12);
  Rng rng = Rng::for_case(runner.seed(), "DeepNesting", 0);

  const std::size_t arrays = jitter(rng, 110000);  // ~220 KB
  const std::size_t objects = jitter(rng, 48000);  // ~290 KB
  const std::size_t mixed = jitter(rng, 60000);    // <= 300 KB
  const std::string any = "{\"job_type\":\"fuzz-any\",\"params\":{\"a\":";
  std::vector<Case> cases;
  auto add = [&](const std::string& note, const std::string& method, const std::string& target, const std::string& body,
                 std::set<int> expect) {
    Case c = make_case("deep_nesting", note, json_post(method, target, body), std::move(expect));
    c.timeout = 30s;
    cases.push_back(std::move(c));
  };
  add("fuzz-any params nested " + std::to_string(arrays) + " deep (arrays)", "POST", "/v1/jobs",
      any + nested(rng, arrays, Nest::arrays) + "}}", {400});
  add("fuzz-any params nested " + std::to_string(objects) + " deep (objects)", "POST", "/v1/jobs",
      any + nested(rng, objects, Nest::objects) + "}}", {400});
  add("sleep params nested " + std::to_string(mixed) + " deep (mixed)", "POST", "/v1/jobs",
      "{\"job_type\":\"sleep\",\"params\":{\"seconds\":" + nested(rng, mixed, Nest::mixed) + "}}", {400});
  add("the whole body nested " + std::to_string(arrays) + " deep", "POST", "/v1/jobs",
      nested(rng, arrays, Nest::arrays), {400});
  add("depends_on nested " + std::to_string(arrays) + " deep", "POST", "/v1/jobs",
      "{\"job_type\":\"sleep\",\"depends_on\":" + nested(rng, arrays, Nest::arrays) + "}", {400});
  add("PATCH image_tags nested " + std::to_string(objects) + " deep (objects)", "PATCH", "/v1/parameters",
      "{\"image_tags\":{\"worker\":" + nested(rng, objects, Nest::objects, "\"1.0\"") + "}}", {400});
  add("PATCH image_tags nested " + std::to_string(arrays) + " deep (arrays)", "PATCH", "/v1/parameters",
      "{\"image_tags\":{\"worker\":" + nested(rng, arrays, Nest::arrays, "\"1.0\"") + "}}", {400});
  add("PATCH schedule_catchup_start nested " + std::to_string(mixed) + " deep", "PATCH", "/v1/parameters",
      "{\"schedule_catchup_start\":{\"x\":" + nested(rng, mixed, Nest::mixed) + "}}", {400});
  add("fuzz-any params nested 3000 deep (PostgreSQL's jsonb limit without ours)", "POST", "/v1/jobs",
      any + nested(rng, 3000, Nest::arrays) + "}}", {400});
  add("fuzz-any params nested 1000 deep (objects)", "POST", "/v1/jobs", any + nested(rng, 1000, Nest::objects) + "}}",
      {400});
  add("PATCH image_tags nested 3000 deep", "PATCH", "/v1/parameters",
      "{\"image_tags\":{\"worker\":" + nested(rng, 3000, Nest::mixed, "\"1.0\"") + "}}", {400});
  add("unclosed arrays " + std::to_string(arrays) + " deep", "POST", "/v1/jobs", any + std::string(arrays, '['), {400});
  add("fuzz-any params nested 100 deep (above a ~64 limit: no 5xx)", "POST", "/v1/jobs",
      any + nested(rng, 100, Nest::mixed) + "}}", {});
  // Control: shallow nesting is accepted (the limit is not absurdly low).
  add("fuzz-any params nested 16 deep (accepted)", "POST", "/v1/jobs", any + nested(rng, 16, Nest::mixed) + "}}",
      {200, 201});

  run_all(runner, cases);
  runner.expect_alive("the deep nesting cases");
  runner.expect_memory_below(kMemoryBoundMb);
  runner.summary();
}

// 2. Body limits: 1 MiB, also for chunked bodies and after Content-Encoding.
TEST(Fuzz, BodyLimits) {
  FuzzTypes types;
  Stack stack(types.options());
  Runner runner(stack, "BodyLimits", "creation", 12);
  Rng rng = Rng::for_case(runner.seed(), "BodyLimits", 0);

  std::vector<std::size_t> chunks;
  for (int i = 0; i < 5; ++i) chunks.push_back(1 + rng.below(64 * 1024));
  const std::string small = "{\"job_type\":\"sleep\",\"params\":{\"seconds\":0}}";

  std::vector<Case> cases;
  auto add = [&](Case c) {
    c.klass = "body_limits";
    if (c.timeout < 60s) c.timeout = 60s;
    cases.push_back(std::move(c));
  };
  add(make_case("", "Content-Length body of 1 MiB + 1", json_post("POST", "/v1/jobs", padded_submit(kMiB + 1)), {413}));
  add(make_case("", "Content-Length body of 2 MiB", json_post("POST", "/v1/jobs", padded_submit(2 * kMiB)), {413}));
  {
    Case c = make_case("", "chunked body of 2 MiB", json_post("POST", "/v1/jobs", padded_submit(2 * kMiB)), {413});
    c.request.framing = RawRequest::Framing::chunked;
    c.request.chunk_sizes = chunks;
    add(std::move(c));
  }
  {
    Case c = make_case("", "chunked body of 24 MiB", json_post("POST", "/v1/jobs", padded_submit(24 * kMiB)), {413});
    c.request.framing = RawRequest::Framing::chunked;
    c.request.chunk_sizes = chunks;
    add(std::move(c));
  }
  {
    std::string body = "{\"image_tags\":{\"worker\":\"" + std::string(2 * kMiB, 'x') + "\"}}";
    Case c = make_case("", "PATCH chunked body of 2 MiB", json_post("PATCH", "/v1/parameters", body), {413});
    c.request.framing = RawRequest::Framing::chunked;
    c.request.chunk_sizes = chunks;
    add(std::move(c));
  }
  const std::size_t gz_inflated = 250 * kMiB;
  const std::string gz = deflate_bomb(small, gz_inflated, true);
  std::cout << "[fuzz] BodyLimits: gzip bomb " << gz.size() / 1024 << " KB inflating to " << gz_inflated / kMiB
            << " MiB" << std::endl;
  {
    RawRequest r = json_post("POST", "/v1/jobs", gz);
    r.headers.emplace_back("Content-Encoding", "gzip");
    add(make_case("", "gzip body of " + std::to_string(gz.size() / 1024) + " KB inflating to 250 MiB", r, {413, 415}));
    r.framing = RawRequest::Framing::chunked;
    r.chunk_sizes = chunks;
    add(make_case("", "the same gzip body, chunked", r, {413, 415}));
  }
  {
    RawRequest r = json_post("PATCH", "/v1/parameters", deflate_bomb("{\"log_retention_days\":30}", 64 * kMiB, true));
    r.headers.emplace_back("Content-Encoding", "gzip");
    add(make_case("", "PATCH gzip body inflating to 64 MiB", r, {413, 415}));
  }
  {
    RawRequest r = json_post("POST", "/v1/jobs", deflate_bomb(small, 128 * kMiB, false));
    r.headers.emplace_back("Content-Encoding", "deflate");
    add(make_case("", "deflate body inflating to 128 MiB", r, {413, 415}));
  }
  if (have_brotli()) {
    const std::size_t br_inflated = 1024 * kMiB;
    const auto t0 = Clock::now();
    const std::string br = brotli_bomb(small, br_inflated);
    std::cout << "[fuzz] BodyLimits: brotli bomb " << br.size() / 1024 << " KB inflating to " << br_inflated / kMiB
              << " MiB (made in " << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count()
              << " ms)" << std::endl;
    RawRequest r = json_post("POST", "/v1/jobs", br);
    r.headers.emplace_back("Content-Encoding", "br");
    add(make_case("", "br body of " + std::to_string(br.size() / 1024) + " KB inflating to 1 GiB", r, {413, 415}));
  } else {
    std::cout << "[fuzz] BodyLimits: built without libbrotlienc: no br case" << std::endl;
  }
  {
    // Over the limit on the wire already (incompressible bytes).
    std::string noise(3 * kMiB / 2, '\0');
    for (char& ch : noise) ch = static_cast<char>(rng.below(256));
    RawRequest r = json_post("POST", "/v1/jobs", noise);
    r.headers.emplace_back("Content-Encoding", "gzip");
    add(make_case("", "1.5 MiB of (invalid) gzip on the wire", r, {413, 415}));
  }
  // Controls: small encoded or chunked bodies and a 512 KiB plain one are not "too large".
  {
    RawRequest r = json_post("POST", "/v1/jobs", gzip_of(small));
    r.headers.emplace_back("Content-Encoding", "gzip");
    Case c = make_case("", "small gzip submission", r);
    c.forbid = {413};
    add(std::move(c));
  }
  {
    Case c = make_case("", "small chunked submission", json_post("POST", "/v1/jobs", small));
    c.request.framing = RawRequest::Framing::chunked;
    c.request.chunk_sizes = {7, 3};
    c.forbid = {413};
    add(std::move(c));
  }
  add(make_case("", "512 KiB submission", json_post("POST", "/v1/jobs", padded_submit(512 * 1024)), {200, 201}));

  run_all(runner, cases);
  runner.expect_alive("the body limit cases");
  runner.expect_memory_below(kMemoryBoundMb);
  runner.summary();
}

// 3. Slowloris: connections trickling their headers must not stop /healthz.
TEST(Fuzz, Slowloris) {
  FuzzTypes types;
  Stack stack(types.options());
  Runner runner(stack, "Slowloris");
  Rng rng = Rng::for_case(runner.seed(), "Slowloris", 0);
  const std::size_t connections = 8 + rng.below(9);  // 8..16
  const auto pace = std::chrono::milliseconds(2000 + rng.below(1001));
  const auto attack = 20s;
  const int port = runner.port();
  ASSERT_TRUE(runner.healthz(2s)) << "conveyor-creation does not answer /healthz before the attack";

  std::atomic<bool> stop{false};
  std::atomic<int> opened{0};
  std::atomic<int> dropped{0};
  std::mutex mu;
  std::condition_variable cv;
  std::thread attacker([&] {
    const std::string prefix = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    std::vector<RawConnection> conns(connections);
    while (!stop) {
      for (auto& c : conns) {
        if (c.is_open() && c.peer_closed()) {
          ++dropped;  // the server gave up on it: open another, as an attacker would
          c.close();
        }
        if (!c.is_open()) {
          if (!c.connect(port, Clock::now() + 1s)) continue;
          ++opened;
          if (!c.write(prefix, Clock::now() + 1s)) c.close();
          continue;
        }
        if (!c.write("a", Clock::now() + 500ms)) {
          ++dropped;
          c.close();
        }
      }
      std::unique_lock lock(mu);
      cv.wait_for(lock, pace, [&] { return stop.load(); });  // pacing, not synchronisation
    }
  });

  wait_until([&] { return opened.load() >= static_cast<int>(connections); }, 5s);
  std::vector<std::string> failed;
  int probes = 0;
  long slowest = 0;
  const auto started = Clock::now();
  while (Clock::now() - started < attack) {
    const auto at = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count();
    const RawResponse r = get(port, "/healthz", 2s);
    ++probes;
    slowest = std::max<long>(slowest, static_cast<long>(r.elapsed.count()));
    if (!r.ok || r.status != 200) {
      failed.push_back("+" + std::to_string(at) + " ms: " + (r.ok ? r.status_line : r.error));
    }
    std::unique_lock lock(mu);
    cv.wait_for(lock, 1s, [] { return false; });  // one probe a second
  }
  {
    std::lock_guard lock(mu);
    stop = true;
  }
  cv.notify_all();
  attacker.join();

  std::cout << "[fuzz] Slowloris seed=" << runner.seed() << ": " << connections << " connections, a byte every "
            << pace.count() << " ms for " << std::chrono::duration_cast<std::chrono::seconds>(attack).count() << " s; "
            << opened.load() << " opened, " << dropped.load() << " dropped by the server; " << probes
            << " probes of /healthz, " << failed.size() << " failed, slowest " << slowest << " ms" << std::endl;
  if (!failed.empty()) {
    std::string list;
    for (std::size_t i = 0; i < failed.size() && i < 10; ++i) list += "\n  " + failed[i];
    ADD_FAILURE() << "[fuzz] Slowloris: " << failed.size() << " of " << probes
                  << " GET /healthz probes got no 200 within 2 s while " << connections
                  << " connections sent a header byte every " << pace.count() << " ms:" << list << "\n  "
                  << runner.reproduce(std::nullopt);
  }
  runner.expect_alive("the slow connections closed");
}

// 4. Invented methods must not add a /metrics series each.
TEST(Fuzz, MetricsCardinality) {
  FuzzTypes types;
  Stack stack(types.options());
  Runner runner(stack, "MetricsCardinality");
  const RawResponse before = get(runner.port(), "/metrics");
  ASSERT_TRUE(before.ok && before.status == 200) << before.error;

  constexpr std::size_t kRequests = 3000;
  for (std::size_t i = 0; i < kRequests; ++i) {
    if (!Runner::selected(i)) continue;
    Rng rng = Rng::for_case(runner.seed(), "MetricsCardinality", i);
    Case c;
    c.klass = "invented_method";
    const std::string method = invented_method(rng);
    const std::string path = rng.chance(0.5) ? "/v1/jobs" : "/x" + std::to_string(rng.below(1000000));
    c.note = method + " " + path;
    c.request.method = method;
    c.request.target = path;
    c.expect_error = true;
    c.invented_method = true;
    if (!runner.run(i, c)) break;
  }
  const RawResponse after = get(runner.port(), "/metrics");
  ASSERT_TRUE(after.ok && after.status == 200) << after.error;
  const std::string series = "conveyor_http_requests_total";
  std::cout << "[fuzz] MetricsCardinality: /metrics " << before.body.size() / 1024 << " KB with "
            << metric_series(before.body, series) << " " << series << " series before, " << after.body.size() / 1024
            << " KB with " << metric_series(after.body, series) << " after " << kRequests
            << " requests with invented methods" << std::endl;
  EXPECT_LT(after.body.size(), 200u * 1024)
      << "[fuzz] MetricsCardinality: /metrics grew from " << before.body.size() << " to " << after.body.size()
      << " bytes (" << metric_series(after.body, series) << " " << series << " series): a label per invented method; "
      << runner.reproduce(std::nullopt);
  const std::size_t grown = metric_series(after.body, series) -
                            std::min(metric_series(after.body, series), metric_series(before.body, series));
  EXPECT_LE(grown, 50u) << "[fuzz] MetricsCardinality: " << grown << " new " << series << " series after " << kRequests
                        << " requests with invented methods (their methods must share a label); "
                        << runner.reproduce(std::nullopt);
  runner.expect_alive("the invented methods");
  runner.summary();
}

// 5. The small ones: wrapped priorities, NUL in strings, nesting PostgreSQL
//    refuses, non-JSON content types, a Range that gets 416.
TEST(Fuzz, SmallOnes) {
  FuzzTypes types;
  Stack stack(types.options());
  Runner runner(stack, "SmallOnes", "creation", 8);
  Rng rng = Rng::for_case(runner.seed(), "SmallOnes", 0);
  const std::string sleep_params = "\"params\":{\"seconds\":0}";
  std::vector<Case> cases;
  auto add = [&](const std::string& klass, const std::string& note, RawRequest r, std::set<int> expect) {
    cases.push_back(make_case(klass, note, std::move(r), std::move(expect)));
  };
  const std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
  for (const std::uint64_t k : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{2 + rng.below(1u << 30)}}) {
    const std::string p = std::to_string(max - k);
    add("priority", "priority " + p + " (2^64-" + std::to_string(k + 1) + ")",
        json_post("POST", "/v1/jobs", "{\"job_type\":\"sleep\"," + sleep_params + ",\"priority\":" + p + "}"), {400});
  }
  for (const char* p : {"9223372036854775808", "2147483648", "-2147483649", "1e400", "1.0"}) {
    add("priority", std::string("priority ") + p,
        json_post("POST", "/v1/jobs", "{\"job_type\":\"sleep\"," + sleep_params + ",\"priority\":" + p + "}"), {400});
  }
  add("priority", "depends_on [2^64-1]",
      json_post("POST", "/v1/jobs",
                "{\"job_type\":\"sleep\"," + sleep_params + ",\"depends_on\":[18446744073709551615]}"),
      {400});

  add("nul", "job_type \"sleep\\u0000x\"",
      json_post("POST", "/v1/jobs", "{\"job_type\":\"sleep\\u0000x\"," + sleep_params + "}"), {400});
  add("nul", "job_type \"\\u0000\"", json_post("POST", "/v1/jobs", "{\"job_type\":\"\\u0000\"," + sleep_params + "}"),
      {400});
  add("nul", "a NUL in a params value",
      json_post("POST", "/v1/jobs", "{\"job_type\":\"fuzz-any\",\"params\":{\"s\":\"a\\u0000b\"}}"), {400, 422});
  add("nul", "a NUL in a params key",
      json_post("POST", "/v1/jobs", "{\"job_type\":\"fuzz-any\",\"params\":{\"a\\u0000\":1}}"), {400, 422});
  add("nul", "a NUL in a tile",
      json_post("POST", "/v1/jobs",
                "{\"job_type\":\"fsc-rlie\",\"params\":{\"tile\":\"T\\u0000X\",\"date\":\"2026-01-"
                "01\"}}"),
      {400, 422});
  add("nul", "a NUL in not_accepting_reason",
      json_post("PATCH", "/v1/parameters", "{\"not_accepting_reason\":\"x\\u0000y\"}"), {400, 422});
  {
    RawRequest r = json_post("POST", "/v1/jobs", "{\"job_type\":\"sleep\"," + sleep_params + "}");
    r.headers.emplace_back("Idempotency-Key", "k\xff\xfe");
    add("encoding", "Idempotency-Key of invalid UTF-8", r, {});
  }
  {
    RawRequest r;
    r.target = "/v1/jobs?type=%FF%FE&status=";
    add("encoding", "?type= of invalid UTF-8", r, {});
    r.target = "/v1/job-types/%00";
    add("encoding", "a job type name with a NUL", r, {});
    r.target = "/v1/job-types/%C0%80";
    add("encoding", "a job type name with an overlong NUL", r, {});
  }

  const std::string any = "{\"job_type\":\"fuzz-any\",\"params\":{\"a\":";
  add("pg_depth", "params nested 3000 deep (arrays)",
      json_post("POST", "/v1/jobs", any + nested(rng, 3000, Nest::arrays) + "}}"), {400});
  add("pg_depth", "params nested 3000 deep (objects)",
      json_post("POST", "/v1/jobs", any + nested(rng, 3000, Nest::objects) + "}}"), {400});
  for (const std::size_t depth : {std::size_t{10000}, std::size_t{20000}}) {
    add("pg_depth", "params nested " + std::to_string(depth) + " deep (objects)",
        json_post("POST", "/v1/jobs", any + nested(rng, depth, Nest::objects) + "}}"), {400});
  }
  add("pg_depth", "image_tags nested 3000 deep",
      json_post("PATCH", "/v1/parameters", "{\"image_tags\":{\"w\":" + nested(rng, 3000, Nest::mixed, "\"x\"") + "}}"),
      {400});

  const std::string body = "{\"job_type\":\"sleep\"," + sleep_params + "}";
  for (const char* ct :
       {"text/plain", "text/plain; charset=utf-8", "text/html", "application/xml", "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz", "application/octet-stream"}) {
    add("content_type", std::string("POST /v1/jobs as ") + ct, json_post("POST", "/v1/jobs", body, ct), {415});
  }
  add("content_type", "PATCH /v1/parameters as text/plain",
      json_post("PATCH", "/v1/parameters", "{\"log_retention_days\":30}", "text/plain"), {415});
  add("content_type", "PATCH /v1/parameters as application/x-www-form-urlencoded",
      json_post("PATCH", "/v1/parameters", "log_retention_days=30", "application/x-www-form-urlencoded"), {415});

  // A Range answer that is an error must still be problem+json (judge()).
  for (const char* path : {"/healthz", "/v1/jobs/999999", "/nope", "/v1/jobs/abc"}) {
    for (const char* range : {"bytes=5-1", "bytes=abc", "bytes=100000-", "bytes=0-5", "bytes=-0"}) {
      RawRequest r;
      r.target = path;
      r.headers.emplace_back("Range", range);
      add("range", std::string("GET ") + path + " Range: " + range, r, {});
    }
  }

  run_all(runner, cases);
  runner.expect_alive("the small cases");
  runner.expect_memory_below(kMemoryBoundMb);
  runner.summary();
}

// The unicode class's oracle: a literal it calls invalid is refused by an
// independent parser (nlohmann's, strict UTF-8 and surrogates), one it calls
// valid is accepted, and U+0000 is in the string exactly when it says so.
// Atoms joined at random once made a valid character from two invalid ones
// ("\\ud800" then "\\udc00"), and the API rightly answered 201 to a case
// that expected 400.
TEST(Fuzz, UnicodeLiteralsAreWhatTheyClaim) {
  const std::uint64_t seed = run_seed();
  std::size_t invalid = 0;
  for (std::size_t i = 0; i < 200000; ++i) {
    Rng rng = Rng::for_case(seed, "UnicodeLiterals", i);
    const UnicodeLiteral l = unicode_literal(rng);
    const json parsed = json::parse(l.text, nullptr, /*allow_exceptions=*/false);
    const std::string where = "seed=" + std::to_string(seed) + " literal " + std::to_string(i) + ": " + l.text;
    if (l.invalid) {
      ++invalid;
      ASSERT_TRUE(parsed.is_discarded()) << "called invalid but parses, " << where;
    } else {
      ASSERT_TRUE(parsed.is_string()) << "called valid but does not parse, " << where;
      EXPECT_EQ(parsed.get_ref<const std::string&>().find('\0') != std::string::npos, l.nul) << where;
    }
  }
  // Both kinds are drawn often enough to matter.
  EXPECT_GT(invalid, 50000u);
  EXPECT_LT(invalid, 180000u);
}

// The generated mix: CONVEYOR_FUZZ_CASES cases (default 3000) of every class.
TEST(Fuzz, RandomRequests) {
  FuzzTypes types;
  Stack stack(types.options());
  Runner runner(stack, "RandomRequests", "creation", 40);
  const std::size_t n = case_count(3000);
  std::cout << "[fuzz] RandomRequests: " << n << " cases" << std::endl;
  for (std::size_t i = 0; i < n; ++i) {
    if (!Runner::selected(i)) continue;
    Rng rng = Rng::for_case(runner.seed(), "RandomRequests", i);
    const Case c = random_case(rng);
    if (!runner.run(i, c)) break;
    if ((i + 1) % 100 == 0) runner.expect_alive(std::to_string(i + 1) + " cases");
  }
  runner.expect_alive("the random mix");
  runner.expect_memory_below(kMemoryBoundMb);
  runner.summary();
}

// The admin endpoints of every other service (the same HTTP server).
TEST(Fuzz, OtherServices) {
  FuzzTypes types;
  Stack stack(types.options({"creation", "configuration", "execution", "publication", "monitor"}, 1));
  constexpr std::size_t kCases = 150;
  for (const std::string& name : stack.names()) {
    if (name == "creation") continue;  // RandomRequests
    Runner runner(stack, "OtherServices", name, 4);
    for (std::size_t i = 0; i < kCases; ++i) {
      if (!Runner::selected(i)) continue;
      Rng rng = Rng::for_case(runner.seed(), "OtherServices/" + name, i);
      if (!runner.run(i, random_admin_case(rng))) break;
    }
    runner.expect_alive(std::to_string(kCases) + " cases");
    runner.expect_memory_below(kMemoryBoundMb);
    runner.summary();
  }
}

// ------------------------------------------------------------------ events

struct Poison {
  std::string topic;
  std::string key;
  std::string value;
  std::string what;
  bool surely_invalid = false;  // decode() rejects it today: every fixed consumer counts it
  bool acked = false;
};

// Whether conveyor's decoder rejects `value` (only called on small, shallow
// values: the dangerous ones are the point of the test, not of this check).
bool rejected(const std::string& value, bool* escapes) {
  try {
    conveyor::bus::decode(value);
    return false;
  } catch (const conveyor::Error&) {
    return true;
  } catch (const std::exception&) {
    *escapes = true;  // not conveyor::Error: the runtime's consumer would not catch it
    return true;
  }
}

std::string envelope(const std::string& type, const std::string& time, const std::string& data) {
  std::string e = "{\"specversion\":\"1.0\",\"id\":\"fuzz-" + std::to_string(std::hash<std::string>{}(data) % 100000) +
                  "\",\"source\":\"fuzz\",\"type\":\"" + type + "\",\"subject\":\"1\"";
  if (!time.empty()) e += ",\"time\":\"" + time + "\"";
  if (!data.empty()) e += ",\"data\":" + data;
  return e + "}";
}

// Random events: garbage, non-JSON, wrong types, odd but valid envelopes.
std::string random_event(Rng& rng, std::string* what) {
  static const std::vector<std::string> attrs = {
      "specversion", "id", "source", "type", "subject", "time", "datacontenttype", "schemaversion", "data"};
  static const std::vector<std::string> wrong = {
      "1",  "1.0",   "true",        "null",     "[]", "{}", "\"\"", "\"x\"", "18446744073709551615",
      "-1", "1e400", "\"\\u0000\"", "[\"1.0\"]"};
  json base = {{"specversion", "1.0"},
               {"id", "fuzz-" + std::to_string(rng.below(1000000))},
               {"source", "fuzz"},
               {"type", rng.pick(std::vector<std::string>{"io.conveyor.job.done", "io.conveyor.job.queued",
                                                          "io.conveyor.parameters.changed", "x"})},
               {"subject", std::to_string(rng.below(100))},
               {"time", "2026-01-01T00:00:00Z"},
               {"data", {{"job_id", rng.below(100)}}}};
  switch (rng.below(6)) {
    case 0: {
      std::string s(rng.below(4096), '\0');
      for (char& ch : s) ch = static_cast<char>(rng.below(256));
      *what = "random bytes (" + std::to_string(s.size()) + ")";
      return s;
    }
    case 1:
      *what = "not JSON";
      return rng.pick(
          std::vector<std::string>{"", "hello", "{", "<event/>", "{\"specversion\":", "\xff\xfe", "null x"});
    case 2:
      *what = "JSON, not an object";
      return rng.pick(std::vector<std::string>{"[]", "1", "\"event\"", "null", "true", "[{\"specversion\":\"1.0\"}]"});
    case 3: {
      const std::string attr = rng.pick(attrs);
      const std::string v = rng.pick(wrong);
      std::string text = base.dump();
      json e = base;
      e.erase(attr);
      text = e.dump();
      text.insert(text.size() - 1, ",\"" + attr + "\":" + v);
      *what = "attribute " + attr + " = " + v;
      return text;
    }
    case 4: {
      json e = base;
      e.erase(rng.pick(std::vector<std::string>{"specversion", "id", "source", "type"}));
      *what = "a required attribute missing";
      return e.dump();
    }
    default: {
      json e = base;
      switch (rng.below(5)) {
        case 0:
          e["datacontenttype"] = "text/plain";
          *what = "text data as an object";
          break;
        case 1:
          e["data_base64"] = "AAAA";
          *what = "data_base64";
          break;
        case 2:
          e["time"] = rng.pick(std::vector<std::string>{"yesterday", "2026-13-45T99:99:99Z", "2026-01-01T00:00:00.Z",
                                                        "2026-01-01T00:00:00.123456789012345678901234567890Z"});
          *what = "time " + e["time"].get<std::string>();
          break;
        case 3:
          e["subject"] = std::string(10000, 'x');
          *what = "a long subject";
          break;
        default:
          e["specversion"] = "0.3";
          *what = "specversion 0.3";
      }
      return e.dump();
    }
  }
}

// 6. Poison events: every consumer survives them, counts the invalid ones,
//    and the job path still works afterwards.
TEST(Fuzz, PoisonEvents) {
  FuzzTypes types;
  Stack stack(types.options({"creation", "configuration", "execution", "publication"}, 2));
  const std::uint64_t seed = run_seed();
  Rng rng = Rng::for_case(seed, "PoisonEvents", 0);
  const std::string reproduce =
      "reproduce: CONVEYOR_FUZZ_SEED=" + std::to_string(seed) + " ctest --preset dev -R 'Fuzz\\.PoisonEvents$' -V";
  namespace bus = conveyor::bus;
  // Two job event topics, so every stage's job consumer gets poison: done
  // (creation, configuration) and processed (execution, publication).
  const std::string jobs = bus::job_event_topic(stack.topic_prefix(), "io.conveyor.job.done");
  const std::string processed = bus::job_event_topic(stack.topic_prefix(), "io.conveyor.job.processed");
  const std::string params = bus::topic_name(stack.topic_prefix(), bus::kParametersTopic);
  const std::string control = bus::topic_name(stack.topic_prefix(), bus::kControlTopic);

  bus::ProducerOptions po;
  po.brokers = stack.broker().bootstrap();
  po.client_id = "fuzz";
  po.extra = {{"message.max.bytes", "16777216"}};
  bus::Producer producer(po);

  const std::vector<std::string> names = stack.names();
  const std::string invalid = "conveyor_events_invalid_total";
  auto counter = [&](const std::string& name, const std::string& metric) -> double {
    if (!stack.process(name).running()) return -1;
    const RawResponse r = get(stack.port(name), "/metrics", 3s);
    if (!r.ok || r.status != 200) return -1;
    return metric_sum(r.body, metric).value_or(0);
  };
  auto send = [&](std::vector<Poison>& batch) {
    std::vector<bus::Message> messages;
    for (const auto& p : batch) messages.push_back({p.topic, p.key, p.value});
    const std::vector<bool> acks = producer.send_batch(messages, 60s);
    for (std::size_t i = 0; i < batch.size(); ++i) batch[i].acked = i < acks.size() && acks[i];
  };

  // Warm-up: every process's parameters consumer counts one invalid event.
  std::vector<Poison> warm = {{params, "warm-up", "fuzz warm-up: not JSON", "warm-up", true, false}};
  send(warm);
  ASSERT_TRUE(warm[0].acked) << "the devbroker did not take the warm-up event";
  const bool warmed = wait_until(
      [&] {
        for (const auto& n : names) {
          if (counter(n, invalid) < 1) return false;
        }
        return true;
      },
      60s);
  ASSERT_TRUE(warmed) << "not every process counted the warm-up event in " << invalid << ":\n" << stack.logs_tail();
  std::map<std::string, double> baseline;
  for (const auto& n : names) baseline[n] = counter(n, invalid);

  // The poison, in this order: bombs, random events, huge ones, a sentinel.
  std::vector<Poison> poison;
  std::string digits(200000, '0');
  for (char& d : digits) d = static_cast<char>('0' + rng.below(10));
  const std::string time_bomb =
      envelope("io.conveyor.job.done", "2026-01-01T00:00:00." + digits + "Z", "{\"job_id\":1}");
  const std::string deep_bomb = envelope("io.conveyor.job.done", "", nested(rng, 150000, Nest::arrays));
  const std::string deep_objects = envelope("io.conveyor.job.done", "", nested(rng, 100000, Nest::objects));
  for (const auto& topic : {jobs, processed, params}) {
    poison.push_back({topic, "1", time_bomb, "time with 200k fraction digits", false, false});
    poison.push_back({topic, "1", deep_bomb, "data nested 150k deep (arrays)", false, false});
    poison.push_back({topic, "2", deep_objects, "data nested 100k deep (objects)", false, false});
  }
  poison.push_back({control, "1", time_bomb, "time bomb on control", false, false});
  std::size_t escaping = 0;
  const std::size_t random_events = 150;
  for (std::size_t i = 0; i < random_events; ++i) {
    std::string what;
    std::string value = random_event(rng, &what);
    bool escapes = false;
    const bool surely = rejected(value, &escapes);
    if (escapes) {
      ++escaping;
      std::cout << "[fuzz] PoisonEvents: decode() throws a non-conveyor exception for: " << what << std::endl;
    }
    const std::string topic = rng.pick(std::vector<std::string>{jobs, processed, params, params, control});
    const std::string key = rng.chance(0.2) ? std::string() : std::to_string(rng.below(50));
    poison.push_back({topic, key, std::move(value), what, surely, false});
  }
  std::string noise(3 * kMiB / 2, '\0');
  for (char& ch : noise) ch = static_cast<char>(rng.below(256));
  poison.push_back({params, "big", noise, "1.5 MiB of random bytes", true, false});
  poison.push_back({jobs, "big", noise, "1.5 MiB of random bytes", true, false});
  poison.push_back({params, "big", envelope("io.conveyor.job.done", "", json(std::string(3 * kMiB / 2, 'x')).dump()),
                    "a valid event with 1.5 MiB of data", false, false});
  poison.push_back({params, "sentinel", "fuzz sentinel: not JSON", "the sentinel", true, false});
  send(poison);

  std::size_t expected = 0;  // invalid events every process must count (parameters topic)
  std::size_t sent = 0;
  for (const auto& p : poison) {
    if (!p.acked) {
      std::cout << "[fuzz] PoisonEvents: the devbroker did not take: " << p.what << " (" << p.value.size()
                << " bytes) on " << p.topic << std::endl;
      continue;
    }
    ++sent;
    if (p.topic == params && p.surely_invalid) ++expected;
  }
  ASSERT_TRUE(poison.back().acked) << "the sentinel event was not taken by the devbroker";
  std::cout << "[fuzz] PoisonEvents seed=" << seed << ": " << sent << " of " << poison.size()
            << " poison events sent; every process must count at least " << expected
            << " more invalid events (parameters topic)" << std::endl;

  auto settled = [&] {
    for (const auto& n : names) {
      if (!stack.process(n).running()) continue;  // reported below
      if (counter(n, invalid) < baseline[n] + static_cast<double>(expected)) return false;
    }
    return true;
  };
  wait_until(settled, 90s);

  std::vector<std::string> dead;
  for (const auto& n : names) {
    auto& p = stack.process(n);
    if (!p.running()) {
      dead.push_back(n);
      ADD_FAILURE() << "[fuzz] PoisonEvents: conveyor " << n << " DIED (" << describe_exit(p.wait(0ms))
                    << ") on the poison events; " << reproduce << "\n  its log ends:\n"
                    << log_tail(stack, n);
      continue;
    }
    const double now = counter(n, invalid);
    std::cout << "[fuzz] PoisonEvents: " << n << " " << invalid << " +" << (now - baseline[n]) << std::endl;
    EXPECT_GE(now, baseline[n] + static_cast<double>(expected))
        << "[fuzz] PoisonEvents: " << n << " counted " << (now - baseline[n]) << " of at least " << expected
        << " invalid events on " << params << " within 90 s (a consumer stuck on a message?); " << reproduce;
  }
  EXPECT_EQ(escaping, 0u) << "[fuzz] PoisonEvents: bus::decode threw exceptions that are not conveyor::Error "
                             "(the runtime's consumer catches only those); "
                          << reproduce;

  // A dead service is started again: consumers read from the earliest
  // offset, so a poison that killed it must not kill it again.
  for (const auto& n : dead) {
    try {
      stack.start(n);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "[fuzz] PoisonEvents: " << n << " could not be started again: " << e.what();
      continue;
    }
    if (wait_until([&] { return !stack.process(n).running(); }, 15s)) {
      ADD_FAILURE() << "[fuzz] PoisonEvents: " << n << " died again after a restart ("
                    << describe_exit(stack.process(n).wait(0ms)) << "): it re-reads the poison; its log ends:\n"
                    << log_tail(stack, n);
    }
  }
  for (const auto& n : names) {
    if (!stack.process(n).running()) {
      ADD_FAILURE() << "[fuzz] PoisonEvents: " << n << " is not running: the job path cannot be checked";
      return;
    }
  }

  // Jobs submitted now still reach done (fuzz-any: a zero-second sleep
  // without sinks, so no webhook endpoint is needed).
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    const auto r = conveyor::http::http_request(
        "POST", stack.api_url() + "/v1/jobs",
        "{\"job_type\":\"fuzz-any\",\"params\":{\"i\":" + std::to_string(i) + "}}", stack.api_headers(true));
    ASSERT_EQ(r.status, 201) << r.body;
    ids.push_back(std::to_string(json::parse(r.body).at("id").get<std::int64_t>()));
  }
  const std::string list = ids[0] + "," + ids[1] + "," + ids[2];
  const bool done = wait_until(
      [&] {
        return stack.db().query_value("SELECT count(*) FROM conveyor.job WHERE status = 'done' AND id IN (" + list +
                                      ")") == "3";
      },
      120s);
  EXPECT_TRUE(done) << "[fuzz] PoisonEvents: jobs " << list << " submitted after the poison did not reach done: "
                    << stack.db().query_value(
                           "SELECT string_agg(id || '=' || status, ' ') FROM conveyor.job WHERE id IN (" + list + ")")
                    << "; " << reproduce << "\n"
                    << stack.logs_tail();
  for (const auto& n : names) {
    const RawResponse r = get(stack.port(n), "/healthz", 2s);
    EXPECT_TRUE(r.ok && r.status == 200) << "[fuzz] PoisonEvents: " << n
                                         << " does not answer /healthz: " << (r.ok ? r.status_line : r.error);
  }
}

}  // namespace
