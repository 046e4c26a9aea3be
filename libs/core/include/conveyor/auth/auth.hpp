#pragma once
// conveyor::auth — who may do what through the REST API and the monitor.
//
// A client sends `Authorization: Bearer <token>` (the monitor's page also
// takes the token from its login cookie). A token belongs to a named row of
// conveyor.api_token with a role; only its SHA-256 is stored, so a database
// dump does not hand out tokens. Roles are ordered:
//   reader     every GET
//   submitter  reader + POST /v1/jobs, and cancel/retry of its own jobs
//   operator   everything (parameters, queues, job types, any job)
// What each route needs is decided here, once (required_role): a route that
// is not listed needs an operator, so a new route is closed by default.
// /healthz, /readyz, /version and /openapi.json are open; /metrics is open unless the
// service is configured otherwise (CONVEYOR_METRICS_REQUIRE_TOKEN).
//
// The token never reaches a log: messages name the token's row, or say that
// the token is unknown.
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "conveyor/http/server.hpp"

namespace conveyor::db {
class Pool;
class Tx;
}  // namespace conveyor::db

namespace conveyor::auth {

enum class Role { reader = 1, submitter = 2, operator_ = 3 };

std::string_view to_string(Role role);
// nullopt for anything but "reader", "submitter" and "operator".
std::optional<Role> parse_role(std::string_view text);
// Whether a token of role `have` may do what needs `need`.
constexpr bool allows(Role have, Role need) { return static_cast<int>(have) >= static_cast<int>(need); }

// A new random token: "cvt_" and 43 characters of base64url (256 bits).
std::string new_token();
// Lower-case hex SHA-256 of the token: the stored form.
std::string token_sha256(std::string_view token);

// The history actor of what a token changes: "api:<name>".
std::string actor_of(std::string_view token_name);

// A token's row, without its hash.
struct TokenInfo {
  std::string name;
  Role role = Role::reader;
  std::string created_at;  // RFC 3339
  std::string created_by;
  std::optional<std::string> expires_at;
  std::optional<std::string> revoked_at;
  std::optional<std::string> last_used_at;
  // "active", "expired" or "revoked", as of the database's now().
  std::string state;
};

// Creates a token and returns it (the only time it is seen). Throws
// Error(bad_input) for a bad name (lower-case letters, digits, '.', '_',
// '-'; at most 63) and Error(conflict) when the name is taken, revoked or
// not (a name is never reused, so the history's actor stays unambiguous).
// `expires_in`: nullopt for a token that does not expire.
std::string create_token(db::Tx& tx, const std::string& name, Role role,
                         std::optional<std::chrono::seconds> expires_in);
std::vector<TokenInfo> list_tokens(db::Tx& tx);
// Revokes the named token now; false when no active token has that name
// (unknown, or already revoked).
bool revoke_token(db::Tx& tx, const std::string& name);

// A duration for `--expires`: "30d", "12h", "90m", "3600s" (a bare number
// is seconds). Throws Error(bad_input) naming the text otherwise.
std::chrono::seconds parse_expiry(std::string_view text);

// The identity a checked request carries (http::Request::principal/role).
struct Identity {
  std::string name;
  Role role = Role::reader;
};

// The role a request needs: nullopt when the route is open to anyone.
// `metrics_open`: whether /metrics needs no token; `console`: whether the
// service has a browser login (/login, POST /logout open).
std::optional<Role> required_role(std::string_view method, std::string_view route, bool metrics_open,
                                  bool console = false);

// The Identity the server's guard put on a request (nullopt: an open route).
std::optional<Identity> identity_of(const http::Request& request);

// The history actor a handler should use for what a request changes:
// actor_of(name) for a request that carried a token, "" otherwise (the
// service's own actor then stands).
std::string request_actor(const http::Request& request);

// Checks a presented token: nullopt when it is active and its role allows
// `need` (and then *out, when given, is its identity), else the 401 or 403
// answer. `what` names what was asked, for the answer and the log.
std::optional<http::Response> authenticate(db::Pool& pool, std::string_view token, Role need, std::string_view what,
                                           bool from_cookie = false, Identity* out = nullptr);

// The console's login (the monitor). A session is made for a token that
// authenticate() accepted and returned as "cvs_..." (the browser's cookie;
// only its SHA-256 is stored, in conveyor.console_session). It acts with
// its token's role, ends after `ttl` or at the token's own expiry, and
// ends at once when the token is revoked. Throws Error(not_found) for an
// unknown token name.
std::string create_session(db::Pool& pool, const std::string& token_name, std::chrono::seconds ttl);
// Ends a session now (logout); nothing for an unknown one.
void end_session(db::Pool& pool, std::string_view session);
// The value of the session cookie `cookie_name` of a request, or "".
std::string session_of(const http::Request& request, std::string_view cookie_name);

// Builds the server's guard: reads the bearer token (or the console
// session in the cookie named `cookie_name`, when not empty), looks it up, and answers 401 (no token,
// unknown, expired or revoked) or 403 (role too low) as problem+json naming
// what is missing. On success it sets request.principal and request.role.
// Looks tokens up in `pool` (last_used_at is refreshed at most once a minute).
struct GuardOptions {
  bool metrics_open = true;
  std::string cookie_name;  // the monitor's login cookie; empty: none
};
http::Guard make_guard(db::Pool& pool, GuardOptions options);

// A token bucket per key (a token's name): `rate` per second, bursts of
// `burst`. take() returns 0 when `units` were taken (all or none), or the
// seconds to wait before they will be there (for Retry-After); more units
// than the burst are never there. Thread-safe.
class RateLimiter {
 public:
  RateLimiter(double rate, double burst);
  std::int64_t take(const std::string& key, double units = 1.0);
  double burst() const { return burst_; }
  double rate() const { return rate_; }

 private:
  struct Bucket {
    double tokens;
    std::chrono::steady_clock::time_point at;
  };
  const double rate_;
  const double burst_;
  std::mutex mu_;
  std::map<std::string, Bucket> buckets_;
};

}  // namespace conveyor::auth
