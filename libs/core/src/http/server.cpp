#include "conveyor/http/server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "conveyor/error/error.hpp"
#include "conveyor/http/problem.hpp"
#include "conveyor/logging/logging.hpp"
#include "conveyor/logging/thread_name.hpp"
#include "conveyor/metrics/metrics.hpp"
#include "conveyor/text/text.hpp"

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

  bool matches(const std::vector<std::string>& path, std::map<std::string, std::string>* params) const {
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

using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------- TLS

struct SslFree {
  void operator()(SSL* ssl) const { SSL_free(ssl); }
};
struct SslCtxFree {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
using TlsContext = std::unique_ptr<SSL_CTX, SslCtxFree>;

// OpenSSL's reasons for the last failure (e.g. "no start line"), clearing
// its error queue; never any key material.
std::string openssl_reason() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    const char* reason = ERR_reason_error_string(e);
    if (!out.empty()) out += "; ";
    out += reason != nullptr ? reason : "error " + std::to_string(e);
  }
  return out.empty() ? "no detail from OpenSSL" : out;
}

// A socket BIO that sends with MSG_NOSIGNAL. OpenSSL's own socket BIO uses
// write(), and a write to a connection the peer has reset raises SIGPIPE,
// whose default action ends the process. The socket is non-blocking; the
// BIO never closes it (the server does).
int socket_of(BIO* bio) { return static_cast<int>(reinterpret_cast<std::intptr_t>(BIO_get_data(bio))); }

bool retryable(int error) { return error == EAGAIN || error == EWOULDBLOCK || error == EINTR; }

int bio_write(BIO* bio, const char* data, int size) {
  BIO_clear_retry_flags(bio);
  const ssize_t n = ::send(socket_of(bio), data, static_cast<std::size_t>(size), MSG_NOSIGNAL);
  if (n < 0 && retryable(errno)) BIO_set_retry_write(bio);
  return static_cast<int>(n);
}

int bio_read(BIO* bio, char* data, int size) {
  BIO_clear_retry_flags(bio);
  const ssize_t n = ::recv(socket_of(bio), data, static_cast<std::size_t>(size), 0);
  if (n < 0 && retryable(errno)) BIO_set_retry_read(bio);
  if (n == 0) BIO_set_flags(bio, BIO_FLAGS_IN_EOF);
  return static_cast<int>(n);
}

long bio_ctrl(BIO* bio, int command, long, void*) {
  switch (command) {
    case BIO_CTRL_FLUSH:
      return 1;  // nothing is buffered here
    case BIO_CTRL_EOF:
      return BIO_test_flags(bio, BIO_FLAGS_IN_EOF) != 0 ? 1 : 0;
    default:
      return 0;
  }
}

int bio_create(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

BIO_METHOD* socket_bio_method() {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "conveyor socket");
    if (m != nullptr) {
      BIO_meth_set_write(m, bio_write);
      BIO_meth_set_read(m, bio_read);
      BIO_meth_set_ctrl(m, bio_ctrl);
      BIO_meth_set_create(m, bio_create);
    }
    return m;
  }();
  return method;
}

// The service configuration keys are named in the errors: the runtime
// fills these options from them, and that is what an operator must fix.
constexpr const char* kCertKey = "CONVEYOR_TLS_CERT_FILE";
constexpr const char* kKeyKey = "CONVEYOR_TLS_KEY_FILE";

void require_readable(const char* key, const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    const std::string why = std::error_code(errno, std::generic_category()).message();
    throw Error(errc::invalid_config, std::string(key) + ": cannot read " + path + ": " + why);
  }
  std::fclose(file);
}

