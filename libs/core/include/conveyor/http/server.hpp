#pragma once
// conveyor::http — the HTTP server every Conveyor service embeds (admin
// endpoints, the REST API), with our own request/response types so that the
// HTTP library stays an implementation detail of src/http.
//
// Routing: patterns are literal path segments or "{name}" placeholders
// ("/v1/jobs/{id}/cancel"). No route for the path: 404; a route for the path
// but not the method: 405. Every error answer is application/problem+json.
// A handler's exception is mapped by problem_from() (problem.hpp).
//
// Hostile clients: bodies are bounded as they stream (413), Content-Encoding
// is refused (415), a POST/PUT/PATCH/DELETE with a body must say it is JSON
// (415; this also stops simple cross-site form posts), headers and bodies
// have deadlines (408), connections are capped (503), Range is ignored, and
// metric labels come from fixed sets only.
#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace conveyor::metrics {
class Registry;
}

namespace conveyor::http {

struct Request {
  std::string method;  // "GET", "POST"...
  std::string path;    // without the query string
  std::string body;
  std::map<std::string, std::string> headers;      // names lower-cased
  std::map<std::string, std::string> query;        // decoded; last value wins
  std::map<std::string, std::string> path_params;  // from "{name}" segments
  std::string route;                               // the matched pattern
  // Who sent it, as the server's guard found out (auth.hpp); both empty
  // on an open route or a server without a guard.
  std::string principal;  // a token's name
  std::string role;       // "reader", "submitter", "operator"

  // Case-insensitive header lookup.
  std::optional<std::string> header(std::string_view name) const;
  // Query parameter or `fallback` when absent.
  std::string query_param(const std::string& name, const std::string& fallback = "") const;
  // A "{name}" segment of the matched route; throws Error(internal) if the
  // route has no such placeholder (a programming error).
  const std::string& path_param(const std::string& name) const;
  // The body parsed as JSON; a malformed body throws nlohmann's parse_error,
  // which problem_from() turns into 400.
  nlohmann::json json() const;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::map<std::string, std::string> headers;

  static Response json(const nlohmann::json& body, int status = 200);
  static Response text(std::string body, int status = 200, std::string content_type = "text/plain; charset=utf-8");
};

using Handler = std::function<Response(const Request&)>;
// Runs before every route's handler: nullopt lets the request through (it
// may fill in principal and role); a Response is answered instead (401,
// 403). An exception is answered as from a handler (problem_from).
using Guard = std::function<std::optional<Response>(Request&)>;

// Owns a listening socket and its worker threads. Routes must be added
// before start(); after that, route() throws. Handlers run concurrently on
// the server's threads and must be thread-safe. stop() and the destructor
// wait for in-flight requests.
class Server {
 public:
  struct Options {
    // Larger bodies get 413. The limit applies to the body as received,
    // chunked or not; a Content-Encoding (gzip, br) is refused with 415, so
    // nothing is ever inflated.
    std::size_t max_body_bytes = 1024 * 1024;
    // Threads kept while idle; more are started on demand, one per open
    // connection up to max_connections, and leave after a while idle.
    std::size_t threads = 8;
    // Connections served at once; one more is answered 503 and closed.
    std::size_t max_connections = 256;
    // A request's line and headers must arrive within header_timeout of its
    // first byte (408 otherwise), its body within body_timeout of the end of
    // the headers; a read waits at most read_timeout for the next bytes.
    // Slow clients (slowloris) hold a connection for a bounded time only.
    std::chrono::milliseconds header_timeout{10000};
    std::chrono::milliseconds body_timeout{30000};
    std::chrono::milliseconds read_timeout{5000};
    std::chrono::milliseconds write_timeout{5000};
    // An idle keep-alive connection is closed after this.
    std::chrono::milliseconds keep_alive_timeout{5000};
    // Where conveyor_http_requests_total and the latency histogram go;
    // nullptr: metrics::default_registry().
    metrics::Registry* registry = nullptr;
    // HTTPS: PEM files of the certificate (a chain, leaf first) and of its
    // unencrypted private key; a service sets them from
    // CONVEYOR_TLS_CERT_FILE and CONVEYOR_TLS_KEY_FILE, the names its
    // errors use. Both set: the server speaks only TLS (1.2 or later), with
    // every deadline and limit above (the handshake must finish within
    // header_timeout); a plain HTTP request gets no answer and is closed.
    // Both empty: plain HTTP.
    std::string tls_cert_file;
    std::string tls_key_file;
  };

  Server(std::string host, int port);  // port 0: any free port
  // Throws Error(invalid_config) when only one of the TLS files is set, or
  // one cannot be read, holds no PEM certificate or key, or they do not match.
  Server(std::string host, int port, Options options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  void route(const std::string& method, const std::string& pattern, Handler handler);
  struct RouteInfo {
    std::string method;   // "GET"
    std::string pattern;  // "/v1/jobs/{id}"
  };
  // The routes added so far, in the order added. start() logs them
  // ("routes: GET /healthz, ..."); the OpenAPI test compares that list
  // with deploy/api/openapi.json.
  std::vector<RouteInfo> routes() const;
  // Checks every request before its handler (auth::make_guard). Set before
  // start(); after that, throws.
  void set_guard(Guard guard);
  // Binds and listens, then serves on background threads. Returns once the
  // socket accepts connections. Throws Error(unavailable) if it cannot bind.
  void start();
  // The bound port (useful with port 0); 0 before start().
  int port() const;
  const std::string& host() const;
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace conveyor::http
