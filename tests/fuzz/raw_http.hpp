#pragma once
// A raw HTTP/1.1 client over TCP for the fuzz test. It sends exactly the
// bytes it is given (malformed requests, invented methods, chunked and
// encoded bodies, one byte at a time) and reads one response: status line,
// headers, and a body framed by Content-Length, chunked encoding or the
// connection's close. Everything has a deadline, so a hung server fails a
// case instead of hanging the test. Not thread-safe: one connection, one
// thread (the slowloris writer owns its connections).
#include <chrono>
#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace conveyor::fuzz {

using Clock = std::chrono::steady_clock;

struct RawResponse {
  bool ok = false;         // a whole response was read
  bool no_bytes = false;   // the server closed (or reset) the connection before sending anything
  bool timed_out = false;  // the deadline passed (connect, write or read)
  std::string error;       // why !ok
  int status = 0;
  std::string status_line;
  std::map<std::string, std::string> headers;  // lower-cased names; repeats joined with ", "
  std::string body;                            // de-chunked
  std::chrono::milliseconds elapsed{0};

  // The value of a header (lower-case name), "" when absent.
  std::string header(const std::string& name) const;
};

class RawConnection {
 public:
  RawConnection() = default;
  ~RawConnection();
  RawConnection(RawConnection&& other) noexcept;
  RawConnection& operator=(RawConnection&& other) noexcept;
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  // Connects to 127.0.0.1:port before `deadline`; false (see error()) if it cannot.
  bool connect(int port, Clock::time_point deadline);
  // Writes all of `data` before `deadline`. Stops early and returns false
  // when the server answered or closed meanwhile (the answer is then still
  // readable), when the peer reset the connection, or at the deadline.
  bool write(std::string_view data, Clock::time_point deadline);
  // shutdown(SHUT_WR): the server reads end-of-file after what was written.
  void half_close();
  // Reads one response (skipping 1xx interim answers). `head_request`: the
  // response has no body whatever its headers say.
  RawResponse read_response(Clock::time_point deadline, bool head_request = false,
                            std::size_t max_body = std::size_t{64} << 20);
  // Whether the server has closed its side (a read would return end-of-file
  // or an error) — checked without blocking.
  bool peer_closed();
  void close();
  bool is_open() const { return fd_ >= 0; }
  const std::string& error() const { return error_; }
  bool timed_out() const { return timed_out_; }

 private:
  // Appends what the socket has to buffer_ (waiting until `deadline`);
  // false at end-of-file, on an error or at the deadline.
  bool fill(Clock::time_point deadline);
  int fd_ = -1;
  std::string error_;
  bool timed_out_ = false;
  bool eof_ = false;
  bool reset_ = false;
  std::string buffer_;
};

// What to send. serialise() turns it into bytes.
struct RawRequest {
  enum class Framing { content_length, chunked, none };

  std::string method = "GET";
  std::string target = "/";
  std::string version = "HTTP/1.1";
  std::vector<std::pair<std::string, std::string>> headers;  // sent in this order, as given
  std::string body;
  Framing framing = Framing::content_length;
  std::vector<std::size_t> chunk_sizes;  // chunked: sizes cycled through; empty: one chunk
  bool add_host = true;                  // "Host: 127.0.0.1"
  bool add_connection_close = true;      // "Connection: close"
  // When non-empty, sent exactly as is and everything above is ignored.
  std::string raw;
};

std::string serialise(const RawRequest& request);

struct ExchangeOptions {
  std::chrono::milliseconds timeout{10000};  // for connect + write + read together
  bool head_request = false;
  bool half_close = false;  // shutdown(SHUT_WR) after writing
};

// One request on a fresh connection: connect, write, read one response, close.
RawResponse exchange(int port, std::string_view bytes, const ExchangeOptions& options = {});

// A short printable form of bytes (C-style escapes), cut to `max` characters
// with the total size noted, for failure reports.
std::string dump(std::string_view bytes, std::size_t max = 400);

}  // namespace conveyor::fuzz
