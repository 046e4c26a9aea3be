#include "raw_http.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace conveyor::fuzz {
namespace {

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  return left > 1000000 ? 1000000 : static_cast<int>(left);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(std::string_view s) {
  std::size_t b = 0;
  std::size_t e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r')) --e;
  return std::string(s.substr(b, e - b));
}

}  // namespace

std::string RawResponse::header(const std::string& name) const {
  const auto it = headers.find(name);
  return it == headers.end() ? std::string() : it->second;
}

// ------------------------------------------------------------ RawConnection

RawConnection::~RawConnection() { close(); }

RawConnection::RawConnection(RawConnection&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      error_(std::move(other.error_)),
      timed_out_(other.timed_out_),
      eof_(other.eof_),
      reset_(other.reset_),
      buffer_(std::move(other.buffer_)) {}

RawConnection& RawConnection::operator=(RawConnection&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::exchange(other.fd_, -1);
    error_ = std::move(other.error_);
    timed_out_ = other.timed_out_;
    eof_ = other.eof_;
    reset_ = other.reset_;
    buffer_ = std::move(other.buffer_);
  }
  return *this;
}

void RawConnection::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool RawConnection::connect(int port, Clock::time_point deadline) {
  close();
  error_.clear();
  timed_out_ = eof_ = reset_ = false;
  buffer_.clear();
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    error_ = std::string("socket: ") + std::strerror(errno);
    return false;
  }
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) return true;
  if (errno != EINPROGRESS) {
    error_ = "connect to 127.0.0.1:" + std::to_string(port) + ": " + std::strerror(errno);
    close();
    return false;
  }
  pollfd p{fd_, POLLOUT, 0};
  const int n = ::poll(&p, 1, remaining_ms(deadline));
  if (n == 0) {
    timed_out_ = true;
    error_ = "timed out connecting to 127.0.0.1:" + std::to_string(port);
    close();
    return false;
  }
  int err = 0;
  socklen_t len = sizeof err;
  ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
  if (n < 0 || err != 0) {
    error_ = "connect to 127.0.0.1:" + std::to_string(port) + ": " + std::strerror(n < 0 ? errno : err);
    close();
    return false;
  }
  return true;
}

bool RawConnection::write(std::string_view data, Clock::time_point deadline) {
  std::size_t sent = 0;
  while (sent < data.size()) {
    if (fd_ < 0) return false;
    pollfd p{fd_, POLLOUT | POLLIN, 0};
    const int n = ::poll(&p, 1, remaining_ms(deadline));
    if (n == 0) {
      timed_out_ = true;
      error_ = "timed out writing the request (" + std::to_string(sent) + " of " + std::to_string(data.size()) +
               " bytes sent)";
      return false;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      error_ = std::string("poll: ") + std::strerror(errno);
      return false;
    }
    if ((p.revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      // The server answered (or gave up) before reading everything: stop
      // writing, what it said is read by read_response().
      error_ = "the server answered or closed after " + std::to_string(sent) + " of " + std::to_string(data.size()) +
               " bytes";
      return false;
    }
    const std::size_t chunk = std::min<std::size_t>(data.size() - sent, 256 * 1024);
    const ssize_t w = ::send(fd_, data.data() + sent, chunk, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
      error_ = std::string("send: ") + std::strerror(errno) + " after " + std::to_string(sent) + " bytes";
      return false;
    }
    sent += static_cast<std::size_t>(w);
  }
  return true;
}

void RawConnection::half_close() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
}

