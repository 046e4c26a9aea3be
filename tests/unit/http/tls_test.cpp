// The HTTP server over TLS (issue 12: CONVEYOR_TLS_CERT_FILE and
// CONVEYOR_TLS_KEY_FILE): HTTPS answers, plain HTTP on the TLS port gets no
// HTTP answer, certificates are verified by the client, the configuration
// is checked at construction, and the hostile-client protections (header
// deadline, connection cap) hold over TLS. A self-signed certificate for
// 127.0.0.1 is made with the openssl CLI for the suite; real sockets against
// a real server on a free port.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "conveyor/error/error.hpp"
#include "conveyor/http/admin.hpp"
#include "conveyor/http/client.hpp"
#include "conveyor/http/server.hpp"
#include "conveyor/metrics/metrics.hpp"
#include "conveyor/runtime/check.hpp"
#include "conveyor/runtime/runtime.hpp"
#include "conveyor/testing/testing.hpp"

namespace conveyor::http {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

int connect_loopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// One raw TCP connection (no TLS). Closed by the destructor.
class Raw {
 public:
  explicit Raw(int port) : fd_(connect_loopback(port)) {}
  ~Raw() {
    if (fd_ >= 0) ::close(fd_);
  }
  Raw(const Raw&) = delete;
  Raw& operator=(const Raw&) = delete;
  bool connected() const { return fd_ >= 0; }
  bool send(const std::string& s) {
    return ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size());
  }
  // What arrived until the peer closed (or reset) the connection; nullopt
  // when it was still open after `timeout`.
  std::optional<std::string> read_until_closed(std::chrono::milliseconds timeout) {
    std::string out;
    const auto end = Clock::now() + timeout;
    char buf[4096];
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
      if (left.count() < 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
        if (Clock::now() >= end) return std::nullopt;
        continue;
      }
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return out;
      out.append(buf, static_cast<std::size_t>(n));
    }
  }

 private:
  int fd_;
};

