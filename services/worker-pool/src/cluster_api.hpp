#pragma once
// The HTTP side of the cluster backends (kubernetes, nomad): one JSON call
// to an orchestrator's API, its errors named for an operator, and the
// back-off that keeps a failing API from being called every tick.
//
// Not thread-safe: owned by one backend, called from the pool's loop thread.
#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "conveyor/error/error.hpp"
#include "conveyor/http/client.hpp"

namespace conveyor::workerpool {

using Json = nlohmann::json;

// Where an orchestrator's API is and how to authenticate to it.
struct ApiEndpoint {
  std::string name;      // "kubernetes API", "Nomad API": the start of every error message
  std::string base_url;  // https://10.96.0.1:443, http://127.0.0.1:4646
  // Headers for each call, read afresh every time: a projected service-account
  // token or a token file rotates under a running pool.
  std::function<std::map<std::string, std::string>()> auth_headers;
  http::TlsOptions tls;
  std::chrono::milliseconds timeout{10000};
};

// An answer of the API that is not what the call expected (403, 409, 5xx...).
class ApiError : public Error {
 public:
  ApiError(int status, const std::string& message)
      : Error(status == 404   ? errc::not_found
              : status == 409 ? errc::conflict
                              : errc::unavailable,
              message),
        status_(status) {}
  int status() const noexcept { return status_; }

 private:
  int status_;
};

// Largest response body read (a pod list of a big pool is well under this).
inline constexpr std::size_t kMaxApiResponseBytes = 32u * 1024u * 1024u;

// Percent-encodes one path segment or query value (RFC 3986 unreserved kept).
std::string url_encode(std::string_view s);

class ApiClient {
 public:
  explicit ApiClient(ApiEndpoint endpoint) : endpoint_(std::move(endpoint)) {}

  // `method` `path` (with its query) and an optional JSON body. Returns the
  // parsed body (null when empty) for a status in `ok`; throws ApiError for
  // any other status, naming the call, the status and the API's own message
  // (Kubernetes Status.message, Nomad's text); Error(timeout/unavailable) for
  // transport failures. Bodies are parsed with bounded size and depth.
  Json call(const std::string& method, const std::string& path, const Json* body = nullptr,
            std::initializer_list<int> ok = {200, 201, 202}) const;

  const ApiEndpoint& endpoint() const { return endpoint_; }

 private:
  ApiEndpoint endpoint_;
};

// Exponential back-off between failing calls: 1 s doubling up to 30 s,
// reset by a success.
class Backoff {
 public:
  using Clock = std::chrono::steady_clock;
  bool ready(Clock::time_point now = Clock::now()) const { return !until_ || now >= *until_; }
  // Records a failure; returns the wait before the next try.
  std::chrono::milliseconds failed(Clock::time_point now = Clock::now());
  void succeeded() {
    failures_ = 0;
    until_.reset();
  }
  int failures() const { return failures_; }

 private:
  int failures_ = 0;
  std::optional<Clock::time_point> until_;
};

// j[key] when it is a string, else "".
std::string json_string(const Json& j, const char* key);

// A DNS-1123 subdomain from a worker name: lower case, [a-z0-9.-] only,
// starting and ending alphanumeric, at most 253 characters.
std::string dns_name(std::string_view name);

}  // namespace conveyor::workerpool
