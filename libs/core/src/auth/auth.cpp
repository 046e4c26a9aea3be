#include "conveyor/auth/auth.hpp"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>

#include "conveyor/db/db.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/http/problem.hpp"
#include "conveyor/logging/logging.hpp"

namespace conveyor::auth {
namespace {

constexpr db::Statement kInsertToken{"auth_insert_token",
                                     "INSERT INTO conveyor.api_token (name, token_sha256, role, expires_at) "
                                     "VALUES ($1, $2, $3, now() + make_interval(secs => $4::double precision)) "
                                     "ON CONFLICT (name) DO NOTHING RETURNING name"};

constexpr db::Statement kListTokens{
    "auth_list_tokens",
    "SELECT name, role, " CONVEYOR_RFC3339("created_at") " AS created_at, created_by, "
    CONVEYOR_RFC3339("expires_at") " AS expires_at, "
    CONVEYOR_RFC3339("revoked_at") " AS revoked_at, "
    CONVEYOR_RFC3339("last_used_at") " AS last_used_at, "
    "CASE WHEN revoked_at IS NOT NULL THEN 'revoked' "
    "     WHEN expires_at IS NOT NULL AND expires_at <= now() THEN 'expired' "
    "     ELSE 'active' END AS state "
    "FROM conveyor.api_token ORDER BY name"};

constexpr db::Statement kRevokeToken{"auth_revoke_token",
                                     "UPDATE conveyor.api_token SET revoked_at = now() "
                                     "WHERE name = $1 AND revoked_at IS NULL RETURNING name"};

// One round trip: the token's row and its state, and last_used_at brought
// up to date when it is more than a minute old (a write per request would
// make every GET a write).
constexpr db::Statement kCheckToken{
    "auth_check_token",
    "WITH t AS (SELECT name, role, revoked_at IS NOT NULL AS revoked, "
    "                  expires_at IS NOT NULL AND expires_at <= now() AS expired, "
    "                  " CONVEYOR_RFC3339("expires_at") " AS expires_at "
    "           FROM conveyor.api_token WHERE token_sha256 = $1), "
    "u AS (UPDATE conveyor.api_token SET last_used_at = now() "
    "      WHERE token_sha256 = $1 AND revoked_at IS NULL "
    "        AND (expires_at IS NULL OR expires_at > now()) "
    "        AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute') "
    "      RETURNING 1) "
    "SELECT name, role, revoked, expired, expires_at, (SELECT count(*) FROM u) AS touched FROM t"};

// A console session for a token, at most `ttl` long and never past the
// token's own expiry; expired sessions are swept on the way.
constexpr db::Statement kInsertSession{
    "auth_insert_session",
    "WITH swept AS (DELETE FROM conveyor.console_session WHERE expires_at < now()) "
    "INSERT INTO conveyor.console_session (session_sha256, token_name, expires_at) "
    "SELECT $1, name, CASE WHEN expires_at IS NULL "
    "                      THEN now() + make_interval(secs => $3::double precision) "
    "                      ELSE least(expires_at, now() + make_interval(secs => $3::double precision)) END "
    "FROM conveyor.api_token WHERE name = $2 RETURNING token_name"};

constexpr db::Statement kCheckSession{
    "auth_check_session",
    "SELECT t.name, t.role, t.revoked_at IS NOT NULL AS revoked, "
    "       s.expires_at <= now() OR (t.expires_at IS NOT NULL AND t.expires_at <= now()) AS expired, "
    "       " CONVEYOR_RFC3339("s.expires_at") " AS expires_at "
    "FROM conveyor.console_session s JOIN conveyor.api_token t ON t.name = s.token_name "
    "WHERE s.session_sha256 = $1"};

constexpr db::Statement kDeleteSession{"auth_delete_session",
                                       "DELETE FROM conveyor.console_session WHERE session_sha256 = $1"};

constexpr std::string_view kTokenPrefix = "cvt_";
constexpr std::string_view kSessionPrefix = "cvs_";

// "<prefix>" and 43 characters of base64url: 256 random bits.
std::string random_secret(std::string_view prefix);

// Hashes that were looked up and not found, remembered for a while, so a
// flood of made-up tokens costs no database round trip after the first of
// each (and a flood of distinct ones is bounded by the pool anyway). A
// created token is never in it: it is random and was never presented.
class UnknownHashes {
 public:
  bool contains(const std::string& hash) {
    std::lock_guard lock(mu_);
    const auto it = seen_.find(hash);
    return it != seen_.end() && std::chrono::steady_clock::now() < it->second;
  }
  void add(const std::string& hash) {
    std::lock_guard lock(mu_);
    if (seen_.size() >= 4096) seen_.clear();
    seen_[hash] = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  }
  // At most one log line a second for refusals of unknown tokens; the
  // number left out is told in the next one.
  std::optional<std::int64_t> may_log() {
    std::lock_guard lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    if (now - last_log_ < std::chrono::seconds(1)) {
      ++suppressed_;
      return std::nullopt;
    }
    last_log_ = now;
    const std::int64_t left_out = suppressed_;
    suppressed_ = 0;
    return left_out;
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::chrono::steady_clock::time_point> seen_;
  std::chrono::steady_clock::time_point last_log_{};
  std::int64_t suppressed_ = 0;
};

UnknownHashes& unknown_hashes() {
  static UnknownHashes cache;
  return cache;
}

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  auto ok = [](char c, bool first) {
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    return alnum || (!first && (c == '.' || c == '_' || c == '-'));
  };
  if (!ok(name[0], true)) return false;
  return std::all_of(name.begin() + 1, name.end(), [&](char c) { return ok(c, false); });
}

std::string base64url(const unsigned char* data, std::size_t n) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  std::uint32_t acc = 0;
  int bits = 0;
  for (std::size_t i = 0; i < n; ++i) {
    acc = (acc << 8) | data[i];
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kAlphabet[(acc >> bits) & 0x3f]);
    }
  }
  if (bits > 0) out.push_back(kAlphabet[(acc << (6 - bits)) & 0x3f]);
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return std::string(s);
}

