// `<service> --check` (runtime/check.hpp) against a real HTTP server on a
// free port serving the real admin routes: ready, not ready, nothing
// listening, a server that never answers, port 0, wildcard hosts.
#include "conveyor/runtime/check.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <string>

#include "conveyor/error/error.hpp"
#include "conveyor/http/admin.hpp"
#include "conveyor/http/server.hpp"
#include "conveyor/metrics/metrics.hpp"
#include "conveyor/runtime/runtime.hpp"
#include "conveyor/testing/testing.hpp"

namespace conveyor::runtime {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

config::Config load(std::map<std::string, std::string> env) {
  env.emplace("CONVEYOR_DATABASE_URL", "postgresql://conveyor:s3cret@db.invalid/conveyor");
  return config::load(service_schema(), {}, env);
}

class CheckTest : public ::testing::Test {
 protected:
  CheckTest() : server_("127.0.0.1", 0) {}

  void SetUp() override {
    http::AdminOptions admin;
    admin.service = "conveyor-test";
    admin.version = "1.2.3";
    admin.db_ready = [this] { return db_up_.load(); };
    admin.registry = &registry_;
    http::add_admin_routes(server_, std::move(admin));
    server_.start();
    port_ = std::to_string(server_.port());
  }

  metrics::Registry registry_;
  std::atomic<bool> db_up_{true};
  http::Server server_;
  std::string port_;
};

TEST_F(CheckTest, ReadyWhenReadyzAnswers200) {
  const CheckResult r = check_ready(load({{"CONVEYOR_HTTP_PORT", port_}}), 0);
  EXPECT_TRUE(r.ok) << r.message;
  EXPECT_EQ(r.message, "ready: GET http://127.0.0.1:" + port_ + "/readyz answered 200");
}

TEST_F(CheckTest, NotReadyNamesTheStatusAndTheReasonOnOneLine) {
  db_up_ = false;
  const CheckResult r = check_ready(load({{"CONVEYOR_HTTP_PORT", port_}}), 0);
  EXPECT_FALSE(r.ok);
  EXPECT_THAT(r.message, HasSubstr("answered 503"));
  EXPECT_THAT(r.message, HasSubstr("\"database\":\"down\""));
  EXPECT_THAT(r.message, Not(HasSubstr("\n")));
}

TEST_F(CheckTest, AWildcardListenAddressIsAskedOnLoopback) {
  for (const char* host : {"0.0.0.0", "::", ""}) {
    const auto config = load({{"CONVEYOR_HTTP_PORT", port_}, {"CONVEYOR_HTTP_HOST", host}});
    EXPECT_EQ(readyz_url(config, 0), "http://127.0.0.1:" + port_ + "/readyz") << host;
    EXPECT_TRUE(check_ready(config, 0).ok) << host;
  }
  EXPECT_EQ(readyz_url(load({{"CONVEYOR_HTTP_PORT", "9"}, {"CONVEYOR_HTTP_HOST", "::1"}}), 0), "http://[::1]:9/readyz");
}

TEST_F(CheckTest, TheServicesDefaultPortAppliesWhenThePortIsNotSet) {
  const config::Config config = load({});
  EXPECT_EQ(http_port(config, server_.port()), server_.port());
  EXPECT_TRUE(check_ready(config, server_.port()).ok);
  // Set explicitly, the configured port wins over the default.
  EXPECT_EQ(http_port(load({{"CONVEYOR_HTTP_PORT", "8085"}}), server_.port()), 8085);
}

TEST(Check, PortZeroCannotBeChecked) {
  const CheckResult r = check_ready(load({{"CONVEYOR_HTTP_PORT", "0"}}), 8080);
  EXPECT_FALSE(r.ok);
  EXPECT_THAT(r.message, HasSubstr("CONVEYOR_HTTP_PORT is 0"));
  // Not set, with a service default of 0 (any free port): same.
  EXPECT_FALSE(check_ready(load({}), 0).ok);
  EXPECT_THROW(readyz_url(load({}), 0), Error);
}

TEST(Check, NothingListeningIsNotReady) {
  const std::string port = std::to_string(testing::free_port());
  const CheckResult r = check_ready(load({{"CONVEYOR_HTTP_PORT", port}}), 0);
  EXPECT_FALSE(r.ok);
  EXPECT_THAT(r.message, HasSubstr("not ready: GET http://127.0.0.1:" + port + "/readyz"));
}

// A socket that listens but never accepts: the kernel completes the
// connection, nothing ever answers. The probe gives up after its timeout.
TEST(Check, AServerThatNeverAnswersTimesOut) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 8), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string port = std::to_string(ntohs(addr.sin_port));

  const auto started = std::chrono::steady_clock::now();
  const CheckResult r = check_ready(load({{"CONVEYOR_HTTP_PORT", port}}), 0, 300ms);
  const auto took = std::chrono::steady_clock::now() - started;
  ::close(fd);
  EXPECT_FALSE(r.ok);
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 3s) << r.message;
}

}  // namespace
}  // namespace conveyor::runtime