// The server's TLS context, made once at construction so that a missing or
// bad certificate stops the service at start-up, not at its first client.
// nullptr: plain HTTP.
TlsContext make_tls_context(const Server::Options& o) {
  if (o.tls_cert_file.empty() && o.tls_key_file.empty()) return nullptr;
  if (o.tls_cert_file.empty() || o.tls_key_file.empty()) {
    throw Error(errc::invalid_config, std::string(o.tls_cert_file.empty() ? kKeyKey : kCertKey) + " is set but " +
                                          (o.tls_cert_file.empty() ? kCertKey : kKeyKey) +
                                          " is not: set both (HTTPS) or neither (plain HTTP)");
  }
  require_readable(kCertKey, o.tls_cert_file);
  require_readable(kKeyKey, o.tls_key_file);
  ERR_clear_error();
  TlsContext ctx(SSL_CTX_new(TLS_server_method()));
  if (!ctx || socket_bio_method() == nullptr) {
    throw Error(errc::internal, "cannot set up TLS: " + openssl_reason());
  }
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  // TLS 1.2: forward-secret AEAD suites only (TLS 1.3's are all of that kind).
  SSL_CTX_set_cipher_list(ctx.get(),
                          "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                          "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                          "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305");
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  // A response is written piece by piece (httplib retries the rest).
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_ENABLE_PARTIAL_WRITE);
  // An encrypted key would make OpenSSL ask for a passphrase on the
  // terminal: refuse it instead.
  SSL_CTX_set_default_passwd_cb(ctx.get(), [](char*, int, int, void*) { return 0; });
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), o.tls_cert_file.c_str()) != 1) {
    throw Error(errc::invalid_config, std::string(kCertKey) + ": " + o.tls_cert_file +
                                          " holds no usable PEM certificate (" + openssl_reason() + ")");
  }
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), o.tls_key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    throw Error(errc::invalid_config, std::string(kKeyKey) + ": " + o.tls_key_file +
                                          " holds no usable unencrypted PEM private key (" + openssl_reason() + ")");
  }
  if (SSL_CTX_check_private_key(ctx.get()) != 1) {
    throw Error(errc::invalid_config, std::string(kKeyKey) + ": the key in " + o.tls_key_file +
                                          " does not belong to the certificate in " + kCertKey + " (" +
                                          o.tls_cert_file + ")");
  }
  ERR_clear_error();
  return ctx;
}

// The one stream of a connection, owned by the thread serving it. It reads
// ahead into a buffer kept across the requests of the connection, enforces
// the header and body deadlines and byte limits, and drops Range header
// lines (Conveyor serves no byte ranges, and httplib's Range parser is a
// backtracking regex). With TLS (start_tls) the same happens on the
// decrypted bytes: the socket is non-blocking and every OpenSSL call waits
// on poll() under the same deadlines. Not thread-safe.
class ConnectionStream final : public httplib::Stream {
 public:
  enum class Failure { none, timeout, headers_too_large, body_too_large, closed };

  ConnectionStream(socket_t fd, const Server::Options& o, std::function<bool()> stopping)
      : fd_(fd), options_(o), stopping_(std::move(stopping)) {}

  // Waits for the first byte of the next request; false when the connection
  // idled past the keep-alive timeout, closed, or the server stops.
  bool wait_next_request() {
    if (pos_ < end_ || tls_pending()) return true;
    return wait(POLLIN, Clock::now() + options_.keep_alive_timeout);
  }

  void begin_request() {
    header_phase_ = true;
    first_line_ = true;
    header_bytes_ = 0;
    body_bytes_ = 0;
    line_.clear();
    line_pos_ = 0;
    failure_ = Failure::none;
    deadline_ = Clock::now() + options_.header_timeout;
  }

  Failure failure() const noexcept { return failure_; }

  // The server side of a TLS handshake, which must finish by `until`; after
  // it every read and write goes through TLS. False when it failed (a plain
  // HTTP request, a bad or slow client): the connection is to be closed.
  bool start_tls(SSL_CTX* ctx, Clock::time_point until) {
    const int flags = ::fcntl(fd_, F_GETFL, 0);
    if (flags < 0 || ::fcntl(fd_, F_SETFL, flags | O_NONBLOCK) != 0) return false;
    ssl_.reset(SSL_new(ctx));
    BIO* bio = BIO_new(socket_bio_method());
    if (!ssl_ || bio == nullptr) {
      BIO_free(bio);
      tls_broken_ = true;
      return false;
    }
    BIO_set_data(bio, reinterpret_cast<void*>(static_cast<std::intptr_t>(fd_)));
    SSL_set_bio(ssl_.get(), bio, bio);
    SSL_set_accept_state(ssl_.get());
    return tls_call(until, [this] { return SSL_do_handshake(ssl_.get()); }) > 0;
  }

  // Sends TLS close_notify (one attempt, not waiting for the peer's) when
  // the session is sound, before the server closes the socket.
  void finish_tls() {
    if (!ssl_ || tls_broken_ || SSL_is_init_finished(ssl_.get()) != 1) return;
    ERR_clear_error();
    (void)SSL_shutdown(ssl_.get());
    ERR_clear_error();
  }

  bool is_readable() const override {
    return line_pos_ < line_.size() || pos_ < end_ || tls_pending() ||
           const_cast<ConnectionStream*>(this)->wait(POLLIN, next_read_deadline());
  }
  bool is_writable() const override {
    return const_cast<ConnectionStream*>(this)->wait(POLLOUT, Clock::now() + options_.write_timeout);
  }

