#include "conveyor/http/client.hpp"

#include <pthread.h>
#include <signal.h>

#include <cctype>
#include <ctime>

#include <httplib.h>

#include "conveyor/error/error.hpp"
#include "conveyor/logging/logging.hpp"

namespace conveyor::http {
namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

struct ParsedUrl {
  std::string origin;  // scheme://host[:port]
  std::string target;  // /path?query
  std::string user;
  std::string password;
};

ParsedUrl parse_url(const std::string& url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos || scheme_end == 0) {
    throw Error(errc::bad_input, "not an http(s) URL: " + logging::redact_url(url));
  }
  const std::string scheme = lower(url.substr(0, scheme_end));
  if (scheme != "http" && scheme != "https") {
    throw Error(errc::bad_input, "unsupported URL scheme '" + scheme + "' in " + logging::redact_url(url));
  }
  const auto authority_begin = scheme_end + 3;
  auto path_begin = url.find_first_of("/?#", authority_begin);
  if (path_begin == std::string::npos) path_begin = url.size();
  std::string authority = url.substr(authority_begin, path_begin - authority_begin);
  ParsedUrl parsed;
  if (const auto at = authority.rfind('@'); at != std::string::npos) {
    const std::string userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    const auto colon = userinfo.find(':');
    parsed.user = userinfo.substr(0, colon);
    if (colon != std::string::npos) parsed.password = userinfo.substr(colon + 1);
  }
  if (authority.empty()) throw Error(errc::bad_input, "URL has no host: " + logging::redact_url(url));
  parsed.origin = scheme + "://" + authority;
  parsed.target = url.substr(path_begin);
  if (const auto hash = parsed.target.find('#'); hash != std::string::npos) parsed.target.resize(hash);
  if (parsed.target.empty() || parsed.target.front() != '/') parsed.target.insert(0, "/");
  return parsed;
}

// Keeps SIGPIPE from ending the process while this thread talks TLS: httplib
// hands OpenSSL a plain socket BIO, which write()s (no MSG_NOSIGNAL), so a
// server that resets the connection mid-request would raise SIGPIPE. The
// signal is blocked for this thread and one it raised is discarded.
class SigpipeBlocked {
 public:
  SigpipeBlocked() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigemptyset(&pending);
    was_pending_ = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1;
    blocked_ = pthread_sigmask(SIG_BLOCK, &pipe_, &old_) == 0;
  }
  ~SigpipeBlocked() {
    if (!blocked_) return;
    sigset_t pending;
    sigemptyset(&pending);
    if (!was_pending_ && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
      const timespec now{0, 0};
      (void)sigtimedwait(&pipe_, nullptr, &now);
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeBlocked(const SigpipeBlocked&) = delete;
  SigpipeBlocked& operator=(const SigpipeBlocked&) = delete;

 private:
  sigset_t pipe_{};
  sigset_t old_{};
  bool was_pending_ = false;
  bool blocked_ = false;
};

}  // namespace

ClientResponse http_request(const std::string& method, const std::string& url, const std::string& body,
                            const std::map<std::string, std::string>& headers, std::chrono::milliseconds timeout) {
  return http_request(method, url, body, headers, timeout, TlsOptions{});
}

namespace {

// Sends one request on `client` (whose connection may be kept alive).
ClientResponse send_on(httplib::Client& client, const ParsedUrl& parsed, const std::string& method,
                       const std::string& url, const std::string& body,
                       const std::map<std::string, std::string>& headers, std::chrono::milliseconds timeout) {
  client.set_connection_timeout(timeout);
  client.set_read_timeout(timeout);
  client.set_write_timeout(timeout);
  if (!parsed.user.empty()) client.set_basic_auth(parsed.user, parsed.password);

  httplib::Request request;
  request.method = method;
  request.path = parsed.target;
  request.body = body;
  bool has_content_type = false;
  for (const auto& [name, value] : headers) {
    request.headers.emplace(name, value);
    has_content_type = has_content_type || lower(name) == "content-type";
  }
  if (!body.empty() && !has_content_type) request.headers.emplace("Content-Type", "application/json");

  const auto started = std::chrono::steady_clock::now();
  httplib::Result result = [&] {
    if (parsed.origin.rfind("https:", 0) != 0) return client.send(request);
    const SigpipeBlocked quiet;
    return client.send(request);
  }();
  if (!result) {
    const auto error = result.error();
    const bool timed_out = error == httplib::Error::ConnectionTimeout ||
                           (error == httplib::Error::Read && std::chrono::steady_clock::now() - started >= timeout);
    const std::string what =
        method + " " + logging::redact_url(url) + ": " +
        (timed_out ? "timed out after " + std::to_string(timeout.count()) + " ms" : httplib::to_string(error));
    throw Error(timed_out ? errc::timeout : errc::unavailable, what);
  }
  ClientResponse response;
  response.status = result->status;
  response.body = result->body;
  for (const auto& [name, value] : result->headers) response.headers[lower(name)] = value;
  return response;
}

}  // namespace

ClientResponse http_request(const std::string& method, const std::string& url, const std::string& body,
                            const std::map<std::string, std::string>& headers, std::chrono::milliseconds timeout,
                            const TlsOptions& tls) {
  const ParsedUrl parsed = parse_url(url);
  httplib::Client client(parsed.origin, tls.client_cert_file, tls.client_key_file);
  if (!tls.ca_file.empty()) client.set_ca_cert_path(tls.ca_file.c_str());
  client.enable_server_certificate_verification(tls.verify);
  return send_on(client, parsed, method, url, body, headers, timeout);
}

struct KeepAliveClient::Impl {
  // One client per origin; the user (basic auth) is part of the key so one
  // endpoint's credentials never travel with another's request.
  std::map<std::string, std::unique_ptr<httplib::Client>> clients;
};

KeepAliveClient::KeepAliveClient() : impl_(std::make_unique<Impl>()) {}
KeepAliveClient::~KeepAliveClient() = default;

ClientResponse KeepAliveClient::request(const std::string& method, const std::string& url, const std::string& body,
                                        const std::map<std::string, std::string>& headers,
                                        std::chrono::milliseconds timeout) {
  const ParsedUrl parsed = parse_url(url);
  const std::string key = parsed.user + ":" + parsed.password + "@" + parsed.origin;
  auto it = impl_->clients.find(key);
  if (it == impl_->clients.end()) {
    // Bounded: a sink per job could name endless origins.
    if (impl_->clients.size() >= 64) impl_->clients.clear();
    auto client = std::make_unique<httplib::Client>(parsed.origin);
    client->set_keep_alive(true);
    // A kept-alive request goes out in two writes (headers, body): without
    // TCP_NODELAY the body waits for the peer's delayed ACK (40 ms).
    client->set_tcp_nodelay(true);
    client->enable_server_certificate_verification(true);
    it = impl_->clients.emplace(key, std::move(client)).first;
  }
  try {
    return send_on(*it->second, parsed, method, url, body, headers, timeout);
  } catch (const Error&) {
    // A broken kept-alive connection is not reused.
    impl_->clients.erase(it);
    throw;
  }
}

}  // namespace conveyor::http
