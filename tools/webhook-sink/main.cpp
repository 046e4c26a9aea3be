// conveyor-webhook-sink [--port N] [--out FILE]: accepts POST /hook and appends
// each body (one CloudEvent) as a line of FILE; runs until SIGTERM/SIGINT.
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "conveyor/http/server.hpp"

namespace {

constexpr const char* kUsage =
    "usage: conveyor-webhook-sink [--port N] [--out FILE] | --help | --version\n\n"
    "Accepts POST /hook on 127.0.0.1 and appends each body (one CloudEvent) as a line of FILE\n"
    "(default webhooks.jsonl); prints its URL and runs until SIGTERM or SIGINT.\n\n"
    "  --port N    port to listen on, 0 (the default) picks a free one\n"
    "  --out FILE  where the bodies go\n"
    "  --help, -h  print this help and exit\n"
    "  --version   print the version and exit\n";

[[noreturn]] void usage_error(const std::string& what) {
  std::cerr << "conveyor-webhook-sink: " << what << "\n\n" << kUsage;
  std::exit(2);
}

int parse_port(const std::string& text) {
  std::size_t used = 0;
  int port = -1;
  try {
    port = std::stoi(text, &used);
  } catch (const std::logic_error&) {
    used = 0;  // reported below
  }
  if (used != text.size() || port < 0 || port > 65535) usage_error("--port: expected 0 to 65535, got '" + text + "'");
  return port;
}

}  // namespace

int main(int argc, char** argv) {
  int port = 0;
  std::string out = "webhooks.jsonl";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (a == "--version") {
      std::cout << "conveyor-webhook-sink " << CONVEYOR_VERSION << "\n";
      return 0;
    }
    if (a != "--port" && a != "--out") usage_error("unknown argument '" + a + "'");
    if (i + 1 >= argc) usage_error(a + ": missing value");
    const std::string value = argv[++i];
    if (a == "--port") port = parse_port(value);
    else out = value;
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // before the server's threads exist

  std::mutex mu;
  conveyor::http::Server server("127.0.0.1", port);
  server.route("POST", "/hook", [&](const conveyor::http::Request& r) {
    std::lock_guard g(mu);
    std::ofstream(out, std::ios::app) << r.body << "\n";
    return conveyor::http::Response::json({{"received", true}});
  });
  server.route("GET", "/healthz", [](const conveyor::http::Request&) {
    return conveyor::http::Response::json({{"status", "ok"}});
  });
  server.start();
  std::cout << "http://127.0.0.1:" << server.port() << "/hook" << std::endl;
  int sig = 0;
  sigwait(&set, &sig);
  server.stop();
  return 0;
}
