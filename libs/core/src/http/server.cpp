#include "conveyor/http/server.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "conveyor/error/error.hpp"
#include "conveyor/http/problem.hpp"
#include "conveyor/logging/logging.hpp"
#include "conveyor/metrics/metrics.hpp"

namespace conveyor::http {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Non-empty path segments: "/v1/jobs/" and "/v1/jobs" are the same path.
std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> segments;
  std::size_t pos = 0;
  while (pos <= path.size()) {
    auto next = path.find('/', pos);
    if (next == std::string_view::npos) next = path.size();
    if (next > pos) segments.emplace_back(path.substr(pos, next - pos));
    pos = next + 1;
  }
  return segments;
}

bool is_placeholder(const std::string& segment) {
  return segment.size() > 2 && segment.front() == '{' && segment.back() == '}';
}

struct Route {
  std::string method;
  std::string pattern;
  std::vector<std::string> segments;
  Handler handler;
  int literals = 0;  // more literal segments = more specific = preferred

  bool matches(const std::vector<std::string>& path,
               std::map<std::string, std::string>* params) const {
    if (path.size() != segments.size()) return false;
    for (std::size_t i = 0; i < path.size(); ++i) {
      if (is_placeholder(segments[i])) {
        if (params) (*params)[segments[i].substr(1, segments[i].size() - 2)] = path[i];
      } else if (segments[i] != path[i]) {
        return false;
      }
    }
    return true;
  }
};

// Whether the request being served on this thread has been counted yet
// (httplib serves a request start to finish on one thread). Counting happens
// before the response is written, so a client that sees the answer also
// sees it counted in /metrics.
thread_local bool request_counted = false;

}  // namespace

// ------------------------------------------------------------------ Request

std::optional<std::string> Request::header(std::string_view name) const {
  const auto it = headers.find(lower(name));
  if (it == headers.end()) return std::nullopt;
  return it->second;
}

std::string Request::query_param(const std::string& name, const std::string& fallback) const {
  const auto it = query.find(name);
  return it == query.end() ? fallback : it->second;
}

const std::string& Request::path_param(const std::string& name) const {
  const auto it = path_params.find(name);
  if (it == path_params.end()) {
    throw Error(errc::internal, "route " + route + " has no path parameter {" + name + "}");
  }
  return it->second;
}

nlohmann::json Request::json() const { return nlohmann::json::parse(body); }

Response Response::json(const nlohmann::json& body, int status) {
  Response response;
  response.status = status;
  response.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return response;
}

Response Response::text(std::string body, int status, std::string content_type) {
  Response response;
  response.status = status;
  response.content_type = std::move(content_type);
  response.body = std::move(body);
  return response;
}

// ------------------------------------------------------------------- Server

struct Server::Impl {
  std::string host;
  int requested_port;
  Options options;
  httplib::Server server;
  std::vector<Route> routes;
  std::thread thread;
  std::atomic<int> port{0};
  std::atomic<bool> loop_exited{false};
  bool started = false;
  bool stopped = false;
  metrics::Registry* registry;

  Impl(std::string h, int p, Options o)
      : host(std::move(h)),
        requested_port(p),
        options(o),
        registry(o.registry != nullptr ? o.registry : &metrics::default_registry()) {}

  void dispatch(const httplib::Request& in, httplib::Response& out) {
    const auto started_at = std::chrono::steady_clock::now();
    const std::vector<std::string> segments = split_path(in.path);
    // HEAD is served by the GET route (httplib drops the body).
    const std::string method = in.method == "HEAD" ? "GET" : in.method;

    const Route* best = nullptr;
    std::vector<std::string> allowed;
    for (const Route& r : routes) {
      if (!r.matches(segments, nullptr)) continue;
      if (r.method != method) {
        if (std::find(allowed.begin(), allowed.end(), r.method) == allowed.end()) {
          allowed.push_back(r.method);
        }
        continue;
      }
      if (best == nullptr || r.literals > best->literals) best = &r;
    }

    Response response;
    if (best == nullptr) {
      if (allowed.empty()) {
        response = problem(404, reason_phrase(404), "no route for " + in.path);
      } else {
        std::string allow;
        for (const auto& m : allowed) allow += (allow.empty() ? "" : ", ") + m;
        response = problem(405, reason_phrase(405),
                           "method " + in.method + " is not allowed on " + in.path);
        response.headers["Allow"] = allow;
      }
    } else {
      Request request;
      request.method = in.method;
      request.path = in.path;
      request.body = in.body;
      request.route = best->pattern;
      for (const auto& [name, value] : in.headers) request.headers[lower(name)] = value;
      for (const auto& [name, value] : in.params) request.query[name] = value;
      best->matches(segments, &request.path_params);
      try {
        response = best->handler(request);
      } catch (const std::exception& e) {
        response = problem_from(e);
      } catch (...) {
        // Not a std::exception: nothing to say about it, but still an answer.
        logging::get("http")->error("non-standard exception from handler of {} {}", in.method,
                                    best->pattern);
        response = problem(errc::internal, 500, reason_phrase(500),
                           "the server failed to handle the request; see its log");
      }
      const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - started_at;
      registry
          ->histogram("conveyor_http_request_duration_seconds",
                      "Time spent in HTTP handlers, by route pattern.", metrics::default_buckets(),
                      {{"method", method}, {"route", best->pattern}})
          .observe(elapsed.count());
    }

    out.status = response.status;
    for (const auto& [name, value] : response.headers) out.set_header(name, value);
    out.set_content(response.body, response.content_type);
    count(in.method, response.status, best != nullptr ? best->pattern : "unmatched");
  }

