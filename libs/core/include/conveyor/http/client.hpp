#pragma once
// A small blocking HTTP client (webhook sinks, orchestrator APIs, tests).
// http_request is thread-safe: each call uses its own connection;
// KeepAliveClient keeps connections for one thread.
#include <chrono>
#include <map>
#include <memory>
#include <string>

namespace conveyor::http {

struct ClientResponse {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // names lower-cased
};

// TLS settings of an https request (ignored for http).
struct TlsOptions {
  std::string ca_file;           // PEM bundle to trust; empty: the system's
  bool verify = true;            // false: no server certificate check (never the default)
  std::string client_cert_file;  // PEM, with client_key_file: mutual TLS
  std::string client_key_file;
};

// `url` is http://host[:port]/path?query or https://….
// Any HTTP status is returned, not thrown. Throws Error(errc::timeout) when
// the connection times out, Error(errc::unavailable) for other transport
// failures and Error(errc::bad_input) for a malformed URL; the message names
// the method and URL (password redacted).
ClientResponse http_request(const std::string& method, const std::string& url, const std::string& body = "",
                            const std::map<std::string, std::string>& headers = {},
                            std::chrono::milliseconds timeout = std::chrono::seconds(10));
ClientResponse http_request(const std::string& method, const std::string& url, const std::string& body,
                            const std::map<std::string, std::string>& headers, std::chrono::milliseconds timeout,
                            const TlsOptions& tls);

// The same requests on kept-alive connections, one per origin, reused from
// one request to the next (webhook deliveries to one endpoint pay the TCP
// and TLS handshakes once). Not thread-safe: one per thread.
class KeepAliveClient {
 public:
  KeepAliveClient();
  ~KeepAliveClient();
  KeepAliveClient(const KeepAliveClient&) = delete;
  KeepAliveClient& operator=(const KeepAliveClient&) = delete;
  ClientResponse request(const std::string& method, const std::string& url, const std::string& body,
                         const std::map<std::string, std::string>& headers, std::chrono::milliseconds timeout);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace conveyor::http