// The value of cookie `name` in a Cookie header, or "".
std::string cookie_value(std::string_view header, std::string_view name) {
  std::size_t pos = 0;
  while (pos < header.size()) {
    std::size_t end = header.find(';', pos);
    if (end == std::string_view::npos) end = header.size();
    const std::string pair = trim(header.substr(pos, end - pos));
    const auto eq = pair.find('=');
    if (eq != std::string::npos && pair.substr(0, eq) == name) return pair.substr(eq + 1);
    pos = end + 1;
  }
  return "";
}

http::Response unauthorized(const std::string& detail) {
  http::Response r = http::problem(401, http::reason_phrase(401), detail);
  r.headers["WWW-Authenticate"] = "Bearer realm=\"conveyor\"";
  return r;
}

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

}  // namespace

std::string_view to_string(Role role) {
  switch (role) {
    case Role::reader:
      return "reader";
    case Role::submitter:
      return "submitter";
    case Role::operator_:
      return "operator";
  }
  return "reader";
}

std::optional<Role> parse_role(std::string_view text) {
  if (text == "reader") return Role::reader;
  if (text == "submitter") return Role::submitter;
  if (text == "operator") return Role::operator_;
  return std::nullopt;
}

namespace {
std::string random_secret(std::string_view prefix) {
  std::array<unsigned char, 32> bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
    throw Error(errc::internal, "no random bytes for a secret (OpenSSL RAND_bytes failed)");
  }
  return std::string(prefix) + base64url(bytes.data(), bytes.size());
}
}  // namespace

std::string new_token() { return random_secret(kTokenPrefix); }