// A TLS client connection made with OpenSSL directly, verifying the server
// against `ca_file` for 127.0.0.1, for what the http client cannot do: send
// half a request, keep a connection for two requests, vanish mid-answer.
// Reads are bounded by SO_RCVTIMEO. Not thread-safe.
class TlsClient {
 public:
  TlsClient(int port, const std::string& ca_file) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    SSL_CTX_load_verify_locations(ctx_, ca_file.c_str(), nullptr);
    fd_ = connect_loopback(port);
    if (fd_ < 0) return;
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssl_ = SSL_new(ctx_);
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), "127.0.0.1");
    SSL_set_fd(ssl_, fd_);
    connected_ = SSL_connect(ssl_) == 1;
  }
  ~TlsClient() {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (fd_ >= 0) ::close(fd_);
    SSL_CTX_free(ctx_);
  }
  TlsClient(const TlsClient&) = delete;
  TlsClient& operator=(const TlsClient&) = delete;

  bool connected() const { return connected_; }
  bool send(const std::string& s) {
    return SSL_write(ssl_, s.data(), static_cast<int>(s.size())) == static_cast<int>(s.size());
  }
  // One whole response (headers and Content-Length bytes of body), or what
  // came before the connection ended.
  std::string read_response() {
    std::string out;
    char buf[4096];
    while (!complete(out)) {
      const int n = SSL_read(ssl_, buf, sizeof buf);
      if (n <= 0) break;
      out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
  }
  // What one read returns ("" on an error or the end).
  std::string read_some() {
    char buf[4096];
    const int n = SSL_read(ssl_, buf, sizeof buf);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
  }
  // Ends the connection with a TCP reset, without TLS close_notify.
  void vanish() {
    linger l{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    ::close(fd_);
    fd_ = -1;
  }

 private:
  static bool complete(const std::string& r) {
    const auto end = r.find("\r\n\r\n");
    if (end == std::string::npos) return false;
    const auto cl = r.find("Content-Length: ");
    if (cl == std::string::npos || cl > end) return true;
    return r.size() >= end + 4 + std::stoul(r.substr(cl + 16));
  }
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  int fd_ = -1;
  bool connected_ = false;
};

int status_of(const std::string& response) {
  if (response.rfind("HTTP/1.1 ", 0) != 0) return 0;
  return std::stoi(response.substr(9, 3));
}

class TlsTest : public ::testing::Test {
 protected:
  // One self-signed certificate for 127.0.0.1 for the whole suite.
  static void SetUpTestSuite() {
    std::string pattern = (fs::temp_directory_path() / "conveyor-tls-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    const auto r = conveyor::testing::run({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                                           "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                                           "-keyout", key(), "-out", cert()});
    ASSERT_EQ(r.status, 0) << r.output;
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  static std::string cert() { return (dir_ / "cert.pem").string(); }
  static std::string key() { return (dir_ / "key.pem").string(); }

  void start(Server::Options o = {}) {
    o.registry = &registry_;
    o.tls_cert_file = cert();
    o.tls_key_file = key();
    server_ = std::make_unique<Server>("127.0.0.1", 0, o);
    add_admin_routes(*server_, AdminOptions{"conveyor-test", "1", [] { return true; }, nullptr, &registry_});
    server_->route("GET", "/v1/data", [](const Request&) { return Response::json({{"data", "over tls"}}); });
    server_->route("POST", "/v1/jobs", [](const Request& req) {
      return Response::json({{"bytes", req.body.size()}}, 201);
    });
    server_->route("GET", "/v1/big", [](const Request&) { return Response::text(std::string(16 * 1024 * 1024, 'b')); });
    server_->start();
  }
  int port() const { return server_->port(); }
  std::string url(const std::string& path, const std::string& host = "127.0.0.1") const {
    return "https://" + host + ":" + std::to_string(port()) + path;
  }
  static TlsOptions trusting() {
    TlsOptions tls;
    tls.ca_file = cert();
    return tls;
  }
  ClientResponse get(const std::string& path, std::chrono::milliseconds timeout = 5s) {
    return http_request("GET", url(path), "", {}, timeout, trusting());
  }

  static inline fs::path dir_;
  metrics::Registry registry_;
  std::unique_ptr<Server> server_;
};

TEST_F(TlsTest, HttpsAnswersWithTheBody) {
  start();
  const ClientResponse r = get("/v1/data");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(nlohmann::json::parse(r.body)["data"], "over tls");
  // A body is read through TLS as well.
  const ClientResponse posted = http_request("POST", url("/v1/jobs"), R"({"type":"x"})", {}, 5s, trusting());
  EXPECT_EQ(posted.status, 201);
  EXPECT_EQ(nlohmann::json::parse(posted.body)["bytes"], 12);
}

TEST_F(TlsTest, OneConnectionCarriesSeveralRequests) {
  start();
  TlsClient c(port(), cert());
  ASSERT_TRUE(c.connected());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(c.send("GET /v1/data HTTP/1.1\r\nHost: x\r\n\r\n"));
    const std::string r = c.read_response();
    EXPECT_EQ(status_of(r), 200) << r.substr(0, 300);
    EXPECT_THAT(r, HasSubstr("over tls"));
  }
}

TEST_F(TlsTest, PlainHttpGetsNoHttpAnswerAndTheServerKeepsServing) {
  start();
  {
    Raw plain(port());
    ASSERT_TRUE(plain.connected());
    ASSERT_TRUE(plain.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
    const auto answer = plain.read_until_closed(10s);
    ASSERT_TRUE(answer.has_value()) << "the server kept a plain HTTP connection open";
    EXPECT_THAT(*answer, Not(HasSubstr("HTTP/")));
  }
  // The http client asking in plain HTTP: a transport error, not a status.
  try {
    const auto r = http_request("GET", "http://127.0.0.1:" + std::to_string(port()) + "/healthz", "", {}, 5s);
    ADD_FAILURE() << "plain HTTP was answered " << r.status;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), errc::unavailable) << e.what();
  }
  EXPECT_EQ(get("/healthz").status, 200);
}