  void count(const std::string& method, int status, const std::string& route) {
    request_counted = true;
    registry
        ->counter("conveyor_http_requests_total", "HTTP requests answered, by status code.",
                  {{"code", std::to_string(status)},
                   {"method", method.empty() ? "unknown" : method},
                   {"route", route}})
        .inc();
  }

  // Answers errors httplib produces before our dispatcher runs (body too
  // large, unparsable request line, unsupported method) as problem+json.
  httplib::Server::HandlerResponse on_error(const httplib::Request& in, httplib::Response& out) {
    if (!out.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string detail;
    switch (out.status) {
      case 413:
        detail = "request body is larger than " + std::to_string(options.max_body_bytes) + " bytes";
        break;
      case 404:
        detail = "no route for " + in.path;
        break;
      case 400:
        detail = "malformed HTTP request";
        break;
      default:
        detail = reason_phrase(out.status);
    }
    const Response response = problem(out.status, reason_phrase(out.status), detail);
    out.set_content(response.body, response.content_type);
    if (!request_counted) count(in.method, out.status, "unmatched");
    return httplib::Server::HandlerResponse::Handled;
  }

  // Runs after the response was written.
  void on_logged(const httplib::Request& in, const httplib::Response& out) {
    if (!request_counted) count(in.method, out.status, "unmatched");
    request_counted = false;
    logging::get("http")->debug("{} {} -> {}", in.method, in.path, out.status);
  }
};

Server::Server(std::string host, int port) : Server(std::move(host), port, Options{}) {}

Server::Server(std::string host, int port, Options options)
    : impl_(std::make_unique<Impl>(std::move(host), port, options)) {}

Server::~Server() { stop(); }

void Server::route(const std::string& method, const std::string& pattern, Handler handler) {
  if (impl_->started) {
    throw Error(errc::internal, "route " + method + " " + pattern + " added after start()");
  }
  Route r{method, pattern, split_path(pattern), std::move(handler), 0};
  r.literals = static_cast<int>(
      std::count_if(r.segments.begin(), r.segments.end(),
                    [](const std::string& s) { return !is_placeholder(s); }));
  impl_->routes.push_back(std::move(r));
}

void Server::start() {
  if (impl_->stopped) throw Error(errc::internal, "http::Server cannot be restarted after stop()");
  if (impl_->started) return;
  Impl& impl = *impl_;
  httplib::Server& server = impl.server;

  const std::size_t threads = std::max<std::size_t>(1, impl.options.threads);
  server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server.set_payload_max_length(impl.options.max_body_bytes);
  // Short keep-alive so stop() does not wait long for idle client connections.
  server.set_keep_alive_timeout(1);
  // httplib's default adds SO_REUSEPORT, which would let a second process
  // silently share our port; SO_REUSEADDR alone allows quick restarts only.
  server.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });

  auto dispatch = [&impl](const httplib::Request& in, httplib::Response& out) {
    impl.dispatch(in, out);
  };
  const char* any = ".*";
  server.Get(any, dispatch);
  server.Post(any, dispatch);
  server.Put(any, dispatch);
  server.Patch(any, dispatch);
  server.Delete(any, dispatch);
  server.Options(any, dispatch);
  server.set_error_handler(httplib::Server::HandlerWithResponse(
      [&impl](const httplib::Request& in, httplib::Response& out) {
        return impl.on_error(in, out);
      }));
  server.set_pre_routing_handler([](const httplib::Request&, httplib::Response&) {
    request_counted = false;  // in case a failed write skipped the logger last time
    return httplib::Server::HandlerResponse::Unhandled;
  });
  server.set_logger([&impl](const httplib::Request& in, const httplib::Response& out) {
    impl.on_logged(in, out);
  });

  int bound;
  if (impl.requested_port == 0) {
    bound = server.bind_to_any_port(impl.host);
  } else {
    bound = server.bind_to_port(impl.host, impl.requested_port) ? impl.requested_port : -1;
  }
  if (bound < 0) {
    throw Error(errc::unavailable, "cannot listen on " + impl.host + ":" +
                                       std::to_string(impl.requested_port) +
                                       " (address in use or not local?)");
  }
  impl.port = bound;
  impl.started = true;
  // The socket already listens, so connections queue in its backlog until
  // the accept loop runs.
  impl.thread = std::thread([&impl] {
    impl.server.listen_after_bind();
    impl.loop_exited = true;
  });
  // stop() is a no-op until the accept loop has marked itself running, so
  // wait for that (a few microseconds) to make start();stop() safe.
  while (!server.is_running() && !impl.loop_exited) std::this_thread::sleep_for(std::chrono::microseconds(200));
  logging::get("http")->info("listening on {}:{}", impl.host, bound);
}

int Server::port() const { return impl_->port; }

const std::string& Server::host() const { return impl_->host; }

void Server::stop() {
  if (!impl_ || !impl_->started || impl_->stopped) return;
  impl_->stopped = true;
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace conveyor::http
