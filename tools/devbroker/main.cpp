// conveyor-devbroker: a local Kafka broker for development and tests.
//
// It runs librdkafka's mock cluster: the real Kafka protocol over TCP, data in
// memory, lost when the process exits. Any Kafka client (librdkafka, kcat, a
// Java client) can talk to it. It prints its bootstrap address on stdout and
// runs until SIGTERM or SIGINT.
//
// Deliberately links only librdkafka (not conveyor::core) so it stays tiny.
//
// Fixed ports: librdkafka 2.0.2 always binds mock brokers to 127.0.0.1:0 (a
// random port) and has no property to choose one ("test.mock.num.brokers" and
// "test.mock.broker.rtt" are its only mock settings). A fixed port matters for
// restarting a broker on the same address, so this executable interposes
// bind(): while the cluster is being created, a bind of a TCP socket to
// 127.0.0.1:0 is redirected to the next requested port. librdkafka calls bind
// through the PLT, so the executable's definition wins for it.
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace {

// Set by main() only around rd_kafka_mock_cluster_new(); read by bind().
std::atomic<int> g_next_port{0};   // 0: leave binds alone
std::atomic<int> g_ports_left{0};  // how many binds still to redirect
std::atomic<int> g_bind_errno{0};  // errno of a failed redirected bind

int real_bind(int fd, const sockaddr* addr, socklen_t len) {
  return static_cast<int>(::syscall(SYS_bind, fd, addr, len));
}

bool is_loopback_any_port_tcp(int fd, const sockaddr* addr, socklen_t len) {
  if (addr == nullptr || len < static_cast<socklen_t>(sizeof(sockaddr_in)) || addr->sa_family != AF_INET) {
    return false;
  }
  sockaddr_in in{};
  std::memcpy(&in, addr, sizeof in);
  if (in.sin_port != 0 || in.sin_addr.s_addr != htonl(INADDR_LOOPBACK)) return false;
  int type = 0;
  socklen_t type_len = sizeof type;
  return ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) == 0 && type == SOCK_STREAM;
}

}  // namespace

extern "C" int bind(int fd, const sockaddr* addr, socklen_t len) noexcept {
  if (g_next_port.load() == 0 || g_ports_left.load() <= 0 || !is_loopback_any_port_tcp(fd, addr, len)) {
    return real_bind(fd, addr, len);
  }
  sockaddr_in in{};
  std::memcpy(&in, addr, sizeof in);
  in.sin_port = htons(static_cast<std::uint16_t>(g_next_port.fetch_add(1)));
  g_ports_left.fetch_sub(1);
  // A restarted broker must get its port back while old connections linger
  // in TIME_WAIT.
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  int rc = real_bind(fd, reinterpret_cast<const sockaddr*>(&in), sizeof in);
  if (rc != 0) g_bind_errno.store(errno);
  return rc;
}

namespace {

constexpr const char* kUsage =
    "usage: conveyor-devbroker [options]\n"
    "\n"
    "A local Kafka broker (librdkafka mock cluster, data in memory).\n"
    "Prints its bootstrap address on stdout and runs until SIGTERM/SIGINT.\n"
    "\n"
    "  --port N             listen on 127.0.0.1:N (brokers get N, N+1, ...);\n"
    "                       default: random free ports\n"
    "  --brokers N          number of brokers (default 1)\n"
    "  --partitions N       partitions of each created topic (default 6)\n"
    "  --topics a,b,c       topics to create at start\n"
    "                       (default conveyor.parameters,conveyor.control)\n"
    "  --bootstrap-file P   also write the bootstrap address to file P (atomically)\n"
    "  --help               this text\n"
    "  --version            the version\n"
    "\n"
    "Other topics, such as the job event topics conveyor.job.<type>, are\n"
    "created on first use (producer metadata request or a consumer with\n"
    "allow.auto.create.topics=true) with 4 partitions.\n";

struct Args {
  int port = 0;
  int brokers = 1;
  int partitions = 6;
  std::vector<std::string> topics{"conveyor.parameters", "conveyor.control"};
  std::string bootstrap_file;
};

[[noreturn]] void usage_error(const std::string& what) {
  std::cerr << "conveyor-devbroker: " << what << "\n\n" << kUsage;
  std::exit(2);
}

int parse_int(const std::string& option, const std::string& text, int min, int max) {
  try {
    std::size_t used = 0;
    int value = std::stoi(text, &used);
    if (used == text.size() && value >= min && value <= max) return value;
  } catch (const std::logic_error&) {
    // Reported below with the option's name.
  }
  usage_error(option + ": expected an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "], got '" +
              text + "'");
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> topics;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) topics.push_back(item);
  }
  return topics;
}