TEST_F(TlsTest, TheClientVerifiesTheCertificate) {
  start();
  // The system's trust store does not hold our self-signed certificate.
  try {
    const auto r = http_request("GET", url("/healthz"), "", {}, 5s);
    ADD_FAILURE() << "an unverifiable certificate was accepted: " << r.status;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), errc::unavailable);
    EXPECT_THAT(e.what(), HasSubstr("SSL"));
  }
  // Trusted, but not issued for the name asked for: refused too.
  EXPECT_THROW(http_request("GET", url("/healthz", "localhost"), "", {}, 5s, trusting()), Error);
  // With the certificate as the CA: answered.
  EXPECT_EQ(get("/healthz").status, 200);
  // Only an explicit verify=false skips the check.
  TlsOptions unchecked;
  unchecked.verify = false;
  EXPECT_EQ(http_request("GET", url("/healthz"), "", {}, 5s, unchecked).status, 200);
}

TEST_F(TlsTest, ASilentHandshakeIsDroppedAtTheHeaderDeadlineWhileOthersAreServed) {
  Server::Options o;
  o.header_timeout = 3s;
  start(o);
  const auto connected_at = Clock::now();
  Raw slow(port());
  ASSERT_TRUE(slow.connected());
  ASSERT_TRUE(slow.send(std::string("\x16\x03\x01", 3)));  // the start of a ClientHello, no more
  EXPECT_EQ(get("/healthz").status, 200);
  if (Clock::now() - connected_at < o.header_timeout) {
    EXPECT_FALSE(slow.read_until_closed(1ms).has_value()) << "dropped before its deadline";
  }
  const auto answer = slow.read_until_closed(o.header_timeout + 10s);
  ASSERT_TRUE(answer.has_value()) << "a handshake that never finished held its connection";
  EXPECT_GE(Clock::now() - connected_at, o.header_timeout);
  EXPECT_THAT(*answer, Not(HasSubstr("HTTP/")));
  EXPECT_EQ(get("/healthz").status, 200);
}

TEST_F(TlsTest, SlowHeadersOverTlsGet408AtTheHeaderDeadline) {
  Server::Options o;
  o.header_timeout = 2s;
  start(o);
  TlsClient slow(port(), cert());
  ASSERT_TRUE(slow.connected());
  const auto sent_at = Clock::now();
  ASSERT_TRUE(slow.send("GET /healthz HTTP/1.1\r\nHost: x\r\n"));  // never finished
  EXPECT_EQ(get("/healthz").status, 200);
  const std::string r = slow.read_response();
  EXPECT_EQ(status_of(r), 408) << r.substr(0, 300);
  EXPECT_THAT(r, HasSubstr("application/problem+json"));
  EXPECT_GE(Clock::now() - sent_at, o.header_timeout);
}

TEST_F(TlsTest, ConnectionsBeyondTheCapAre503OverTls) {
  Server::Options o;
  o.max_connections = 2;
  o.header_timeout = 30s;  // the held connections stay held for the test
  start(o);
  std::vector<std::unique_ptr<Raw>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(std::make_unique<Raw>(port()));
    ASSERT_TRUE(held.back()->connected());
  }
  // The server counts a connection once its thread takes it: wait for that.
  ClientResponse over;
  ASSERT_TRUE(conveyor::testing::wait_until(
      [&] {
        over = get("/healthz", 3s);
        return over.status == 503;
      },
      10s))
      << over.status << " " << over.body;
  EXPECT_EQ(over.headers["content-type"], "application/problem+json");
  EXPECT_THAT(over.body, HasSubstr("too many connections"));
  held.clear();
  ClientResponse again;
  EXPECT_TRUE(conveyor::testing::wait_until(
      [&] {
        again = get("/healthz", 3s);
        return again.status == 200;
      },
      10s))
      << again.status << " " << again.body;
}

TEST_F(TlsTest, AClientThatVanishesMidAnswerLeavesTheServerServing) {
  start();
  for (int i = 0; i < 3; ++i) {
    TlsClient c(port(), cert());
    ASSERT_TRUE(c.connected());
    ASSERT_TRUE(c.send("GET /v1/big HTTP/1.1\r\nHost: x\r\n\r\n"));
    EXPECT_THAT(c.read_some(), HasSubstr("HTTP/1.1 200"));
    c.vanish();  // while the server still writes its 16 MiB
  }
  EXPECT_EQ(get("/healthz").status, 200);
}

