// The random mix of the fuzz test: one generator per class, each making a
// Case (the request and what the answer must be) from the case's own Rng,
// so case I of seed S is always the same request.
#include <algorithm>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>

#include "fuzz.hpp"

namespace conveyor::fuzz {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using namespace std::string_literals;

constexpr std::size_t kMiB = 1024 * 1024;

const std::vector<std::string> kStandardMethods = {"GET", "POST", "PUT", "PATCH", "DELETE"};
const std::vector<std::string> kAllKnownMethods = {"GET",    "HEAD",    "POST",  "PUT",     "PATCH",
                                                   "DELETE", "OPTIONS", "TRACE", "CONNECT", "PRI"};

struct Route {
  std::string pattern;
  std::vector<std::string> methods;
};

const std::vector<Route>& routes() {
  static const std::vector<Route> r = {
      {"/v1/jobs", {"GET", "POST"}},
      {"/v1/jobs/{id}", {"GET"}},
      {"/v1/jobs/{id}/cancel", {"POST"}},
      {"/v1/jobs/{id}/retry", {"POST"}},
      {"/v1/job-types", {"GET"}},
      {"/v1/job-types/{name}", {"GET"}},
      {"/v1/parameters", {"GET", "PATCH"}},
      {"/healthz", {"GET"}},
      {"/readyz", {"GET"}},
      {"/metrics", {"GET"}},
      {"/version", {"GET"}},
  };
  return r;
}

const std::vector<std::string> kJobTypes = {"sleep", "fail", "flaky", "fsc-rlie", "fuzz-any"};

// A concrete path for a route pattern.
std::string concrete(Rng& rng, const std::string& pattern) {
  std::string out = pattern;
  if (auto p = out.find("{id}"); p != std::string::npos) out.replace(p, 4, std::to_string(rng.between(1, 40)));
  if (auto p = out.find("{name}"); p != std::string::npos) out.replace(p, 6, rng.pick(kJobTypes));
  return out;
}

RawRequest json_request(const std::string& method, const std::string& target, std::string body,
                        const std::string& content_type = "application/json") {
  RawRequest r;
  r.method = method;
  r.target = target;
  if (!content_type.empty()) r.headers.emplace_back("Content-Type", content_type);
  r.body = std::move(body);
  return r;
}

RawRequest get_request(const std::string& target, const std::string& method = "GET") {
  RawRequest r;
  r.method = method;
  r.target = target;
  return r;
}

std::string percent_encode(std::string_view bytes) {
  std::string out;
  for (const char ch : bytes) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += ch;
    } else {
      char hex[4];
      std::snprintf(hex, sizeof hex, "%%%02X", c);
      out += hex;
    }
  }
  return out;
}

// ------------------------------------------------------------------ values

const std::vector<std::string> kValidPieces = {"a",
                                               "Z",
                                               "0",
                                               " ",
                                               "\xc3\xa9" /* é */,
                                               "\xe6\x97\xa5\xe6\x9c\xac" /* 日本 */,
                                               "\xf0\x9f\x98\x80" /* 😀 */,
                                               "\xe2\x80\xae" /* RTL override */,
                                               "\xe2\x80\x8b" /* zero width */,
                                               "\xef\xbb\xbf" /* BOM */,
                                               "\xf4\x8f\xbf\xbf" /* U+10FFFF */,
                                               "\xc2\x85" /* NEL */,
                                               "\xef\xbf\xbe" /* U+FFFE */,
                                               "\xcc\x81" /* combining */,
                                               "'",
                                               "\"",
                                               "\\",
                                               "/",
                                               "\n",
                                               "\t",
                                               "%",
                                               "<script>",
                                               "${jndi:ldap://x}",
                                               "'; DROP TABLE conveyor.job;--",
                                               "{seconds}",
                                               "../",
                                               "\x7f",
                                               "\x01",
                                               "$1",
                                               "\\u0041"};

// A random valid (UTF-8) string.
std::string valid_text(Rng& rng, std::size_t max_pieces = 8) {
  std::string s;
  const std::size_t n = rng.below(max_pieces + 1);
  for (std::size_t i = 0; i < n; ++i) s += rng.pick(kValidPieces);
  return s;
}

// A random valid JSON value, at most `depth` levels deep.
json random_value(Rng& rng, int depth) {
  switch (rng.below(depth > 0 ? 8 : 6)) {
    case 0:
      return nullptr;
    case 1:
      return rng.chance(0.5);
    case 2:
      return rng.between(-1000000, 1000000);
    case 3:
      return static_cast<double>(rng.between(-1000000, 1000000)) / 7.0;
    case 4:
    case 5:
      return valid_text(rng);
    case 6: {
      json a = json::array();
      for (std::size_t i = rng.below(4); i > 0; --i) a.push_back(random_value(rng, depth - 1));
      return a;
    }
    default: {
      json o = json::object();
      for (std::size_t i = rng.below(4); i > 0; --i) o[valid_text(rng, 3)] = random_value(rng, depth - 1);
      return o;
    }
  }
}

json valid_params(Rng& rng, const std::string& type) {
  if (type == "sleep") return {{"seconds", rng.between(0, 3)}};
  if (type == "fsc-rlie") return {{"tile", "T" + std::to_string(rng.between(10, 99)) + "ABC"}, {"date", "2026-01-01"}};
  if (type == "fuzz-any") {
    json o = json::object();
    for (std::size_t i = rng.below(4); i > 0; --i) o[valid_text(rng, 3)] = random_value(rng, 3);
    return o;
  }
  return json::object();
}

json valid_submit(Rng& rng) {
  const std::string type = rng.pick(kJobTypes);
  json b = {{"job_type", type}, {"params", valid_params(rng, type)}};
  if (rng.chance(0.3)) b["priority"] = rng.between(-100, 100);
  if (rng.chance(0.2)) b["depends_on"] = json::array({rng.between(1, 30)});
  if (rng.chance(0.2)) b["not_before"] = "2026-0" + std::to_string(rng.between(1, 9)) + "-15T10:00:00Z";
  return b;
}

// ------------------------------------------------------------------ unicode

struct Atom {
  std::string text;  // as it goes inside the JSON string literal
  bool escape;       // `text` is already JSON escape syntax (no quoting)
  bool invalid;      // makes the JSON invalid
  bool nul;          // decodes to U+0000
};