Args parse_args(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    std::string option = argv[i];
    if (option == "--help" || option == "-h") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (option == "--version") {
      std::cout << "conveyor-devbroker " << CONVEYOR_VERSION << "\n";
      std::exit(0);
    }
    std::string value;
    // Known before its value is looked for: `--bogus` is unknown, not short of a value.
    static const std::set<std::string> kOptions = {"--port", "--brokers", "--partitions", "--topics",
                                                   "--bootstrap-file"};
    if (!kOptions.contains(option.substr(0, option.find('=')))) usage_error("unknown option " + option);
    if (auto eq = option.find('='); option.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = option.substr(eq + 1);
      option.resize(eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      usage_error(option + ": missing value");
    }
    if (option == "--port") {
      args.port = parse_int(option, value, 0, 65535);
    } else if (option == "--brokers") {
      args.brokers = parse_int(option, value, 1, 16);
    } else if (option == "--partitions") {
      args.partitions = parse_int(option, value, 1, 1000);
    } else if (option == "--topics") {
      args.topics = split_list(value);
    } else {
      args.bootstrap_file = value;  // --bootstrap-file
    }
  }
  if (args.port != 0 && args.port + args.brokers - 1 > 65535) {
    usage_error("--port: ports " + std::to_string(args.port) + ".." + std::to_string(args.port + args.brokers - 1) +
                " exceed 65535");
  }
  return args;
}

// Readers poll for the file: they must never see it half written.
bool write_atomically(const std::filesystem::path& path, const std::string& content) {
  std::filesystem::path tmp = path;
  tmp += ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << content << '\n';
    out.flush();
    if (!out) return false;
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    return false;
  }
  return true;
}

// librdkafka 2.0.2 aborts (an assertion in its cleanup) when a mock broker
// cannot bind, so a busy port is found here first. Returns the errno of the
// first port that cannot be bound, or 0.
int check_ports_free(int first, int n, int* busy_port) {
  for (int port = first; port < first + n; ++port) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return errno;
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    in.sin_port = htons(static_cast<std::uint16_t>(port));
    int rc = real_bind(fd, reinterpret_cast<const sockaddr*>(&in), sizeof in);
    int err = rc == 0 ? 0 : errno;
    ::close(fd);
    if (err != 0) {
      *busy_port = port;
      return err;
    }
  }
  return 0;
}

// Every port in `bootstrap` ("127.0.0.1:P,127.0.0.1:Q") is in [first, first+n).
bool ports_as_requested(const std::string& bootstrap, int first, int n) {
  for (const auto& address : split_list(bootstrap)) {
    auto colon = address.rfind(':');
    if (colon == std::string::npos) return false;
    int port = std::atoi(address.c_str() + colon + 1);
    if (port < first || port >= first + n) return false;
  }
  return true;
}

// Blocks SIGTERM and SIGINT in this thread (and the threads it starts) and
// returns them, for sigwait().
sigset_t block_stop_signals() {
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  return stop_signals;
}