TEST(TlsConfigTest, BothFilesOrNeither) {
  for (const auto& [cert, key] : {std::pair<std::string, std::string>{"/x/cert.pem", ""},
                                  std::pair<std::string, std::string>{"", "/x/key.pem"}}) {
    Server::Options o;
    o.tls_cert_file = cert;
    o.tls_key_file = key;
    try {
      Server s("127.0.0.1", 0, o);
      ADD_FAILURE() << "one TLS file without the other was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), errc::invalid_config);
      EXPECT_THAT(e.what(), HasSubstr("CONVEYOR_TLS_CERT_FILE"));
      EXPECT_THAT(e.what(), HasSubstr("CONVEYOR_TLS_KEY_FILE"));
    }
  }
  EXPECT_NO_THROW(Server("127.0.0.1", 0, Server::Options{}));
}

class TlsFilesTest : public TlsTest {
 protected:
  // The error the constructor throws for these files ("" when none).
  static std::string refusal(const std::string& cert_file, const std::string& key_file) {
    Server::Options o;
    o.tls_cert_file = cert_file;
    o.tls_key_file = key_file;
    try {
      Server s("127.0.0.1", 0, o);
      return "";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), errc::invalid_config);
      return e.what();
    }
  }
  static std::string write(const std::string& name, const std::string& content) {
    const fs::path p = dir_ / name;
    std::ofstream(p) << content;
    return p.string();
  }
};

TEST_F(TlsFilesTest, UnusableFilesAreRefusedAtConstruction) {
  EXPECT_EQ(refusal(cert(), key()), "");

  const std::string missing = refusal((dir_ / "missing.pem").string(), key());
  EXPECT_THAT(missing, HasSubstr("CONVEYOR_TLS_CERT_FILE: cannot read"));
  EXPECT_THAT(missing, HasSubstr("missing.pem"));

  const std::string not_pem = write("garbage.pem", "not a certificate\n");
  EXPECT_THAT(refusal(not_pem, key()),
              HasSubstr("CONVEYOR_TLS_CERT_FILE: " + not_pem + " holds no usable PEM certificate"));
  EXPECT_THAT(refusal(cert(), not_pem), HasSubstr("CONVEYOR_TLS_KEY_FILE: " + not_pem));

  // A key of another certificate.
  const std::string other = (dir_ / "other.pem").string();
  auto r = conveyor::testing::run(
      {"openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", other});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(refusal(cert(), other), HasSubstr("does not belong to the certificate"));

  // An encrypted key is refused, not prompted for.
  const std::string encrypted = (dir_ / "encrypted.pem").string();
  r = conveyor::testing::run(
      {"openssl", "pkey", "-in", key(), "-aes256", "-passout", "pass:secret", "-out", encrypted});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(refusal(cert(), encrypted), HasSubstr("CONVEYOR_TLS_KEY_FILE: " + encrypted));
}

// `<service> --check` against an HTTPS instance with its own self-signed
// certificate: asked over https on 127.0.0.1.
TEST_F(TlsTest, TheHealthProbeAsksOverHttps) {
  start();
  const std::string port = std::to_string(this->port());
  const config::Config config = config::load(runtime::service_schema(), {},
                                             {{"CONVEYOR_DATABASE_URL", "postgresql://conveyor@db.invalid/conveyor"},
                                              {"CONVEYOR_HTTP_PORT", port},
                                              {"CONVEYOR_TLS_CERT_FILE", cert()},
                                              {"CONVEYOR_TLS_KEY_FILE", key()}});
  EXPECT_EQ(runtime::readyz_url(config, 0), "https://127.0.0.1:" + port + "/readyz");
  const runtime::CheckResult r = runtime::check_ready(config, 0);
  EXPECT_TRUE(r.ok) << r.message;
  EXPECT_EQ(r.message, "ready: GET https://127.0.0.1:" + port + "/readyz answered 200");
}

}  // namespace
}  // namespace conveyor::http