std::string token_sha256(std::string_view token) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int size = 0;
  if (EVP_Digest(token.data(), token.size(), digest.data(), &size, EVP_sha256(), nullptr) != 1) {
    throw Error(errc::internal, "SHA-256 failed");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (unsigned int i = 0; i < size; ++i) {
    out.push_back(kHex[digest[i] >> 4]);
    out.push_back(kHex[digest[i] & 0xf]);
  }
  return out;
}

std::string actor_of(std::string_view token_name) { return "api:" + std::string(token_name); }

std::string create_token(db::Tx& tx, const std::string& name, Role role,
                         std::optional<std::chrono::seconds> expires_in) {
  if (!valid_name(name)) {
    throw FieldError("name", "token name '" + name.substr(0, 80) +
                                 "' is not valid: lower-case letters, digits, '.', '_' and '-', "
                                 "starting with a letter or digit, at most 63 characters");
  }
  if (expires_in && expires_in->count() <= 0) {
    throw FieldError("expires", "a token's lifetime must be positive");
  }
  const std::string token = new_token();
  std::optional<std::int64_t> seconds;
  if (expires_in) seconds = expires_in->count();
  const auto r = tx.exec(kInsertToken, {name, token_sha256(token), std::string(to_string(role)), seconds});
  if (r.empty()) {
    throw Error(errc::conflict, "a token named '" + name +
                                    "' exists already (names are never reused, even once "
                                    "revoked, so that the history's actor stays unambiguous)");
  }
  return token;
}

std::vector<TokenInfo> list_tokens(db::Tx& tx) {
  std::vector<TokenInfo> out;
  for (const auto row : tx.exec(kListTokens)) {
    TokenInfo t;
    t.name = row["name"].as_string();
    t.role = parse_role(row["role"].view()).value_or(Role::reader);
    t.created_at = row["created_at"].as_string();
    t.created_by = row["created_by"].as_string();
    t.expires_at = row["expires_at"].opt<std::string>();
    t.revoked_at = row["revoked_at"].opt<std::string>();
    t.last_used_at = row["last_used_at"].opt<std::string>();
    t.state = row["state"].as_string();
    out.push_back(std::move(t));
  }
  return out;
}

bool revoke_token(db::Tx& tx, const std::string& name) { return !tx.exec(kRevokeToken, {name}).empty(); }

std::chrono::seconds parse_expiry(std::string_view text) {
  const std::string t(text);
  std::size_t digits = 0;
  while (digits < t.size() && std::isdigit(static_cast<unsigned char>(t[digits]))) ++digits;
  const std::string unit = t.substr(digits);
  std::int64_t factor = 0;
  if (unit.empty() || unit == "s") factor = 1;
  else if (unit == "m") factor = 60;
  else if (unit == "h") factor = 3600;
  else if (unit == "d") factor = 86400;
  if (digits == 0 || digits > 9 || factor == 0) {
    throw FieldError("expires",
                     "'" + t.substr(0, 40) + "' is not a lifetime: use a number and s, m, h or d (e.g. 30d)");
  }
  const std::int64_t n = std::stoll(t.substr(0, digits));
  if (n <= 0) throw FieldError("expires", "a token's lifetime must be positive");
  constexpr std::int64_t kTenYears = 10LL * 366 * 86400;
  if (n * factor > kTenYears) throw FieldError("expires", "'" + t + "' is longer than ten years");
  return std::chrono::seconds(n * factor);
}