// The handle that hosts the mock cluster; nullptr (said on stderr) if it cannot be made.
rd_kafka_t* new_cluster_handle() {
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  // log_level 4: warnings and worse; hides the notice that this handle has
  // no bootstrap.servers (it only hosts the cluster, it never connects).
  for (const auto& [name, value] : {std::pair{"client.id", "conveyor-devbroker"}, std::pair{"log_level", "4"}}) {
    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
      std::cerr << "conveyor-devbroker: " << name << ": " << errstr << "\n";
      return nullptr;
    }
  }
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
  if (rk == nullptr) std::cerr << "conveyor-devbroker: cannot create the mock cluster's handle: " << errstr << "\n";
  return rk;
}

// The mock cluster's brokers, on the ports asked for (--port); nullptr (said
// on stderr) if it cannot start there.
rd_kafka_mock_cluster_t* start_cluster(rd_kafka_t* rk, const Args& args) {
  g_ports_left.store(args.port != 0 ? args.brokers : 0);
  g_next_port.store(args.port);
  rd_kafka_mock_cluster_t* cluster = rd_kafka_mock_cluster_new(rk, args.brokers);
  g_next_port.store(0);
  g_ports_left.store(0);
  if (cluster == nullptr) {
    std::cerr << "conveyor-devbroker: cannot start the mock cluster";
    if (int e = g_bind_errno.load(); e != 0) {
      std::cerr << ": bind 127.0.0.1:" << args.port << ": " << std::strerror(e);
    }
    std::cerr << "\n";
    return nullptr;
  }
  const std::string bootstrap = rd_kafka_mock_cluster_bootstraps(cluster);
  if (args.port != 0 && !ports_as_requested(bootstrap, args.port, args.brokers)) {
    std::cerr << "conveyor-devbroker: asked for port " << args.port << " but the mock cluster"
              << " listens on " << bootstrap << "\n";
    rd_kafka_mock_cluster_destroy(cluster);
    return nullptr;
  }
  return cluster;
}

bool create_topics(rd_kafka_mock_cluster_t* cluster, const Args& args) {
  int replication = args.brokers < 3 ? args.brokers : 3;
  for (const auto& topic : args.topics) {
    rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(cluster, topic.c_str(), args.partitions, replication);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      std::cerr << "conveyor-devbroker: topic " << topic << ": " << rd_kafka_err2str(err) << "\n";
      return false;
    }
  }
  return true;
}

// The bootstrap servers to --bootstrap-file and stdout, where the starter waits for them.
bool publish_bootstrap(rd_kafka_mock_cluster_t* cluster, const Args& args) {
  const std::string bootstrap = rd_kafka_mock_cluster_bootstraps(cluster);
  if (!args.bootstrap_file.empty() && !write_atomically(args.bootstrap_file, bootstrap)) {
    std::cerr << "conveyor-devbroker: --bootstrap-file " << args.bootstrap_file
              << ": cannot write: " << std::strerror(errno) << "\n";
    return false;
  }
  std::cout << bootstrap << std::endl;  // endl: readers wait for this line
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Args args = parse_args(argc, argv);

  // Block the stop signals before librdkafka starts its threads, so they
  // inherit the mask and only sigwait() below sees them.
  const sigset_t stop_signals = block_stop_signals();
  std::signal(SIGPIPE, SIG_IGN);

  if (args.port != 0) {
    int busy = 0;
    if (int err = check_ports_free(args.port, args.brokers, &busy); err != 0) {
      std::cerr << "conveyor-devbroker: cannot listen on 127.0.0.1:" << busy << ": " << std::strerror(err) << "\n";
      return 1;
    }
  }
  rd_kafka_t* rk = new_cluster_handle();
  if (rk == nullptr) return 1;
  rd_kafka_mock_cluster_t* cluster = start_cluster(rk, args);
  const bool serving = cluster != nullptr && create_topics(cluster, args) && publish_bootstrap(cluster, args);
  if (serving) {
    int sig = 0;
    sigwait(&stop_signals, &sig);
  }
  if (cluster != nullptr) rd_kafka_mock_cluster_destroy(cluster);
  rd_kafka_destroy(rk);
  if (serving && !args.bootstrap_file.empty()) {
    std::error_code ec;
    std::filesystem::remove(args.bootstrap_file, ec);
  }
  return serving ? 0 : 1;
}