  ssize_t read(char* ptr, size_t size) override {
    if (header_phase_ || line_pos_ < line_.size()) {
      while (line_pos_ >= line_.size()) {
        if (!header_phase_) break;
        if (!next_header_line()) return -1;
      }
      if (line_pos_ < line_.size()) {
        const std::size_t n = std::min(size, line_.size() - line_pos_);
        std::memcpy(ptr, line_.data() + line_pos_, n);
        line_pos_ += n;
        return static_cast<ssize_t>(n);
      }
    }
    // Chunked framing costs a few bytes per chunk: allow the body twice over.
    const std::size_t cap = 2 * options_.max_body_bytes + 64 * 1024;
    if (body_bytes_ >= cap) {
      failure_ = Failure::body_too_large;
      return -1;
    }
    if (pos_ >= end_ && !fill()) return -1;
    const std::size_t n = std::min({size, end_ - pos_, cap - body_bytes_});
    std::memcpy(ptr, buffer_.data() + pos_, n);
    pos_ += n;
    body_bytes_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (ssl_) {
      if (tls_broken_) return -1;  // nothing more may go out after a fatal TLS error
      if (size == 0) return 0;
      const int n = static_cast<int>(std::min<std::size_t>(size, INT_MAX));
      const int written =
          tls_call(Clock::now() + options_.write_timeout, [&] { return SSL_write(ssl_.get(), ptr, n); });
      return written > 0 ? written : -1;
    }
    if (!wait(POLLOUT, Clock::now() + options_.write_timeout)) return -1;
    return ::send(fd_, ptr, size, MSG_NOSIGNAL);
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override { address(::getpeername, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { address(::getsockname, ip, port); }
  socket_t socket() const override { return fd_; }

 private:
  static constexpr std::size_t kMaxHeaderBytes = 64 * 1024;

  Clock::time_point next_read_deadline() const { return std::min(deadline_, Clock::now() + options_.read_timeout); }

  // Polls in short slices so that a stopping server is noticed.
  bool wait(short events, Clock::time_point until) {
    for (;;) {
      if (stopping_()) {
        failure_ = Failure::closed;
        return false;
      }
      // Rounded up: truncated, the last wait ended up to 1 ms before
      // `until` and the deadline was declared early.
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - Clock::now());
      if (left.count() <= 0) {
        failure_ = Failure::timeout;
        return false;
      }
      pollfd p{fd_, events, 0};
      const int r = ::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left.count(), 200)));
      if (r > 0) return (p.revents & (events | POLLHUP | POLLERR)) != 0;
      if (r < 0 && errno != EINTR) {
        failure_ = Failure::closed;
        return false;
      }
    }
  }

  // Decrypted bytes OpenSSL holds already (no poll() would see them).
  bool tls_pending() const { return ssl_ && SSL_has_pending(ssl_.get()) == 1; }

  // Runs one OpenSSL call on the non-blocking socket until it succeeds,
  // waiting for the socket as it asks, but not past `until`. Returns the
  // call's result; <= 0 on failure (failure_ says which).
  template <typename Call>
  int tls_call(Clock::time_point until, Call call) {
    for (;;) {
      ERR_clear_error();  // SSL_get_error() reads the thread's error queue
      const int r = call();
      if (r > 0) return r;
      switch (SSL_get_error(ssl_.get(), r)) {
        case SSL_ERROR_WANT_READ:
          if (!wait(POLLIN, until)) return -1;
          break;
        case SSL_ERROR_WANT_WRITE:
          if (!wait(POLLOUT, until)) return -1;
          break;
        case SSL_ERROR_ZERO_RETURN:  // the peer's close_notify
          failure_ = Failure::closed;
          return 0;
        default:  // a protocol error or a reset: no close_notify after it
          if (!tls_broken_) {
            logging::get("http")->debug("TLS connection failed: {}", openssl_reason());
          }
          ERR_clear_error();
          tls_broken_ = true;
          failure_ = Failure::closed;
          return -1;
      }
    }
  }

  bool fill() {
    pos_ = end_ = 0;
    if (ssl_) {
      if (tls_broken_) {
        failure_ = Failure::closed;
        return false;
      }
      const int n = tls_call(next_read_deadline(),
                             [this] { return SSL_read(ssl_.get(), buffer_.data(), static_cast<int>(buffer_.size())); });
      if (n <= 0) return false;
      end_ = static_cast<std::size_t>(n);
      return true;
    }
    if (!wait(POLLIN, next_read_deadline())) return false;
    const ssize_t n = ::recv(fd_, buffer_.data(), buffer_.size(), 0);
    if (n <= 0) {
      failure_ = Failure::closed;
      return false;
    }
    end_ = static_cast<std::size_t>(n);
    return true;
  }

  // Reads one header line into line_, skipping Range lines; the blank line
  // ends the header phase (and starts the body deadline).
  bool next_header_line() {
    for (;;) {
      line_.clear();
      line_pos_ = 0;
      for (;;) {
        if (pos_ >= end_ && !fill()) return false;
        const char c = buffer_[pos_++];
        line_.push_back(c);
        if (++header_bytes_ > kMaxHeaderBytes) {
          failure_ = Failure::headers_too_large;
          return false;
        }
        if (c == '\n') break;
      }
      if (first_line_) {
        first_line_ = false;
        return true;
      }
      if (line_ == "\r\n" || line_ == "\n") {
        header_phase_ = false;
        deadline_ = Clock::now() + options_.body_timeout;
        return true;
      }
      if (line_.size() >= 6 && strncasecmp(line_.c_str(), "range:", 6) == 0) continue;
      return true;
    }
  }

  void address(int (*get)(int, sockaddr*, socklen_t*), std::string& ip, int& port) const {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    ip.clear();
    port = 0;
    if (get(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return;
    char text[INET6_ADDRSTRLEN] = {};
    if (addr.ss_family == AF_INET) {
      const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
      ::inet_ntop(AF_INET, &a->sin_addr, text, sizeof text);
      port = ntohs(a->sin_port);
    } else if (addr.ss_family == AF_INET6) {
      const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
      ::inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text);
      port = ntohs(a->sin6_port);
    }
    ip = text;
  }

  socket_t fd_;
  const Server::Options& options_;
  std::function<bool()> stopping_;
  std::array<char, 16 * 1024> buffer_{};
  std::size_t pos_ = 0;
  std::size_t end_ = 0;
  std::string line_;
  std::size_t line_pos_ = 0;
  bool header_phase_ = false;
  bool first_line_ = false;
  std::size_t header_bytes_ = 0;
  std::size_t body_bytes_ = 0;
  Clock::time_point deadline_{};
  Failure failure_ = Failure::none;
  std::unique_ptr<SSL, SslFree> ssl_;  // null: plain HTTP
  bool tls_broken_ = false;            // a fatal TLS error: no SSL_shutdown
};