std::optional<Role> required_role(std::string_view method, std::string_view route, bool metrics_open, bool console) {
  if (route == "/healthz" || route == "/readyz" || route == "/version") return std::nullopt;
  if (route == "/openapi.json") return std::nullopt;  // the API's description: no secret in it
  if (route == "/metrics") return metrics_open ? std::nullopt : std::optional<Role>(Role::reader);
  // The console's login page, form and logout: open where there is a
  // console (or no one could log in), an operator's anywhere else.
  if (route == "/login" || (method == "POST" && route == "/logout")) {
    return console ? std::nullopt : std::optional<Role>(Role::operator_);
  }
  if (method == "GET" || method == "HEAD") return Role::reader;  // the console's pages too
  // The console's actions (cancel, retry, pause, resume): an operator's.
  if (method == "POST" && (route.starts_with("/jobs/") || route.starts_with("/queues/"))) {
    return Role::operator_;
  }
  if (method == "POST" && (route == "/v1/jobs" || route == "/v1/jobs/batch" || route == "/v1/jobs/{id}/cancel" ||
                           route == "/v1/jobs/{id}/retry")) {
    return Role::submitter;  // the handlers check a submitter's ownership
  }
  return Role::operator_;  // parameters, queues, job types and anything new
}

std::optional<Identity> identity_of(const http::Request& request) {
  if (request.principal.empty()) return std::nullopt;
  const auto role = parse_role(request.role);
  if (!role) return std::nullopt;
  return Identity{request.principal, *role};
}

std::string request_actor(const http::Request& request) {
  return request.principal.empty() ? std::string() : actor_of(request.principal);
}

std::optional<http::Response> authenticate(db::Pool& pool, std::string_view token, Role need, std::string_view what,
                                           bool from_cookie, Identity* out) {
  // Bounded before hashing or querying: a token is 47 characters.
  if (token.size() > 256 || !starts_with(token, kTokenPrefix)) {
    return unauthorized("the token is not a Conveyor API token (they start with cvt_)");
  }
  const std::string hash = token_sha256(token);
  auto& unknown = unknown_hashes();
  const bool known_unknown = unknown.contains(hash);
  const auto rows = known_unknown ? db::Result() : pool.exec_idempotent(kCheckToken, {hash});
  if (rows.empty()) {
    if (!known_unknown) unknown.add(hash);
    if (const auto left_out = unknown.may_log()) {
      logging::get("auth")->warn("{}: refused an unknown token ({} more refusals of unknown tokens not logged)", what,
                                 *left_out);
    }
    return unauthorized(from_cookie ? "the login has no valid token any more: log in again"
                                    : "the token is not known (mistyped, or from another "
                                      "installation)");
  }
  const auto row = rows[0];
  const std::string name = row["name"].as_string();
  if (row["revoked"].as_bool()) {
    logging::get("auth")->warn("{}: refused token '{}': revoked", what, name);
    return unauthorized("token '" + name + "' was revoked");
  }
  if (row["expired"].as_bool()) {
    return unauthorized("token '" + name + "' expired at " + row["expires_at"].as_string());
  }
  const Role role = parse_role(row["role"].view()).value_or(Role::reader);
  if (!allows(role, need)) {
    return http::problem(403, http::reason_phrase(403),
                         "token '" + name + "' has the role " + std::string(to_string(role)) + "; " +
                             std::string(what) + " needs " + std::string(to_string(need)) +
                             (need == Role::operator_ ? "" : " or higher"));
  }
  if (out != nullptr) *out = Identity{name, role};
  return std::nullopt;
}

std::string create_session(db::Pool& pool, const std::string& token_name, std::chrono::seconds ttl) {
  const std::string session = random_secret(kSessionPrefix);
  const auto rows = pool.transact([&](db::Tx& tx) {
    return tx.exec(kInsertSession, {token_sha256(session), token_name, static_cast<std::int64_t>(ttl.count())});
  });
  if (rows.empty()) throw Error(errc::not_found, "token '" + token_name + "' does not exist");
  return session;
}

void end_session(db::Pool& pool, std::string_view session) {
  if (session.size() > 256 || !starts_with(session, kSessionPrefix)) return;
  pool.transact([&](db::Tx& tx) { tx.exec(kDeleteSession, {token_sha256(session)}); });
}

std::string session_of(const http::Request& request, std::string_view cookie_name) {
  const auto cookie = request.header("Cookie");
  if (!cookie || cookie_name.empty()) return "";
  return cookie_value(*cookie, cookie_name);
}

