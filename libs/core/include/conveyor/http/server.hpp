#pragma once
// conveyor::http — the HTTP server every Conveyor service embeds (admin
// endpoints, the REST API), with our own request/response types so that the
// HTTP library stays an implementation detail of src/http.
//
// Routing: patterns are literal path segments or "{name}" placeholders
// ("/v1/jobs/{id}/cancel"). No route for the path: 404; a route for the path
// but not the method: 405. Every error answer is application/problem+json.
// A handler's exception is mapped by problem_from() (problem.hpp).
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

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
  static Response text(std::string body, int status = 200,
                       std::string content_type = "text/plain; charset=utf-8");
};

using Handler = std::function<Response(const Request&)>;

// Owns a listening socket and its worker threads. Routes must be added
// before start(); after that, route() throws. Handlers run concurrently on
// the server's threads and must be thread-safe. stop() and the destructor
// wait for in-flight requests.
class Server {
 public:
  struct Options {
    std::size_t max_body_bytes = 1024 * 1024;  // larger bodies get 413
    std::size_t threads = 8;
    // Where conveyor_http_requests_total and the latency histogram go;
    // nullptr: metrics::default_registry().
    metrics::Registry* registry = nullptr;
  };

  Server(std::string host, int port);  // port 0: any free port
  Server(std::string host, int port, Options options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  void route(const std::string& method, const std::string& pattern, Handler handler);
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