// What the serving thread learns about the request it serves: its stream
// (to tell a timeout from a malformed request) and whether the connection
// must close after the answer (a body was left unread).
struct Serving {
  ConnectionStream* stream = nullptr;
  bool close_after = false;
};
thread_local Serving serving;

// Runs each connection on a thread of its own: idle threads wait for the
// next connection, and up to `max` are started on demand, so slow clients
// never starve the others (health checks included). Threads above `min`
// leave after 30 s idle.
class ElasticPool final : public httplib::TaskQueue {
 public:
  ElasticPool(std::size_t min, std::size_t max) : min_(min), max_(std::max(min, max)) {
    std::lock_guard lock(mu_);
    for (std::size_t i = 0; i < min_; ++i) spawn();
  }
  ~ElasticPool() override = default;

  void enqueue(std::function<void()> fn) override {
    std::vector<std::thread> finished;
    {
      std::lock_guard lock(mu_);
      jobs_.push_back(std::move(fn));
      if (idle_ < jobs_.size() && live_ < max_) spawn();
      finished = take_finished();
    }
    cv_.notify_one();
    for (auto& t : finished) t.join();
  }

  void shutdown() override {
    std::map<int, std::thread> threads;
    std::vector<std::thread> finished;
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
      threads.swap(threads_);
      finished = take_finished();
    }
    cv_.notify_all();
    for (auto& [id, t] : threads) t.join();
    for (auto& t : finished) t.join();
  }

 private:
  void spawn() {  // mu_ held
    const int id = next_id_++;
    ++live_;
    threads_.emplace(id, std::thread([this, id] {
                       logging::name_this_thread("http-" + std::to_string(id));
                       work(id);
                     }));
  }

  std::vector<std::thread> take_finished() {  // mu_ held
    std::vector<std::thread> out;
    for (const int id : finished_) {
      if (auto it = threads_.find(id); it != threads_.end()) {
        out.push_back(std::move(it->second));
        threads_.erase(it);
      }
    }
    finished_.clear();
    return out;
  }

  void work(int id) {
    std::unique_lock lock(mu_);
    for (;;) {
      ++idle_;
      const bool woken = cv_.wait_for(lock, std::chrono::seconds(30), [this] { return stopping_ || !jobs_.empty(); });
      --idle_;
      if (!jobs_.empty()) {
        std::function<void()> fn = std::move(jobs_.front());
        jobs_.pop_front();
        lock.unlock();
        fn();
        lock.lock();
        continue;
      }
      if (stopping_ || (!woken && live_ > min_)) break;
    }
    --live_;
    finished_.push_back(id);
  }

  const std::size_t min_;
  const std::size_t max_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::map<int, std::thread> threads_;
  std::vector<int> finished_;
  std::size_t live_ = 0;
  std::size_t idle_ = 0;
  int next_id_ = 0;
  bool stopping_ = false;
};