namespace {

// A console session's identity, or the 401 that ends it.
std::optional<http::Response> authenticate_session(db::Pool& pool, std::string_view session, Role need,
                                                   std::string_view what, Identity* out) {
  if (session.size() > 256 || !starts_with(session, kSessionPrefix)) {
    return unauthorized("the session cookie is not one of ours: log in again at /login");
  }
  const auto rows = pool.transact([&](db::Tx& tx) { return tx.exec(kCheckSession, {token_sha256(session)}); });
  if (rows.empty()) return unauthorized("the session has ended: log in again at /login");
  const auto row = rows[0];
  const std::string name = row["name"].as_string();
  if (row["revoked"].as_bool()) return unauthorized("token '" + name + "' was revoked: the session has ended");
  if (row["expired"].as_bool()) return unauthorized("the session of token '" + name + "' has expired: log in again");
  const Role role = parse_role(row["role"].view()).value_or(Role::reader);
  if (!allows(role, need)) {
    return http::problem(403, http::reason_phrase(403),
                         "the session of token '" + name + "' has the role " + std::string(to_string(role)) + "; " +
                             std::string(what) + " needs " + std::string(to_string(need)));
  }
  if (out != nullptr) *out = Identity{name, role};
  return std::nullopt;
}

}  // namespace

http::Guard make_guard(db::Pool& pool, GuardOptions options) {
  return [&pool, options](http::Request& request) -> std::optional<http::Response> {
    const bool console = !options.cookie_name.empty();
    const auto need = required_role(request.method, request.route, options.metrics_open, console);
    if (!need) return std::nullopt;

    // A bearer token first; else, where there is a console, its session
    // cookie (also behind a proxy that adds its own Authorization scheme).
    std::string token;
    const auto header = request.header("Authorization");
    if (header) {
      const std::string value = trim(*header);
      if (lower(value.substr(0, 7)) == "bearer ") token = trim(std::string_view(value).substr(7));
    }
    const std::string session = token.empty() ? session_of(request, options.cookie_name) : "";
    const std::string what = request.method + " " + request.route;
    Identity who;
    if (!token.empty()) {
      if (auto refused = authenticate(pool, token, *need, what, false, &who)) return refused;
    } else if (!session.empty()) {
      if (auto refused = authenticate_session(pool, session, *need, what, &who)) return refused;
    } else if (header) {
      return unauthorized("the Authorization header must be 'Bearer <token>' (other schemes are not accepted)");
    } else {
      // A browser asking for a page of a service with a login goes there.
      const auto accept = request.header("Accept");
      if (console && request.method == "GET" && accept && accept->find("text/html") != std::string::npos) {
        http::Response r = http::Response::text("log in at /login\n", 303);
        r.headers["Location"] = "/login";
        return r;
      }
      return unauthorized(
          "this route needs a token: send 'Authorization: Bearer <token>' (create one with "
          "`conveyor token create NAME --role " +
          std::string(to_string(*need)) + "`)");
    }
    request.principal = who.name;
    request.role = std::string(to_string(who.role));
    return std::nullopt;
  };
}

RateLimiter::RateLimiter(double rate, double burst) : rate_(rate), burst_(std::max(1.0, burst)) {}

std::int64_t RateLimiter::take(const std::string& key, double units) {
  if (rate_ <= 0) return 0;  // no limit
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mu_);
  auto [it, inserted] = buckets_.try_emplace(key, Bucket{burst_, now});
  Bucket& b = it->second;
  const std::chrono::duration<double> elapsed = now - b.at;
  b.tokens = std::min(burst_, b.tokens + elapsed.count() * rate_);
  b.at = now;
  if (b.tokens >= units) {
    b.tokens -= units;
    return 0;
  }
  return std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil((units - b.tokens) / rate_)));
}

}  // namespace conveyor::auth
