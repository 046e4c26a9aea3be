#include "conveyor/runtime/check.hpp"

#include <cstdio>
#include <string_view>

#include "conveyor/error/error.hpp"
#include "conveyor/http/client.hpp"
#include "conveyor/logging/logging.hpp"

namespace conveyor::runtime {
namespace {

// A probe's answer is one line (a container runtime keeps it as the check's
// output): line breaks and runs of blanks become one space, long bodies cut.
std::string one_line(std::string_view text, std::size_t limit = 300) {
  std::string out;
  for (char c : text) {
    if (out.size() >= limit) {
      out += "...";
      break;
    }
    const bool blank = c == '\n' || c == '\r' || c == ' ' || c == '\t';
    if (blank && (out.empty() || out.back() == ' ')) continue;
    out += blank ? ' ' : c;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// Whether the service's HTTP server speaks HTTPS (runtime::run sets the
// server's TLS files from these keys; only both together start a service).
bool serves_tls(const config::Config& config) { return !config.get_string("CONVEYOR_TLS_CERT_FILE").empty(); }

// The probe asks its own instance on this machine. On a loopback address it
// does not check the certificate: a service's certificate names its public
// host, not 127.0.0.1, and /readyz carries no secret either way. Any other
// address is verified against the system's trust store.
bool loopback(const std::string& host) { return host == "[::1]" || host == "localhost" || host.rfind("127.", 0) == 0; }

// The host the probe asks: CONVEYOR_HTTP_HOST, 127.0.0.1 for a wildcard,
// an IPv6 address in brackets.
std::string probe_host(const config::Config& config) {
  std::string host = config.get_string("CONVEYOR_HTTP_HOST");
  if (host.empty() || host == "0.0.0.0" || host == "::" || host == "[::]") host = "127.0.0.1";
  if (host.find(':') != std::string::npos && host.front() != '[') host = "[" + host + "]";
  return host;
}

}  // namespace

int http_port(const config::Config& config, int default_http_port) {
  if (config.source("CONVEYOR_HTTP_PORT").kind == config::Source::Kind::default_value) return default_http_port;
  return static_cast<int>(config.get_int("CONVEYOR_HTTP_PORT"));
}

std::string readyz_url(const config::Config& config, int default_http_port) {
  const int port = http_port(config, default_http_port);
  if (port == 0) {
    throw Error(errc::invalid_config,
                "CONVEYOR_HTTP_PORT is 0 (a free port chosen at start-up, known only to the running "
                "process): set a fixed port to check this service");
  }
  return std::string(serves_tls(config) ? "https" : "http") + "://" + probe_host(config) + ":" + std::to_string(port) +
         "/readyz";
}

CheckResult check_ready(const config::Config& config, int default_http_port, std::chrono::milliseconds timeout) {
  std::string url;
  try {
    url = readyz_url(config, default_http_port);
    http::TlsOptions tls;
    tls.verify = !loopback(probe_host(config));
    const http::ClientResponse response = http::http_request("GET", url, "", {}, timeout, tls);
    if (response.status == 200) return {true, "ready: GET " + url + " answered 200"};
    return {false,
            "not ready: GET " + url + " answered " + std::to_string(response.status) + ": " + one_line(response.body)};
  } catch (const Error& e) {
    // Refused, timed out, port 0: the message names which (and the URL).
    return {false, "not ready: " + one_line(logging::redact_url(e.what()))};
  }
}

int check_main(const std::vector<std::filesystem::path>& env_files, const std::string& service,
               const config::Schema& schema, int default_http_port) {
  CheckResult result;
  try {
    const config::Config config = config::load(schema, env_files, config::process_environment());
    result = check_ready(config, default_http_port);
  } catch (const Error& e) {
    // The configuration is wrong: the service would not start either.
    result = {false, "cannot check: " + one_line(e.what(), 600)};
  }
  std::fprintf(result.ok ? stdout : stderr, "%s --check: %s\n", service.c_str(), result.message.c_str());
  return result.ok ? 0 : 1;
}

}  // namespace conveyor::runtime