// httplib's server with our connection loop: a connection cap, deadlines
// and limits through ConnectionStream. process_request() is httplib's own
// request parser and router.
class GuardedServer final : public httplib::Server {
 public:
  // `tls`: null for plain HTTP; else owned by the caller and outliving this.
  GuardedServer(const conveyor::http::Server::Options& o, SSL_CTX* tls) : options_(o), tls_(tls) {}
  std::atomic<std::size_t> rejected{0};

 private:
  bool process_and_close_socket(socket_t sock) override {
    struct Count {
      std::atomic<std::size_t>& n;
      explicit Count(std::atomic<std::size_t>& a) : n(a) { ++n; }
      ~Count() { --n; }
    } count(active_);
    bool ret = false;
    if (active_.load() > options_.max_connections) {
      ++rejected;
      reject(sock);
    } else {
      ConnectionStream stream(sock, options_, [this] { return svr_sock_ == INVALID_SOCKET; });
      // A handshake that does not finish within the header deadline (a
      // slow or silent client, plain HTTP on this port) closes the connection.
      const bool secured = tls_ == nullptr || stream.start_tls(tls_, Clock::now() + options_.header_timeout);
      std::size_t left = secured ? keep_alive_max_count_ : 0;
      while (left > 0 && svr_sock_ != INVALID_SOCKET && stream.wait_next_request()) {
        stream.begin_request();
        serving = Serving{&stream, false};
        bool closed = false;
        ret = process_request(stream, left == 1, closed, nullptr);
        const bool close_after = serving.close_after;
        serving = Serving{};
        if (!ret || closed || close_after || stream.failure() != ConnectionStream::Failure::none) {
          break;
        }
        --left;
      }
      stream.finish_tls();
    }
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
    return ret;
  }

  // Over the cap: a short 503 without reading the request, then close.
  void reject(socket_t sock) {
    const Response r = problem(503, reason_phrase(503),
                               "too many connections (" + std::to_string(options_.max_connections) + "); try again");
    const std::string head = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: " + r.content_type +
                             "\r\nContent-Length: " + std::to_string(r.body.size()) +
                             "\r\nRetry-After: 1\r\nConnection: close\r\n\r\n";
    const std::string all = head + r.body;
    if (tls_ == nullptr) {
      (void)::send(sock, all.data(), all.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      return;
    }
    // Over TLS the answer needs a handshake first; a short one, as this
    // thread is the one kept for answering connections over the cap.
    ConnectionStream stream(sock, options_, [this] { return svr_sock_ == INVALID_SOCKET; });
    const auto until = Clock::now() + std::min<Clock::duration>(options_.header_timeout, std::chrono::seconds(2));
    if (stream.start_tls(tls_, until)) {
      (void)stream.write(all.data(), all.size());
      stream.finish_tls();
    }
  }

  const conveyor::http::Server::Options& options_;
  SSL_CTX* const tls_;
  std::atomic<std::size_t> active_{0};
};

bool is_json_media_type(std::string_view content_type) {
  std::string media = lower(content_type.substr(0, content_type.find(';')));
  while (!media.empty() && (media.back() == ' ' || media.back() == '\t')) media.pop_back();
  return media == "application/json" || (media.size() > 5 && media.compare(media.size() - 5, 5, "+json") == 0);
}

bool takes_body(std::string_view method) {
  return method == "POST" || method == "PUT" || method == "PATCH" || method == "DELETE";
}

// Metric labels come from fixed sets only: an invented method is "other".
std::string method_label(std::string_view method) {
  for (const char* known : {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}) {
    if (method == known) return known;
  }
  return "other";
}

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

nlohmann::json Request::json() const {
  text::JsonLimits limits;
  limits.max_bytes = body.size();  // the server already bounded the body
  return text::parse_json(body, limits);
}

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
  TlsContext tls;  // before `server`, which uses it
  GuardedServer server;
  std::vector<Route> routes;
  Guard guard;
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
        tls(make_tls_context(options)),
        server(options, tls.get()),
        registry(o.registry != nullptr ? o.registry : &metrics::default_registry()) {}