bool RawConnection::fill(Clock::time_point deadline) {
  if (eof_ || fd_ < 0) return false;
  char chunk[64 * 1024];
  while (true) {
    pollfd p{fd_, POLLIN, 0};
    const int n = ::poll(&p, 1, remaining_ms(deadline));
    if (n == 0) {
      timed_out_ = true;
      return false;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      error_ = std::string("poll: ") + std::strerror(errno);
      return false;
    }
    const ssize_t r = ::recv(fd_, chunk, sizeof chunk, 0);
    if (r > 0) {
      buffer_.append(chunk, static_cast<std::size_t>(r));
      return true;
    }
    if (r == 0) {
      eof_ = true;
      return false;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
    eof_ = true;
    reset_ = errno == ECONNRESET;
    error_ = std::string("recv: ") + std::strerror(errno);
    return false;
  }
}

bool RawConnection::peer_closed() {
  if (fd_ < 0 || eof_) return true;
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  if ((p.revents & (POLLHUP | POLLERR)) != 0) return true;
  char c;
  const ssize_t r = ::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

RawResponse RawConnection::read_response(Clock::time_point deadline, bool head_request, std::size_t max_body) {
  RawResponse out;
  const auto started = Clock::now();
  auto finish = [&](std::string why) {
    out.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
    if (!why.empty()) {
      out.ok = false;
      out.timed_out = timed_out_;
      out.error = std::move(why);
      if (!error_.empty() && !timed_out_) out.error += " (" + error_ + ")";
    }
    return out;
  };
  bool any_byte = !buffer_.empty();

  while (true) {  // one iteration per response head; 1xx heads are skipped
    std::size_t end = std::string::npos;
    std::size_t sep = 0;
    while (true) {
      end = buffer_.find("\r\n\r\n");
      sep = 4;
      if (end == std::string::npos) {
        end = buffer_.find("\n\n");
        sep = 2;
      }
      if (end != std::string::npos) break;
      if (buffer_.size() > (1u << 20)) return finish("response headers longer than 1 MiB");
      if (!fill(deadline)) {
        if (!any_byte && buffer_.empty() && eof_) {
          out.no_bytes = true;
          return finish(reset_ ? "connection reset before any response byte"
                               : "connection closed before any response byte");
        }
        return finish(timed_out_ ? "timed out reading the response headers (" + std::to_string(buffer_.size()) +
                                       " bytes so far)"
                                 : "connection closed inside the response headers");
      }
      any_byte = true;
    }
    const std::string head = buffer_.substr(0, end);
    buffer_.erase(0, end + sep);

    out.headers.clear();
    std::size_t line_end = head.find('\n');
    out.status_line = trim(head.substr(0, line_end));
    // "HTTP/1.1 404 Not Found"
    if (out.status_line.rfind("HTTP/", 0) != 0 || out.status_line.size() < 12) {
      return finish("not an HTTP status line: " + dump(out.status_line, 80));
    }
    const std::size_t sp = out.status_line.find(' ');
    try {
      out.status = std::stoi(out.status_line.substr(sp + 1, 3));
    } catch (const std::exception&) {
      return finish("no status code in " + dump(out.status_line, 80));
    }
    std::size_t pos = line_end == std::string::npos ? head.size() : line_end + 1;
    while (pos < head.size()) {
      std::size_t e = head.find('\n', pos);
      if (e == std::string::npos) e = head.size();
      const std::string line = head.substr(pos, e - pos);
      pos = e + 1;
      const std::size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      const std::string name = lower(trim(line.substr(0, colon)));
      const std::string value = trim(line.substr(colon + 1));
      auto [it, inserted] = out.headers.emplace(name, value);
      if (!inserted) it->second += ", " + value;
    }
    if (out.status >= 100 && out.status < 200) continue;
    break;
  }

  if (head_request || out.status == 204 || out.status == 304) {
    out.ok = true;
    return finish("");
  }

  const std::string te = lower(out.header("transfer-encoding"));
  if (te.find("chunked") != std::string::npos) {
    while (true) {
      std::size_t eol;
      while ((eol = buffer_.find("\r\n")) == std::string::npos) {
        if (!fill(deadline)) return finish("response body cut inside a chunk size line");
      }
      const std::string size_line = buffer_.substr(0, eol);
      buffer_.erase(0, eol + 2);
      std::size_t size = 0;
      try {
        size = std::stoul(size_line, nullptr, 16);
      } catch (const std::exception&) {
        return finish("bad chunk size line " + dump(size_line, 40));
      }
      if (size == 0) {
        // Trailers up to an empty line.
        while (true) {
          while ((eol = buffer_.find("\r\n")) == std::string::npos) {
            if (!fill(deadline)) {
              out.ok = true;  // a missing final CRLF is tolerated
              return finish("");
            }
          }
          const bool empty = eol == 0;
          buffer_.erase(0, eol + 2);
          if (empty) break;
        }
        out.ok = true;
        return finish("");
      }
      if (out.body.size() + size > max_body) return finish("response body larger than the test's limit");
      while (buffer_.size() < size + 2) {
        if (!fill(deadline)) return finish("response body cut inside a chunk");
      }
      out.body.append(buffer_, 0, size);
      buffer_.erase(0, size + 2);
    }
  }

  const std::string cl = out.header("content-length");
  if (!cl.empty()) {
    std::size_t length = 0;
    try {
      length = std::stoul(cl);
    } catch (const std::exception&) {
      return finish("bad Content-Length in the response: " + dump(cl, 40));
    }
    if (length > max_body) return finish("response Content-Length " + cl + " larger than the test's limit");
    while (buffer_.size() < length) {
      if (!fill(deadline)) {
        return finish("response body cut at " + std::to_string(buffer_.size()) + " of " + cl + " bytes");
      }
    }
    out.body = buffer_.substr(0, length);
    buffer_.erase(0, length);
    out.ok = true;
    return finish("");
  }

  // Delimited by the connection's close.
  while (fill(deadline)) {
    if (buffer_.size() > max_body) return finish("response body larger than the test's limit");
  }
  if (timed_out_) return finish("timed out reading a close-delimited response body");
  out.body = std::move(buffer_);
  buffer_.clear();
  out.ok = true;
  return finish("");
}

// ----------------------------------------------------------------- requests

std::string serialise(const RawRequest& r) {
  if (!r.raw.empty()) return r.raw;
  std::string out;
  out.reserve(r.body.size() + 512);
  out += r.method;
  out += ' ';
  out += r.target;
  out += ' ';
  out += r.version;
  out += "\r\n";
  if (r.add_host) out += "Host: 127.0.0.1\r\n";
  for (const auto& [name, value] : r.headers) {
    out += name;
    out += ": ";
    out += value;
    out += "\r\n";
  }
  if (r.add_connection_close) out += "Connection: close\r\n";
  switch (r.framing) {
    case RawRequest::Framing::content_length:
      if (!r.body.empty() || r.method == "POST" || r.method == "PUT" || r.method == "PATCH") {
        out += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
      }
      out += "\r\n";
      out += r.body;
      break;
    case RawRequest::Framing::chunked: {
      out += "Transfer-Encoding: chunked\r\n\r\n";
      std::size_t pos = 0;
      std::size_t i = 0;
      while (pos < r.body.size()) {
        std::size_t n = r.chunk_sizes.empty() ? r.body.size() : r.chunk_sizes[i++ % r.chunk_sizes.size()];
        n = std::max<std::size_t>(1, std::min(n, r.body.size() - pos));
        char size[32];
        std::snprintf(size, sizeof size, "%zx\r\n", n);
        out += size;
        out.append(r.body, pos, n);
        out += "\r\n";
        pos += n;
      }
      out += "0\r\n\r\n";
      break;
    }
    case RawRequest::Framing::none:
      out += "\r\n";
      out += r.body;
      break;
  }
  return out;
}

RawResponse exchange(int port, std::string_view bytes, const ExchangeOptions& options) {
  const auto deadline = Clock::now() + options.timeout;
  const auto started = Clock::now();
  RawConnection c;
  RawResponse r;
  if (!c.connect(port, deadline)) {
    r.error = c.error();
    r.timed_out = c.timed_out();
    r.no_bytes = true;
    return r;
  }
  c.write(bytes, deadline);  // an early answer or close is still read below
  if (options.half_close) c.half_close();
  r = c.read_response(deadline, options.head_request);
  r.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
  return r;
}

std::string dump(std::string_view bytes, std::size_t max) {
  std::string out;
  for (const char ch : bytes) {
    if (out.size() >= max) break;
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '\r':
        out += "\\r";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\\':
        out += "\\\\";
        break;
      default:
        if (c < 0x20 || c >= 0x7f) {
          char hex[8];
          std::snprintf(hex, sizeof hex, "\\x%02x", c);
          out += hex;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  if (out.size() >= max && bytes.size() > 0) out += "... (" + std::to_string(bytes.size()) + " bytes in all)";
  return out;
}

}  // namespace conveyor::fuzz