const std::vector<Atom>& atoms() {
  static const std::vector<Atom> a = [] {
    std::vector<Atom> v;
    for (const auto& p : kValidPieces) v.push_back({p, false, false, false});
    for (const char* p : {"\xff", "\xfe", "\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe6\x97", "\x80",
                          "\xf8\x88\x80\x80\x80", "\xc3"}) {
      v.push_back({p, false, true, false});
    }
    for (const char* p : {"\\u00e9", "\\ud83d\\ude00", "\\u2028", "\\uffff", "\\/", "\\b\\f"}) {
      v.push_back({p, true, false, false});
    }
    v.push_back({"\\u0000", true, false, true});
    for (const char* p : {"\\ud800", "\\udc00x", "\\ud800\\u0041", "\\x41", "\\u12", "\\U0001F600", "\\a"}) {
      v.push_back({p, true, true, false});
    }
    return v;
  }();
  return a;
}

}  // namespace

UnicodeLiteral unicode_literal(Rng& rng) {
  UnicodeLiteral l;
  std::string inner;
  const std::size_t n = 1 + rng.below(6);
  bool after_invalid = false;
  for (std::size_t i = 0; i < n; ++i) {
    const Atom& a = rng.pick(atoms());
    // Two invalid atoms must not make one valid character: "\xe6\x97" and
    // "\x80" are one, "\ud800" and "\udc00" a surrogate pair, "\u12" and
    // "a0" one escape. A stop after an invalid atom keeps it invalid (and
    // one at the end of the string stays there).
    if (after_invalid) inner += 'x';
    if (a.escape) {
      inner += a.text;
    } else {
      const std::string q = quote_raw(a.text);
      inner += q.substr(1, q.size() - 2);
    }
    after_invalid = a.invalid;
    l.invalid = l.invalid || a.invalid;
    l.nul = l.nul || a.nul;
  }
  l.text = "\"" + inner + "\"";
  return l;
}