  // `body_declared`: the request announced a body (it may not have been read).
  void dispatch(const httplib::Request& in, httplib::Response& out, const std::string& body, bool body_declared) {
    const auto started_at = std::chrono::steady_clock::now();
    const std::vector<std::string> segments = split_path(in.path);
    // HEAD is served by the GET route (httplib drops the body).
    const std::string method = in.method == "HEAD" ? "GET" : in.method;

    std::vector<std::string> allowed;
    const Route* best = find_route(segments, method, allowed);
    Response response;
    if (best == nullptr) {
      response = no_route(in, allowed);
    } else if (refuses_media_type(in, method, body_declared)) {
      response = unsupported_media_type(in, *best);
    } else {
      response = answer(*best, to_request(in, body, *best, segments));
      const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - started_at;
      registry
          ->histogram("conveyor_http_request_duration_seconds", "Time spent in HTTP handlers, by route pattern.",
                      metrics::default_buckets(), {{"method", method_label(method)}, {"route", best->pattern}})
          .observe(elapsed.count());
    }

    out.status = response.status;
    for (const auto& [name, value] : response.headers) out.set_header(name, value);
    out.set_content(response.body, response.content_type);
    count(in.method, response.status, best != nullptr ? best->pattern : "unmatched");
  }

  // The route of `method` for the path with the most literal segments
  // (nullptr: none); `allowed` gets the methods other routes of the path take.
  const Route* find_route(const std::vector<std::string>& segments, const std::string& method,
                          std::vector<std::string>& allowed) const {
    const Route* best = nullptr;
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
    return best;
  }

  // 404 when no route has the path, else 405 naming the methods it allows.
  static Response no_route(const httplib::Request& in, const std::vector<std::string>& allowed) {
    if (allowed.empty()) return problem(404, reason_phrase(404), "no route for " + in.path);
    std::string allow;
    for (const auto& m : allowed) allow += (allow.empty() ? "" : ", ") + m;
    Response response = problem(405, reason_phrase(405), "method " + in.method + " is not allowed on " + in.path);
    response.headers["Allow"] = allow;
    return response;
  }

  // A body that is not JSON, or a body without a Content-Type, on a method that takes one.
  static bool refuses_media_type(const httplib::Request& in, const std::string& method, bool body_declared) {
    return takes_body(method) &&
           (in.has_header("Content-Type") ? !is_json_media_type(in.get_header_value("Content-Type")) : body_declared);
  }

  static Response unsupported_media_type(const httplib::Request& in, const Route& route) {
    const std::string type = in.get_header_value("Content-Type");
    return problem(415, reason_phrase(415),
                   (type.empty() ? std::string("a request body without a Content-Type")
                                 : "Content-Type '" + type.substr(0, 100) + "'") +
                       " is not accepted on " + route.pattern + ": send application/json");
  }

  static Request to_request(const httplib::Request& in, const std::string& body, const Route& route,
                            const std::vector<std::string>& segments) {
    Request request;
    request.method = in.method;
    request.path = in.path;
    request.body = body;
    request.route = route.pattern;
    for (const auto& [name, value] : in.headers) request.headers[lower(name)] = value;
    for (const auto& [name, value] : in.params) request.query[name] = value;
    route.matches(segments, &request.path_params);
    return request;
  }

  // The guard's refusal, else the route's answer; an exception is answered
  // as a problem.
  Response answer(const Route& route, Request request) const {
    try {
      std::optional<Response> refused;
      if (guard) refused = guard(request);
      return refused ? std::move(*refused) : route.handler(request);
    } catch (const std::exception& e) {
      return problem_from(e);
    } catch (...) {
      // Not a std::exception: nothing to say about it, but still an answer.
      logging::get("http")->error("non-standard exception from handler of {} {}", request.method, route.pattern);
      return problem(errc::internal, 500, reason_phrase(500), "the server failed to handle the request; see its log");
    }
  }

