#pragma once
// A file descriptor the holder owns: closed when the holder goes. Not
// thread-safe; movable, not copyable.
#include <unistd.h>

#include <utility>

namespace conveyor::worker {

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  int get() const { return fd_; }
  // Gives up the descriptor without closing it.
  int release() { return std::exchange(fd_, -1); }
  // Closes what it holds and holds `fd` instead.
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

}  // namespace conveyor::worker