namespace {

// Raw bytes for URLs and headers (UTF-8 or not).
std::string unicode_bytes(Rng& rng) {
  std::string s;
  const std::size_t n = 1 + rng.below(5);
  for (std::size_t i = 0; i < n; ++i) {
    const Atom& a = rng.pick(atoms());
    s += a.text;
  }
  return s;
}

// ------------------------------------------------------------------ classes

Case valid_case(Rng& rng) {
  Case c;
  c.klass = "valid";
  switch (rng.below(10)) {
    case 0:
    case 1:
    case 2: {
      c.note = "a valid submission";
      c.request = json_request("POST", "/v1/jobs", valid_submit(rng).dump());
      if (rng.chance(0.3)) c.request.headers.emplace_back("Idempotency-Key", "key-" + std::to_string(rng.below(50)));
      break;
    }
    case 3: {
      c.note = "a valid listing";
      std::string q =
          "/v1/jobs?page=" + std::to_string(rng.between(1, 3)) + "&size=" + std::to_string(rng.between(1, 100));
      if (rng.chance(0.5))
        q += "&status=" + rng.pick(std::vector<std::string>{"initialized", "done", "failed", "queued"});
      if (rng.chance(0.5)) q += "&type=" + rng.pick(kJobTypes);
      c.request = get_request(q);
      break;
    }
    case 4:
      c.note = "a job by id";
      c.request = get_request(concrete(rng, "/v1/jobs/{id}"));
      break;
    case 5:
      c.note = "cancel or retry";
      c.request =
          json_request("POST", concrete(rng, rng.chance(0.5) ? "/v1/jobs/{id}/cancel" : "/v1/jobs/{id}/retry"), "", "");
      break;
    case 6:
      c.note = "job types";
      c.request = get_request(rng.chance(0.5) ? "/v1/job-types" : concrete(rng, "/v1/job-types/{name}"));
      break;
    case 7:
      c.note = "parameters";
      c.request = get_request("/v1/parameters");
      break;
    case 8: {
      const std::string path = rng.pick(std::vector<std::string>{"/healthz", "/readyz", "/metrics", "/version"});
      c.note = "admin " + path;
      c.request = get_request(path);
      c.allow_503 = path == "/readyz";
      break;
    }
    default: {
      const Route& r = rng.pick(routes());
      if (std::find(r.methods.begin(), r.methods.end(), "GET") == r.methods.end()) return valid_case(rng);
      c.note = "HEAD " + r.pattern;
      c.request = get_request(concrete(rng, r.pattern), "HEAD");
      c.allow_503 = r.pattern == "/readyz";
    }
  }
  return c;
}

Case bad_json_case(Rng& rng) {
  Case c;
  c.klass = "bad_json";
  const bool patch = rng.chance(0.3);
  std::string base = patch ? json({{"image_tags", {{"worker", "1.2.3"}}}, {"log_retention_days", 30}}).dump()
                           : valid_submit(rng).dump();
  static const std::vector<std::string> fixed = {
      "",
      "{",
      "}",
      "[",
      "nul",
      "tru",
      "{\"job_type\":}",
      "{'job_type':'sleep'}",
      "{\"job_type\":\"sleep\",}",
      "{\"job_type\":\"sleep\"}//c",
      "/*c*/{\"job_type\":\"sleep\"}",
      "NaN",
      "{\"job_type\":\"sleep\",\"priority\":NaN}",
      "{\"job_type\":\"sleep\",\"priority\":Infinity}",
      "{} {}",
      "{}x",
      "\"unterminated",
      "{\"a\":01}",
      "{\"a\":-}",
      "{\"a\":1e}",
      "{\"a\":.5}",
      "{\"a\":+1}",
      "{\"a\":0x10}",
      "{\"job_type\" \"sleep\"}",
      "{\"job_type\":\"sleep\"\"params\":{}}",
      "{job_type:\"sleep\"}",
      "[1,2,]",
      "\x00{}"s,
      "{\"job_type\":\"sl\neep\"}",
  };
  std::string body;
  switch (rng.below(4)) {
    case 0:
      body = base.substr(0, rng.below(base.size()));
      c.note = "truncated JSON";
      break;
    case 1: {
      body = base;
      const std::size_t edits = 1 + rng.below(4);
      for (std::size_t i = 0; i < edits && !body.empty(); ++i) {
        const std::size_t at = rng.below(body.size());
        switch (rng.below(3)) {
          case 0:
            body[at] = static_cast<char>(rng.below(256));
            break;
          case 1:
            body.insert(at, 1, "{}[]\",:\\ \x00\xff"[rng.below(12)]);
            break;
          default:
            body.erase(at, 1);
        }
      }
      c.note = "mutated JSON";
      break;
    }
    case 2:
      body = rng.pick(fixed);
      c.note = "malformed JSON";
      break;
    default:
      body.resize(1 + rng.below(200));
      for (char& ch : body) ch = static_cast<char>(rng.below(256));
      c.note = "random bytes";
  }
  c.request = json_request(patch ? "PATCH" : "POST", patch ? "/v1/parameters" : "/v1/jobs", body);
  if (json::accept(body)) {
    c.note += " (accidentally valid)";
  } else {
    c.expect = {400};
  }
  return c;
}

// A value of the wrong type for a field that wants `want`.
std::string wrong_value(Rng& rng, const std::string& want) {
  std::vector<std::string> options = {"\"text\"", "12", "1.5", "true", "[]", "{}", "[1,\"a\"]", "{\"x\":1}", "\"\""};
  std::vector<std::string> out;
  for (const auto& o : options) {
    const json v = json::parse(o);
    const bool is = (want == "string" && v.is_string()) || (want == "integer" && v.is_number_integer()) ||
                    (want == "object" && v.is_object()) || (want == "array" && v.is_array()) ||
                    (want == "boolean" && v.is_boolean());
    if (!is) out.push_back(o);
  }
  return rng.pick(out);
}

Case wrong_types_case(Rng& rng) {
  Case c;
  c.klass = "wrong_types";
  c.expect_error = true;
  if (rng.chance(0.3)) {
    struct Field {
      const char* name;
      const char* want;
    };
    static const std::vector<Field> fields = {
        {"max_number_of_worker_instances", "integer"},
        {"worker_concurrency", "integer"},
        {"job_types_list", "array"},
        {"accepting_new_jobs", "boolean"},
        {"not_accepting_reason", "string"},
        {"stall_queued_s", "integer"},
        {"publication_endpoint_url", "string"},
        {"image_tags", "object"},
        {"log_retention_days", "integer"},
        {"schedule_catchup_start", "object"},
        {"parameter_reload_interval_s", "integer"},
    };
    std::string body;
    switch (rng.below(5)) {
      case 0:
        body = "{\"no_such_parameter\":" + random_value(rng, 1).dump() + "}";
        c.note = "PATCH an unknown parameter";
        break;
      case 1:
        body = rng.pick(std::vector<std::string>{"[]", "\"x\"", "1", "null", "true", "[{}]"});
        c.note = "PATCH with a body that is not an object";
        break;
      case 2:
        body = rng.pick(std::vector<std::string>{"{\"id\":2}", "{\"updated_at\":\"2026-01-01T00:00:00Z\"}",
                                                 "{\"updated_by\":\"x\"}"});
        c.note = "PATCH a read-only column";
        break;
      default: {
        const Field& f = rng.pick(fields);
        std::string v = wrong_value(rng, f.want);
        if (std::string(f.name) == "job_types_list" && rng.chance(0.5)) v = "[1,2]";
        body = "{\"" + std::string(f.name) + "\":" + v + "}";
        c.note = std::string("PATCH ") + f.name + " with " + v;
      }
    }
    c.request = json_request("PATCH", "/v1/parameters", body);
    return c;
  }
  json b = valid_submit(rng);
  switch (rng.below(8)) {
    case 0:
      b["job_type"] = json::parse(wrong_value(rng, "string"));
      c.note = "job_type of the wrong type";
      break;
    case 1:
      b["params"] = json::parse(rng.pick(std::vector<std::string>{"[]", "\"x\"", "7", "true", "[{}]"}));
      c.note = "params not an object";
      break;
    case 2:
      b["priority"] = json::parse(rng.pick(std::vector<std::string>{"\"high\"", "1.5", "true", "[]", "{}", "\"1\""}));
      c.note = "priority not an integer";
      break;
    case 3:
      b["depends_on"] = json::parse(rng.pick(std::vector<std::string>{
          "\"1\"", "1", "{\"a\":1}", "true", "[\"1\"]", "[1.5]", "[-1]", "[0]", "[true]", "[null]", "[[1]]", "[{}]"}));
      c.note = "depends_on of the wrong type";
      break;
    case 4:
      b["not_before"] = json::parse(rng.pick(
          std::vector<std::string>{"12", "true", "[]", "{}", "\"yesterday\"", "\"2026-01-01\"", "\"10:00\"", "\"\""}));
      c.note = "not_before not a date-time";
      break;
    case 5:
      b[rng.pick(std::vector<std::string>{"extra", "jobType", "id", "status", "\xc3\xa9"})] = 1;
      c.note = "an unknown field";
      break;
    case 6:
      c.request = json_request(
          "POST", "/v1/jobs",
          rng.pick(std::vector<std::string>{"[]", "\"sleep\"", "1", "null", "true", "[{\"job_type\":\"sleep\"}]"}));
      c.note = "a body that is not an object";
      return c;
    default:
      b.erase("job_type");
      c.note = "no job_type";
  }
  c.request = json_request("POST", "/v1/jobs", b.dump(-1, ' ', false, json::error_handler_t::replace));
  return c;
}

const std::vector<std::string>& huge_literals() {
  static const std::vector<std::string> l = [] {
    std::vector<std::string> v = {"18446744073709551615",
                                  "18446744073709551616",
                                  "9223372036854775807",
                                  "9223372036854775808",
                                  "-9223372036854775808",
                                  "-9223372036854775809",
                                  "2147483647",
                                  "2147483648",
                                  "-2147483648",
                                  "-2147483649",
                                  "4294967295",
                                  "4294967296",
                                  "1e308",
                                  "1e309",
                                  "-1e400",
                                  "1e-400",
                                  "4.9e-324",
                                  "1.7976931348623157e308",
                                  "123456789012345678901234567890",
                                  "0.0000000000000000000000001",
                                  "1E+2",
                                  "-0",
                                  "-0.0",
                                  "00",
                                  "+1",
                                  ".5",
                                  "1.",
                                  "0x10",
                                  "NaN",
                                  "Infinity",
                                  "-Infinity",
                                  "1e99999999999"};
    v.push_back("1" + std::string(400, '0'));
    v.push_back("0." + std::string(400, '0') + "1");
    return v;
  }();
  return l;
}

struct Number {
  std::string text;
  bool valid_json = false;
  bool int32 = false;  // an integer in [-2^31, 2^31)
  bool id = false;     // an integer in [1, 2^63)
};

Number huge_number(Rng& rng) {
  Number n;
  if (rng.chance(0.25)) {
    // 2^64 - k: wraps to -k when read as int64.
    n.text = std::to_string(std::numeric_limits<std::uint64_t>::max() - rng.below(1u << 31));
  } else {
    n.text = rng.pick(huge_literals());
  }
  const json v = json::parse(n.text, nullptr, false);
  n.valid_json = !v.is_discarded();
  if (n.valid_json && v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    n.int32 = u <= static_cast<std::uint64_t>(std::numeric_limits<std::int32_t>::max());
    n.id = u >= 1 && u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  } else if (n.valid_json && v.is_number_integer()) {
    const auto i = v.get<std::int64_t>();
    n.int32 = i >= std::numeric_limits<std::int32_t>::min() && i <= std::numeric_limits<std::int32_t>::max();
    n.id = i >= 1;
  }
  return n;
}

Case huge_numbers_case(Rng& rng) {
  Case c;
  c.klass = "huge_numbers";
  const Number n = huge_number(rng);
  switch (rng.below(7)) {
    case 0:
      c.note = "priority " + n.text;
      c.request = json_request("POST", "/v1/jobs",
                               "{\"job_type\":\"sleep\",\"params\":{\"seconds\":0},\"priority\":" + n.text + "}");
      if (!n.valid_json || !n.int32) c.expect = {400};
      break;
    case 1:
      c.note = "depends_on [" + n.text + "]";
      c.request = json_request("POST", "/v1/jobs",
                               "{\"job_type\":\"sleep\",\"params\":{\"seconds\":0},\"depends_on\":[" + n.text + "]}");
      if (!n.valid_json || !n.id) c.expect = {400};
      break;
    case 2:
      c.note = "sleep seconds " + n.text;
      c.request = json_request("POST", "/v1/jobs", "{\"job_type\":\"sleep\",\"params\":{\"seconds\":" + n.text + "}}");
      if (!n.valid_json) c.expect = {400};
      break;
    case 3:
      c.note = "fuzz-any params number " + n.text;
      c.request = json_request("POST", "/v1/jobs", "{\"job_type\":\"fuzz-any\",\"params\":{\"n\":" + n.text + "}}");
      if (!n.valid_json) c.expect = {400};
      break;
    case 4: {
      const std::string field =
          rng.pick(std::vector<std::string>{"log_retention_days", "job_retention_days", "outbox_retention_hours",
                                            "publication_max_attempts", "worker_concurrency"});
      c.note = "PATCH " + field + " " + n.text;
      c.request = json_request("PATCH", "/v1/parameters", "{\"" + field + "\":" + n.text + "}");
      if (!n.valid_json) {
        c.expect = {400};
      } else if (!n.int32) {
        c.expect_error = true;
      }
      break;
    }
    case 5: {
      const std::string key = rng.pick(std::vector<std::string>{"page", "size"});
      c.note = "query " + key + "=" + n.text;
      c.request = get_request("/v1/jobs?" + key + "=" + percent_encode(n.text));
      break;
    }
    default: {
      c.note = "not_before with out-of-range fields";
      const std::string t = rng.pick(std::vector<std::string>{
          "2026-13-45T99:99:99Z", "0000-00-00T00:00:00Z", "9999-12-31T23:59:60Z", "2026-02-30T00:00:00+99:99",
          "2026-01-01T00:00:00.999999999Z", "2026-01-01T24:00:00Z", "1000000-01-01T00:00:00Z"});
      c.note = "not_before " + t;
      c.request = json_request("POST", "/v1/jobs",
                               "{\"job_type\":\"sleep\",\"params\":{\"seconds\":0},\"not_before\":\"" + t + "\"}");
    }
  }
  return c;
}

Case unicode_case(Rng& rng) {
  Case c;
  c.klass = "unicode";
  const UnicodeLiteral l = unicode_literal(rng);
  switch (rng.below(7)) {
    case 0:
      c.note = "job_type " + l.text;
      c.request = json_request("POST", "/v1/jobs", "{\"job_type\":" + l.text + ",\"params\":{}}");
      if (l.invalid || l.nul) c.expect = {400};
      break;
    case 1: {
      const UnicodeLiteral k = unicode_literal(rng);
      c.note = "fuzz-any params " + k.text + ":" + l.text;
      c.request =
          json_request("POST", "/v1/jobs", "{\"job_type\":\"fuzz-any\",\"params\":{" + k.text + ":" + l.text + "}}");
      if (l.invalid || k.invalid) {
        c.expect = {400};
      } else if (l.nul || k.nul) {
        c.expect = {400, 422};
      }
      break;
    }
    case 2:
      c.note = "fsc-rlie tile " + l.text;
      c.request =
          json_request("POST", "/v1/jobs",
                       "{\"job_type\":\"fsc-rlie\",\"params\":{\"tile\":" + l.text + ",\"date\":\"2026-01-01\"}}");
      if (l.invalid) {
        c.expect = {400};
      } else if (l.nul) {
        c.expect = {400, 422};
      }
      break;
    case 3: {
      const std::string field = rng.pick(std::vector<std::string>{"not_accepting_reason", "image_tags"});
      const std::string body = field == "image_tags" ? "{\"image_tags\":{" + l.text + ":" + l.text + "}}"
                                                     : "{\"not_accepting_reason\":" + l.text + "}";
      c.note = "PATCH " + field + " " + l.text;
      c.request = json_request("PATCH", "/v1/parameters", body);
      if (l.invalid) {
        c.expect = {400};
      } else if (l.nul) {
        c.expect = {400, 422};
      }
      break;
    }
    case 4: {
      std::string b = unicode_bytes(rng);
      // A line break would end the header (malformed_http covers that).
      b.erase(std::remove_if(b.begin(), b.end(), [](char ch) { return ch == '\r' || ch == '\n'; }), b.end());
      c.note = "Idempotency-Key " + dump(b, 60);
      c.request = json_request("POST", "/v1/jobs", "{\"job_type\":\"sleep\",\"params\":{\"seconds\":0}}");
      c.request.headers.emplace_back("Idempotency-Key", b);
      break;
    }
    case 5: {
      const std::string b = unicode_bytes(rng);
      c.note = "job type name in the path " + dump(b, 60);
      c.request = get_request("/v1/job-types/" + percent_encode(b));
      break;
    }
    default: {
      const std::string b = unicode_bytes(rng);
      const std::string key = rng.pick(std::vector<std::string>{"type", "status", "page", "size", b});
      c.note = "query " + dump(key, 20) + "=" + dump(b, 60);
      c.request = get_request("/v1/jobs?" + percent_encode(key) + "=" + percent_encode(b));
    }
  }
  return c;
}

std::size_t nesting_depth(Rng& rng) {
  switch (rng.below(4)) {
    case 0:
      return static_cast<std::size_t>(rng.between(65, 200));
    case 1:
      return static_cast<std::size_t>(rng.between(200, 999));
    case 2:
      return static_cast<std::size_t>(rng.between(1000, 5000));
    default:
      return static_cast<std::size_t>(rng.between(5000, 150000));
  }
}

Case deep_nesting_case(Rng& rng) {
  Case c;
  c.klass = "deep_nesting";
  std::size_t depth = nesting_depth(rng);
  const Nest kind = static_cast<Nest>(rng.below(3));
  // Keep the body under the 1 MiB limit: objects take 6 bytes a level.
  if (kind != Nest::arrays) depth = std::min<std::size_t>(depth, 60000);
  const std::string deep = nested(rng, depth, kind);
  const char* kinds[] = {"arrays", "objects", "mixed"};
  std::string where;
  switch (rng.below(6)) {
    case 0:
      where = "fuzz-any params";
      c.request = json_request("POST", "/v1/jobs", "{\"job_type\":\"fuzz-any\",\"params\":{\"a\":" + deep + "}}");
      break;
    case 1:
      where = "sleep params";
      c.request = json_request("POST", "/v1/jobs", "{\"job_type\":\"sleep\",\"params\":{\"seconds\":" + deep + "}}");
      break;
    case 2:
      where = "PATCH image_tags";
      c.request = json_request("PATCH", "/v1/parameters", "{\"image_tags\":{\"worker\":" + deep + "}}");
      break;
    case 3:
      where = "PATCH schedule_catchup_start";
      c.request = json_request("PATCH", "/v1/parameters", "{\"schedule_catchup_start\":{\"x\":" + deep + "}}");
      break;
    case 4:
      where = "depends_on";
      c.request = json_request("POST", "/v1/jobs", "{\"job_type\":\"sleep\",\"depends_on\":" + deep + "}");
      break;
    default:
      where = "the whole body";
      c.request = json_request("POST", "/v1/jobs", deep);
  }
  c.note = where + " nested " + std::to_string(depth) + " deep (" + kinds[static_cast<int>(kind)] + ")";
  if (depth >= 1000) c.expect = {400};
  c.timeout = 20s;
  return c;
}

Case wrong_method_case(Rng& rng) {
  Case c;
  c.klass = "wrong_method";
  const Route& r = rng.pick(routes());
  std::vector<std::string> wrong;
  for (const auto& m : kStandardMethods) {
    if (std::find(r.methods.begin(), r.methods.end(), m) == r.methods.end()) wrong.push_back(m);
  }
  const bool has_get = std::find(r.methods.begin(), r.methods.end(), "GET") != r.methods.end();
  if (!has_get) wrong.push_back("HEAD");
  const std::size_t pick = rng.below(10);
  std::string method;
  if (pick < 7) {
    method = rng.pick(wrong);
    c.expect = {405};
  } else if (pick < 8) {
    method = "OPTIONS";  // may be answered (CORS) or refused: only "no 5xx"
  } else {
    // (Not PRI: httplib then waits 5 s for the HTTP/2 preface's second part.)
    method = rng.pick(std::vector<std::string>{"TRACE", "CONNECT"});
    c.expect_error = true;
    c.invented_method = true;  // not served: 4xx or 501
  }
  c.note = method + " " + r.pattern;
  if (rng.chance(0.4) && method != "HEAD") {
    c.request = json_request(method, concrete(rng, r.pattern), valid_submit(rng).dump());
  } else {
    c.request = get_request(concrete(rng, r.pattern), method);
  }
  return c;
}

std::string make_invented_method(Rng& rng) {
  static const std::string upper = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
  static const std::string token = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~";
  while (true) {
    std::string m;
    const std::size_t n = 1 + rng.below(12);
    const bool plain = rng.chance(0.7);
    for (std::size_t i = 0; i < n; ++i) m += plain ? upper[rng.below(upper.size())] : token[rng.below(token.size())];
    if (std::find(kAllKnownMethods.begin(), kAllKnownMethods.end(), m) == kAllKnownMethods.end()) return m;
  }
}

Case invented_method_case(Rng& rng) {
  Case c;
  c.klass = "invented_method";
  const std::string method = make_invented_method(rng);
  const std::string path =
      rng.chance(0.7) ? concrete(rng, rng.pick(routes()).pattern) : "/" + percent_encode(valid_text(rng, 3));
  c.note = method + " " + path;
  if (rng.chance(0.3)) {
    c.request = json_request(method, path, valid_submit(rng).dump());
  } else {
    c.request = get_request(path, method);
  }
  c.expect_error = true;
  c.invented_method = true;
  return c;
}

Case content_type_case(Rng& rng) {
  Case c;
  c.klass = "content_type";
  const bool patch = rng.chance(0.3);
  const std::string body = patch ? "{\"log_retention_days\":30}" : valid_submit(rng).dump();
  const std::size_t kind = rng.below(10);
  std::string ct;
  if (kind < 6) {
    ct = rng.pick(std::vector<std::string>{"text/plain", "text/plain; charset=utf-8", "text/html", "application/xml",
                                           "text/xml", "application/x-www-form-urlencoded",
                                           "multipart/form-data; boundary=xyz", "application/octet-stream", "image/png",
                                           "application/javascript", "application/yaml", "text/csv"});
    c.expect = {415};
  } else if (kind < 9) {
    ct = rng.pick(std::vector<std::string>{"application/json", "application/json; charset=utf-8",
                                           "application/json;charset=UTF-8", "Application/JSON",
                                           "application/json ; charset=utf-8"});
    c.forbid = {415};
  }
  c.note = (patch ? "PATCH /v1/parameters" : "POST /v1/jobs") + std::string(" Content-Type: ") +
           (ct.empty() ? "(none)" : ct);
  c.request = json_request(patch ? "PATCH" : "POST", patch ? "/v1/parameters" : "/v1/jobs", body, ct);
  return c;
}

// A submission of about `size` bytes (a long string in fuzz-any params).
std::string make_padded_submit(std::size_t size) {
  const std::string head = "{\"job_type\":\"fuzz-any\",\"params\":{\"pad\":\"";
  const std::string tail = "\"}}";
  return head + std::string(size > head.size() + tail.size() ? size - head.size() - tail.size() : 0, 'a') + tail;
}

std::vector<std::size_t> chunk_sizes(Rng& rng) {
  std::vector<std::size_t> sizes;
  for (std::size_t i = 1 + rng.below(8); i > 0; --i) sizes.push_back(1 + rng.below(rng.chance(0.3) ? 64 : 65536));
  return sizes;
}

Case body_limits_case(Rng& rng) {
  Case c;
  c.klass = "body_limits";
  c.timeout = 30s;
  switch (rng.below(5)) {
    case 0: {
      const std::size_t size = kMiB + 1 + rng.below(2 * kMiB);
      c.note = "Content-Length body of " + std::to_string(size) + " bytes";
      c.request = json_request("POST", "/v1/jobs", make_padded_submit(size));
      c.expect = {413};
      break;
    }
    case 1: {
      const std::size_t size = kMiB + 1 + rng.below(2 * kMiB);
      c.note = "chunked body of " + std::to_string(size) + " bytes";
      const bool patch = rng.chance(0.2);
      c.request =
          json_request(patch ? "PATCH" : "POST", patch ? "/v1/parameters" : "/v1/jobs", make_padded_submit(size));
      c.request.framing = RawRequest::Framing::chunked;
      c.request.chunk_sizes = chunk_sizes(rng);
      c.expect = {413};
      break;
    }
    case 2: {
      c.note = "small chunked submission";
      c.request = json_request("POST", "/v1/jobs", valid_submit(rng).dump());
      c.request.framing = RawRequest::Framing::chunked;
      c.request.chunk_sizes = chunk_sizes(rng);
      c.forbid = {413};
      break;
    }
    case 3: {
      c.note = "small gzip submission";
      c.request = json_request("POST", "/v1/jobs", gzip_of(valid_submit(rng).dump()));
      c.request.headers.emplace_back("Content-Encoding", "gzip");
      break;  // decoded (2xx/4xx) or refused (415): only "no 5xx"
    }
    default: {
      const std::size_t inflated = 2 * kMiB + rng.below(14 * kMiB);
      const std::string prefix = valid_submit(rng).dump();
      c.note = "gzip body inflating to " + std::to_string(inflated) + " bytes";
      c.request = json_request("POST", "/v1/jobs", deflate_bomb(prefix, inflated, true));
      c.request.headers.emplace_back("Content-Encoding", "gzip");
      if (rng.chance(0.5)) {
        c.request.framing = RawRequest::Framing::chunked;
        c.request.chunk_sizes = chunk_sizes(rng);
        c.note += ", chunked";
      }
      c.expect = {413, 415};
    }
  }
  return c;
}

Case malformed_http_case(Rng& rng) {
  Case c;
  c.klass = "malformed_http";
  c.may_close = true;  // closing on broken framing is an answer too; hanging is not
  const std::string ok_body = "{\"job_type\":\"sleep\",\"params\":{\"seconds\":0}}";
  const std::string cl = std::to_string(ok_body.size());
  static const std::vector<std::string> fixed = {
      "GARBAGE\r\n\r\n",
      "GET /healthz\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nHost 127.0.0.1\r\nConnection: close\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nBad Header: x\r\nConnection: close\r\n\r\n",
      "GET /healthz HTTP/1.1\nHost: 127.0.0.1\nConnection: close\n\n",
      "GET /healthz HTTP/9.9\r\nConnection: close\r\n\r\n",
      "GET /healthz HTTP/1.1.1\r\nConnection: close\r\n\r\n",
      "GET /healthz HTTP/2.0\r\nConnection: close\r\n\r\n",
      "GET /healthz http/1.1\r\nConnection: close\r\n\r\n",
      "GET /healthz HTTP/1.0\r\n\r\n",
      "GET http://127.0.0.1/healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
      "GET * HTTP/1.1\r\nConnection: close\r\n\r\n",
      "GET healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
      "GET  /healthz  HTTP/1.1\r\nConnection: close\r\n\r\n",
      "get /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
      "G\x00T /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"s,
      "GET /heal\x00thz HTTP/1.1\r\nConnection: close\r\n\r\n"s,
      "GET /healthz HTTP/1.1\r\nX: a\x00"
      "b\r\nConnection: close\r\n\r\n"s,
      "GET /healthz HTTP/1.1\r\nX: first\r\n continued\r\nConnection: close\r\n\r\n",
      "GET /healthz HTTP/1.1\r\n: no-name\r\nConnection: close\r\n\r\n",
      "GET /v1/jobs/%zz HTTP/1.1\r\nConnection: close\r\n\r\n",
      "GET /v1/jobs?%zz=%zz&&&=&a HTTP/1.1\r\nConnection: close\r\n\r\n",
      "\r\n\r\nGET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nContent-Length: -5\r\nConnection: close\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nContent-Length: abc\r\nConnection: close\r\n\r\n",
      "POST /v1/jobs HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: "
      "99999999999999999999999\r\n"
      "Connection: close\r\n\r\n{}",
      "POST /v1/jobs HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: "
      "1e3\r\nConnection: close\r\n\r\n{}",
      "POST /v1/jobs HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: "
      "2\r\nContent-Length: 40\r\n"
      "Connection: close\r\n\r\n{}",
      "POST /v1/jobs HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: "
      "chunked\r\nContent-Length: 2\r\n"
      "Connection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
      "POST /v1/jobs HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: "
      "chunked\r\nConnection: close\r\n\r\n"
      "zz\r\n{}\r\n0\r\n\r\n",
      "POST /v1/jobs HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: "
      "chunked\r\nConnection: close\r\n\r\n"
      "ffffffffffffffff\r\n{}\r\n",
      "POST /v1/jobs HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: "
      "chunked\r\nConnection: close\r\n\r\n"
      "-1\r\n{}\r\n0\r\n\r\n",
      "POST /v1/jobs HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip, "
      "chunked\r\n"
      "Connection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
      "POST /v1/jobs HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: identity\r\n"
      "Connection: close\r\n\r\n{}",
      "POST /v1/jobs HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: "
      "chunked\r\nConnection: close\r\n\r\n"
      "2;ext=\"x\"\r\n{}\r\n0\r\nTrailer: x\r\n\r\n",
      "POST /v1/jobs HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: "
      "100\r\nConnection: close\r\n\r\n{}",
  };
  switch (rng.below(5)) {
    case 0:
    case 1:
      c.request.raw = rng.pick(fixed);
      c.note = "malformed: " + dump(c.request.raw, 60);
      // Requests that promise more bytes than they send: the client ends
      // its side, so the server reads end-of-file instead of waiting (it
      // may then close without an answer).
      c.half_close = c.request.raw.find("Content-Length: 100\r") != std::string::npos ||
                     c.request.raw.find("Content-Length: 9999") != std::string::npos ||
                     c.request.raw.find("Content-Length: 40\r") != std::string::npos ||
                     c.request.raw.find("ffffffffffffffff") != std::string::npos ||
                     c.request.raw.find("Transfer-Encoding: identity") != std::string::npos ||
                     c.request.raw.find("Transfer-Encoding: gzip, chunked") != std::string::npos;
      break;
    case 2: {
      const std::size_t n = 8000 + rng.below(40000);
      c.request.raw = "GET /v1/jobs?type=" + std::string(n, 'x') + " HTTP/1.1\r\nConnection: close\r\n\r\n";
      c.note = "request line of " + std::to_string(n) + " bytes";
      break;
    }
    case 3: {
      const bool many = rng.chance(0.5);
      std::string headers;
      if (many) {
        const std::size_t n = 100 + rng.below(5000);
        for (std::size_t i = 0; i < n; ++i) headers += "X-H" + std::to_string(i) + ": v\r\n";
        c.note = std::to_string(n) + " headers";
      } else {
        const std::size_t n = 8000 + rng.below(200000);
        headers = "X-Big: " + std::string(n, 'v') + "\r\n";
        c.note = "a header of " + std::to_string(n) + " bytes";
      }
      c.request.raw = "POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + headers +
                      "Content-Length: " + cl + "\r\nConnection: close\r\n\r\n" + ok_body;
      break;
    }
    default: {
      // Expect: 100-continue, pipelining, HTTP/1.0 keep-alive.
      switch (rng.below(3)) {
        case 0:
          c.request.raw =
              "POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
              "application/json\r\nExpect: "
              "100-continue\r\nContent-Length: " +
              cl + "\r\nConnection: close\r\n\r\n" + ok_body;
          c.note = "Expect: 100-continue";
          break;
        case 1:
          c.request.raw =
              "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /nope HTTP/1.1\r\nHost: "
              "127.0.0.1\r\nConnection: close\r\n\r\n";
          c.note = "two pipelined requests";
          break;
        default:
          c.request.raw = "GET /version HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
          c.note = "HTTP/1.0 keep-alive";
      }
    }
  }
  return c;
}

Case routes_case(Rng& rng) {
  Case c;
  c.klass = "routes";
  std::string path;
  switch (rng.below(6)) {
    case 0:
      path = rng.pick(std::vector<std::string>{"/",
                                               "/v1",
                                               "/v1/",
                                               "/v2/jobs",
                                               "//v1//jobs//",
                                               "/v1/jobs/",
                                               "/v1/jobs/1/",
                                               "/v1/jobs/1/cancel/x",
                                               "/../../etc/passwd",
                                               "/v1/jobs/1/../2",
                                               "/v1/jobs/%2e%2e",
                                               "/V1/JOBS",
                                               "/v1/jobs;x",
                                               "/v1/jobs/{id}",
                                               "/healthz/",
                                               "/metrics?x",
                                               "/v1/job-types/",
                                               "/v1/parameters/x",
                                               "/v1/jobs/1%2F2",
                                               "/%00",
                                               "/v1/jobs/%00"});
      break;
    case 1:
      path = "/v1/jobs/" +
             rng.pick(std::vector<std::string>{"abc", "-1", "0", "1.5", "1e3", "0x10", "+1", "%201",
                                               "99999999999999999999", "9223372036854775807", "9223372036854775808",
                                               "18446744073709551615", "%20", "1%00", "%F0%9F%98%80", ""});
      if (rng.chance(0.5)) path += rng.chance(0.5) ? "/cancel" : "/retry";
      break;
    case 2: {
      static const std::vector<std::string> keys = {"status", "type", "page", "size", "x", "", "status[]"};
      static const std::vector<std::string> values = {"",    "done", "DONE",   "nope",        "0",   "-1",
                                                      "1.5", "101",  "100000", "%zz",         "%00", "%FF",
                                                      "a+b", "1&",   "=",      "%F0%9F%98%80"};
      path = "/v1/jobs?";
      for (std::size_t i = 1 + rng.below(4); i > 0; --i) {
        path += rng.pick(keys) + "=" + rng.pick(values) + (i > 1 ? "&" : "");
      }
      break;
    }
    case 3: {
      path = "/";
      for (std::size_t i = 1 + rng.below(6); i > 0; --i) path += percent_encode(valid_text(rng, 2)) + "/";
      break;
    }
    case 4:
      path = "/v1/" + std::string(100 + rng.below(7000), 'a');
      break;
    default:
      path = concrete(rng, rng.pick(routes()).pattern) + "?" + percent_encode(valid_text(rng, 4)) + "=" +
             percent_encode(valid_text(rng, 4));
  }
  const std::string method = rng.chance(0.8) ? "GET" : "POST";
  c.note = method + " " + dump(path, 80);
  c.request = method == "GET" ? get_request(path) : json_request("POST", path, valid_submit(rng).dump());
  c.allow_503 = path.rfind("/readyz", 0) == 0;
  return c;
}

Case range_case(Rng& rng) {
  Case c;
  c.klass = "range";
  const std::string path = rng.pick(std::vector<std::string>{"/healthz", "/version", "/metrics", "/v1/jobs",
                                                             "/v1/jobs/999999", "/v1/job-types", "/v1/parameters",
                                                             "/nope", "/v1/jobs?size=0", "/v1/job-types/nope"});
  std::string range = rng.pick(std::vector<std::string>{
      "bytes=0-5", "bytes=100000-", "bytes=-5", "bytes=5-1", "bytes=abc", "bytes=", "items=0-1", "bytes=0-0,2-3",
      "bytes=-0", "bytes=99999999999999999999-", "bytes=0-1,0-1,0-1,0-1,0-1,0-1", "bytes=1-2, 3-4"});
  if (rng.chance(0.1)) {
    range = "bytes=";
    for (std::size_t i = 0; i < 500; ++i) range += std::string(i ? "," : "") + "0-0";
  }
  c.note = "GET " + path + " Range: " + dump(range, 40);
  c.request = get_request(path);
  c.request.headers.emplace_back("Range", range);
  return c;
}

Case headers_case(Rng& rng) {
  Case c;
  c.klass = "headers";
  const bool post = rng.chance(0.6);
  c.request = post ? json_request("POST", "/v1/jobs", valid_submit(rng).dump()) : get_request("/v1/jobs");
  std::string name;
  std::string value;
  switch (rng.below(8)) {
    case 0:
      name = "Idempotency-Key";
      value = rng.pick(std::vector<std::string>{"", " ", std::string(300, 'k'), std::string(10000, 'k'), "\t\t", "a b",
                                                "\x01\x02", "\xff\xfe", "%00"});
      break;
    case 1:
      name = "Accept-Encoding";
      value = rng.pick(std::vector<std::string>{"gzip", "br", "deflate", "gzip;q=0, br;q=0", "*", "zstd", "x"});
      break;
    case 2:
      name = "Accept";
      value = rng.pick(std::vector<std::string>{"application/xml", "text/html", "*/*", "", "application/problem+json",
                                                "image/*;q=x"});
      break;
    case 3:
      name = "Content-Encoding";
      value = rng.pick(std::vector<std::string>{"identity", "compress", "zstd", "x-unknown", ""});
      break;
    case 4:
      c.request.add_host = false;
      if (rng.chance(0.5)) {
        name = "Host";
        value = rng.pick(std::vector<std::string>{"", "evil.example", "[::1]:99999", "a b", "\xff"});
      }
      break;
    case 5:
      name = rng.pick(std::vector<std::string>{"X-Forwarded-For", "Cookie", "Authorization", "Origin", "Referer"});
      value = valid_text(rng, 10);
      break;
    case 6:
      name = "X-Obs-Text";
      value = unicode_bytes(rng);
      break;
    default:
      name = "Connection";
      value = rng.pick(std::vector<std::string>{"keep-alive, close", "upgrade", "Upgrade, HTTP2-Settings", "x"});
  }
  // Header values end at a line break: keep them on one line.
  value.erase(std::remove_if(value.begin(), value.end(), [](char ch) { return ch == '\r' || ch == '\n'; }),
              value.end());
  if (!name.empty()) c.request.headers.emplace_back(name, value);
  c.note = (post ? "POST /v1/jobs " : "GET /v1/jobs ") +
           (name.empty() ? std::string("without Host") : name + ": " + dump(value, 40));
  return c;
}

struct Generator {
  const char* name;
  int weight;
  Case (*make)(Rng&);
};

const std::vector<Generator>& generators() {
  static const std::vector<Generator> g = {
      {"valid", 10, valid_case},
      {"bad_json", 12, bad_json_case},
      {"wrong_types", 12, wrong_types_case},
      {"unicode", 10, unicode_case},
      {"huge_numbers", 8, huge_numbers_case},
      {"deep_nesting", 3, deep_nesting_case},
      {"wrong_method", 8, wrong_method_case},
      {"invented_method", 6, invented_method_case},
      {"content_type", 8, content_type_case},
      {"body_limits", 3, body_limits_case},
      {"malformed_http", 8, malformed_http_case},
      {"routes", 8, routes_case},
      {"range", 4, range_case},
      {"headers", 4, headers_case},
  };
  return g;
}

// The admin endpoints every service has (/healthz, /readyz, /metrics,
// /version): valid and HEAD requests, wrong and invented methods, unknown
// paths, Range headers, odd headers, malformed requests and the body limits
// (which are the shared server's, so their statuses hold everywhere).
Case admin_case(Rng& rng) {
  static const std::vector<std::string> paths = {"/healthz", "/readyz", "/metrics", "/version"};
  const std::string path = rng.pick(paths);
  Case c;
  switch (rng.below(9)) {
    case 0:
    case 1:
      c.klass = "valid";
      c.request = get_request(path, rng.chance(0.2) ? "HEAD" : "GET");
      c.note = c.request.method + " " + path;
      break;
    case 2: {
      c.klass = "wrong_method";
      const std::string method = rng.pick(std::vector<std::string>{"POST", "PUT", "PATCH", "DELETE"});
      c.request = rng.chance(0.5) ? json_request(method, path, valid_submit(rng).dump()) : get_request(path, method);
      c.note = method + " " + path;
      c.expect = {405};
      break;
    }
    case 3:
      c = invented_method_case(rng);
      c.request.target = rng.chance(0.7) ? path : c.request.target;
      c.note = c.request.method + " " + c.request.target;
      break;
    case 4:
      c = routes_case(rng);
      c.expect.clear();
      break;
    case 5: {
      c = range_case(rng);
      c.request.target = rng.chance(0.7) ? path : c.request.target;
      c.note = "GET " + c.request.target + " Range: " + dump(c.request.headers.back().second, 40);
      break;
    }
    case 6:
      c = headers_case(rng);
      break;
    case 7:
      c = malformed_http_case(rng);
      break;
    default:
      c = body_limits_case(rng);
      // Its POST /v1/jobs or PATCH /v1/parameters is no route here: 404
      // (or 405) without reading the body is as good as 413.
      if (!c.expect.empty()) c.expect.insert({404, 405});
  }
  c.allow_503 = c.request.target.rfind("/readyz", 0) == 0;
  return c;
}

}  // namespace

Case random_case(Rng& rng) {
  std::vector<int> weights;
  for (const auto& g : generators()) weights.push_back(g.weight);
  return generators()[rng.weighted(weights)].make(rng);
}

Case random_admin_case(Rng& rng) { return admin_case(rng); }

std::string invented_method(Rng& rng) { return make_invented_method(rng); }

std::string padded_submit(std::size_t size) { return make_padded_submit(size); }

}  // namespace conveyor::fuzz
