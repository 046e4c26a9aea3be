// conveyor-webhook-sink --port N --out FILE: accepts POST /hook and appends
// each body (one CloudEvent) as a line of FILE; runs until SIGTERM/SIGINT.
#include <csignal>
#include <fstream>
#include <iostream>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

#include "conveyor/http/server.hpp"

int main(int argc, char** argv) {
  int port = 0;
  std::string out = "webhooks.jsonl";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--port") port = std::stoi(argv[i + 1]);
    else if (a == "--out") out = argv[i + 1];
    else {
      std::cerr << "usage: conveyor-webhook-sink --port N --out FILE\n";
      return 2;
    }
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