  // Worker threads, body limit and socket options, before the handlers and the bind.
  void configure_sockets() {
    const std::size_t threads = std::max<std::size_t>(1, options.threads);
    // One more thread than connections allowed, so that the connection over
    // the cap is answered 503 at once.
    const std::size_t max_threads = std::max(threads, options.max_connections + 1);
    server.new_task_queue = [threads, max_threads] { return new ElasticPool(threads, max_threads); };
    server.set_payload_max_length(options.max_body_bytes);
    // httplib's default adds SO_REUSEPORT, which would let a second process
    // silently share our port; SO_REUSEADDR alone allows quick restarts only.
    server.set_socket_options([](socket_t sock) {
      int yes = 1;
      ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    // A response goes out in two writes (headers, body): without TCP_NODELAY
    // (inherited by every accepted socket) the body of a kept-alive exchange
    // waits for the client's delayed ACK, 40 ms per request.
    server.set_tcp_nodelay(true);
    // Requests served on one kept-alive connection before it is closed
    // (cpp-httplib's default is 5: a client such as a submitter or the
    // console would pay a new TCP handshake, and auth, every fifth request).
    // As nginx's keepalive_requests; a connection idle past
    // keep_alive_timeout is closed anyway.
    server.set_keep_alive_max_count(1000);
  }

  // Every method and path goes to dispatch (through with_body when a body
  // may come); errors, the pre-routing check and the access log to theirs.
  void install_handlers() {
    auto plain = [this](const httplib::Request& in, httplib::Response& out) {
      dispatch(in, out, in.body, !in.body.empty());
    };
    auto reading = [this](const httplib::Request& in, httplib::Response& out, const httplib::ContentReader& reader) {
      with_body(in, out, reader);
    };
    const char* any = ".*";
    server.Get(any, plain);
    server.Post(any, reading);
    server.Put(any, reading);
    server.Patch(any, reading);
    server.Delete(any, reading);
    server.Options(any, plain);
    server.set_error_handler(httplib::Server::HandlerWithResponse(
        [this](const httplib::Request& in, httplib::Response& out) { return on_error(in, out); }));
    server.set_pre_routing_handler(
        [this](const httplib::Request& in, httplib::Response& out) { return before_body(in, out); });
    server.set_logger([this](const httplib::Request& in, const httplib::Response& out) { on_logged(in, out); });
  }

  // The port now listening (any free one when 0 was asked for).
  int bind_port() {
    int bound;
    if (requested_port == 0) {
      bound = server.bind_to_any_port(host);
    } else {
      bound = server.bind_to_port(host, requested_port) ? requested_port : -1;
    }
    if (bound < 0) {
      throw Error(errc::unavailable, "cannot listen on " + host + ":" + std::to_string(requested_port) +
                                         " (address in use or not local?)");
    }
    return bound;
  }

  void count(const std::string& method, int status, const std::string& route) {
    request_counted = true;
    registry
        ->counter("conveyor_http_requests_total", "HTTP requests answered, by status code.",
                  {{"code", std::to_string(status)}, {"method", method_label(method)}, {"route", route}})
        .inc();
  }

  // Answers errors httplib produces before our dispatcher runs (body too
  // large, unparsable request line, unsupported method, a deadline or limit
  // of the connection stream) as problem+json.
  httplib::Server::HandlerResponse on_error(const httplib::Request& in, httplib::Response& out) {
    if (!out.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string detail;
    if (out.status == 400 && serving.stream != nullptr) {
      switch (serving.stream->failure()) {
        case ConnectionStream::Failure::timeout:
          out.status = 408;
          break;
        case ConnectionStream::Failure::headers_too_large:
          out.status = 431;
          break;
        case ConnectionStream::Failure::body_too_large:
          out.status = 413;
          break;
        default:
          break;
      }
    }
    switch (out.status) {
      case 408:
        detail = "the request did not arrive within " + std::to_string(options.header_timeout.count()) +
                 " ms (headers) / " + std::to_string(options.body_timeout.count()) + " ms (body)";
        break;
      case 413:
        detail = "request body is larger than " + std::to_string(options.max_body_bytes) + " bytes";
        break;
      case 414:
        detail = "request line too long";
        break;
      case 431:
        detail = "request headers are larger than 64 KiB";
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
    if (out.status != 404) serving.close_after = true;
    const Response response = problem(out.status, reason_phrase(out.status), detail);
    out.set_content(response.body, response.content_type);
    if (!request_counted) count(in.method, out.status, "unmatched");
    return httplib::Server::HandlerResponse::Handled;
  }

  // Runs once the request line and headers are read, before any body.
  httplib::Server::HandlerResponse before_body(const httplib::Request& in, httplib::Response& out) {
    request_counted = false;  // in case a failed write skipped the logger last time
    const std::string encoding = lower(in.get_header_value("Content-Encoding"));
    if (!encoding.empty() && encoding != "identity") {
      // Never inflate: a small compressed body can grow to gigabytes.
      serving.close_after = true;
      reply(in, out,
            problem(415, reason_phrase(415),
                    "Content-Encoding '" + encoding.substr(0, 100) + "' is not accepted: send the body uncompressed"));
      return httplib::Server::HandlerResponse::Handled;
    }
    // A method we serve nowhere (an invented one, HTTP/2's PRI) is answered
    // now, without reading anything more: 404 or 405 from dispatch.
    if (method_label(in.method) == "other") {
      serving.close_after = true;
      dispatch(in, out, std::string(), false);
      return httplib::Server::HandlerResponse::Handled;
    }
    if (!takes_body(in.method)) return httplib::Server::HandlerResponse::Unhandled;
    // A request without Content-Length or Transfer-Encoding has no body
    // (RFC 9112 §6.3); httplib would read one until the client closes.
    const bool declared = in.has_header("Transfer-Encoding") ||
                          (in.has_header("Content-Length") && in.get_header_value("Content-Length") != "0");
    if (!declared) {
      dispatch(in, out, std::string(), false);
      return httplib::Server::HandlerResponse::Handled;
    }
    // A body that is not JSON is refused before httplib reads it (it would
    // parse forms and multipart itself): dispatch answers 404, 405 or 415.
    if (!is_json_media_type(in.get_header_value("Content-Type"))) {
      serving.close_after = true;
      dispatch(in, out, std::string(), true);
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  }

  // Reads the body through httplib's content reader, stopping as soon as it
  // grows past the limit, then dispatches.
  void with_body(const httplib::Request& in, httplib::Response& out, const httplib::ContentReader& reader) {
    std::string body;
    bool too_large = false;
    const bool read = reader([&](const char* data, std::size_t n) {
      if (body.size() + n > options.max_body_bytes) {
        too_large = true;
        return false;
      }
      body.append(data, n);
      return true;
    });
    if (read) {
      dispatch(in, out, body, true);
      return;
    }
    // The rest of the body is unread: this connection cannot carry another request.
    serving.close_after = true;
    const auto failure = serving.stream != nullptr ? serving.stream->failure() : ConnectionStream::Failure::none;
    int status = 400;
    if (too_large || out.status == 413 || failure == ConnectionStream::Failure::body_too_large) {
      status = 413;
    } else if (failure == ConnectionStream::Failure::timeout) {
      status = 408;
    }
    out.status = status;
    out.body.clear();
    on_error(in, out);
  }

  void reply(const httplib::Request& in, httplib::Response& out, const Response& response) {
    out.status = response.status;
    for (const auto& [name, value] : response.headers) out.set_header(name, value);
    out.set_content(response.body, response.content_type);
    count(in.method, response.status, "unmatched");
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
      std::count_if(r.segments.begin(), r.segments.end(), [](const std::string& s) { return !is_placeholder(s); }));
  impl_->routes.push_back(std::move(r));
}

std::vector<Server::RouteInfo> Server::routes() const {
  std::vector<RouteInfo> out;
  for (const Route& r : impl_->routes) out.push_back({r.method, r.pattern});
  return out;
}

void Server::set_guard(Guard guard) {
  if (impl_->started) throw Error(errc::internal, "guard set after start()");
  impl_->guard = std::move(guard);
}

void Server::start() {
  if (impl_->stopped) throw Error(errc::internal, "http::Server cannot be restarted after stop()");
  if (impl_->started) return;
  Impl& impl = *impl_;
  impl.configure_sockets();
  impl.install_handlers();
  const int bound = impl.bind_port();
  impl.port = bound;
  impl.started = true;
  // The socket already listens, so connections queue in its backlog until
  // the accept loop runs.
  impl.thread = std::thread([&impl] {
    logging::name_this_thread("http-accept");
    impl.server.listen_after_bind();
    impl.loop_exited = true;
  });
  // stop() is a no-op until the accept loop has marked itself running, so
  // wait for that (a few microseconds) to make start();stop() safe.
  while (!impl.server.is_running() && !impl.loop_exited) std::this_thread::sleep_for(std::chrono::microseconds(200));
  logging::get("http")->info("listening on {}:{}{}", impl.host, bound, impl.tls ? " (HTTPS only)" : "");
  std::string listed;
  for (const RouteInfo& r : routes()) listed += (listed.empty() ? "" : ", ") + r.method + " " + r.pattern;
  logging::get("http")->info("routes: {}", listed);
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
