// conveyor::testing Broker: one conveyor-devbroker process. It writes its
// bootstrap address to a file (atomically) once it listens; we wait for that.
#include <stdlib.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "conveyor/error/error.hpp"
#include "conveyor/testing/testing.hpp"

namespace fs = std::filesystem;

namespace conveyor::testing {
namespace {

std::string read_trimmed(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  std::string text = s.str();
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
    text.pop_back();
  }
  return text;
}

// The port of the first address in "127.0.0.1:P[,127.0.0.1:Q...]".
int first_port(const std::string& bootstrap) {
  std::string first = bootstrap.substr(0, bootstrap.find(','));
  auto colon = first.rfind(':');
  return colon == std::string::npos ? 0 : std::atoi(first.c_str() + colon + 1);
}

}  // namespace

fs::path devbroker_path() {
  if (const char* env = std::getenv("CONVEYOR_DEVBROKER"); env != nullptr && *env != '\0') {
    return env;
  }
  return CONVEYOR_DEVBROKER_PATH;
}

Broker::Broker() : Broker(Options{}) {}

Broker::Broker(Options options) : options_(std::move(options)) {
  if (options_.dir.empty()) {
    std::string tmpl = (fs::temp_directory_path() / "conveyor-broker-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      throw Error(errc::unavailable, "mkdtemp " + tmpl + " failed");
    }
    options_.dir = tmpl;
    owns_dir_ = true;
  }
  fs::create_directories(options_.dir);
  start();
}

Broker::~Broker() {
  if (!options_.detach) {
    try {
      stop();
    } catch (const std::exception& e) {
      std::cerr << "conveyor::testing: stopping devbroker in " << options_.dir << ": " << e.what() << "\n";
    }
  } else if (process_) {
    process_.reset();  // detached: ChildProcess leaves it running
  }
  if (owns_dir_ && !options_.detach) {
    std::error_code ec;
    fs::remove_all(options_.dir, ec);
  }
}

int Broker::pid() const { return process_ ? process_->pid() : -1; }

void Broker::stop() {
  if (!process_) return;
  process_->stop();
  process_.reset();
}

void Broker::restart() {
  stop();
  resume();
}

void Broker::resume() {
  if (process_) return;
  if (int port = first_port(bootstrap_); port > 0) options_.port = port;
  start();
}

void Broker::start() {
  const fs::path file = options_.dir / "bootstrap";
  const fs::path log = options_.dir / "devbroker.log";
  std::error_code ec;
  fs::remove(file, ec);
  const fs::path exe = options_.executable.empty() ? devbroker_path() : options_.executable;
  ChildProcess::Options o;
  o.argv = {exe.string(), "--bootstrap-file", file.string()};
  if (options_.port != 0) {
    o.argv.push_back("--port");
    o.argv.push_back(std::to_string(options_.port));
  }
  o.stdout_file = log;
  o.detach = options_.detach;
  process_ = std::make_unique<ChildProcess>(std::move(o));
  bool exited = false;
  bool ready = wait_until(
      [&] {
        if (fs::exists(file)) return true;
        exited = !process_->running();
        return exited;
      },
      std::chrono::seconds(10));
  if (!ready || exited) {
    std::string why = exited ? "exited" : "wrote no " + file.string() + " within 10 s";
    process_->stop();
    process_.reset();
    throw Error(errc::unavailable, "conveyor-devbroker (" + exe.string() + ") " + why + "; log " + log.string() +
                                       ":\n" + read_trimmed(log));
  }
  bootstrap_ = read_trimmed(file);
}

}  // namespace conveyor::testing
