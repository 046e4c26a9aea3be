#include "conveyor/http/server.hpp"

#include <atomic>
#include <future>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "conveyor/error/error.hpp"
#include "conveyor/http/admin.hpp"
#include "conveyor/http/client.hpp"
#include "conveyor/metrics/metrics.hpp"

namespace conveyor::http {
namespace {

using ::testing::HasSubstr;

// A real server on a free port with admin routes and a few test routes.
class ServerTest : public ::testing::Test {
 protected:
  ServerTest() : server_("127.0.0.1", 0, options()) {}

  Server::Options options() {
    Server::Options o;
    o.max_body_bytes = 1024;
    o.registry = &registry_;
    return o;
  }

  void SetUp() override {
    add_admin_routes(server_, AdminOptions{"conveyor-test", "1.2.3", [this] { return db_up_.load(); },
                                           [this] { return broker_up_.load(); }, &registry_});
    server_.route("GET", "/v1/jobs/{id}", [](const Request& req) {
      if (req.path_param("id") == "404") throw Error(errc::not_found, "job 404 does not exist");
      return Response::json({{"id", req.path_param("id")},
                             {"view", req.query_param("view", "short")},
                             {"trace", req.header("X-TRACE").value_or("")}});
    });
    server_.route("GET", "/v1/jobs/special", [](const Request&) { return Response::json({{"special", true}}); });
    server_.route("POST", "/v1/jobs", [](const Request& req) {
      const nlohmann::json body = req.json();
      return Response::json({{"got", body}}, 201);
    });
    server_.route("POST", "/v1/boom", [](const Request&) -> Response { throw std::runtime_error("secret internals"); });
    server_.start();
    ASSERT_GT(server_.port(), 0);
  }

  std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(server_.port()) + path; }

  static nlohmann::json json_of(const ClientResponse& r) { return nlohmann::json::parse(r.body); }

  metrics::Registry registry_;
  std::atomic<bool> db_up_{true};
  std::atomic<bool> broker_up_{true};
  Server server_;
};

TEST_F(ServerTest, AdminRoutes) {
  auto r = http_request("GET", url("/healthz"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(json_of(r), nlohmann::json({{"status", "ok"}}));
  EXPECT_THAT(r.headers["content-type"], HasSubstr("application/json"));

  r = http_request("GET", url("/version"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(json_of(r), nlohmann::json({{"service", "conveyor-test"}, {"version", "1.2.3"}}));

  r = http_request("GET", url("/readyz"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(json_of(r)["status"], "ready");

  // Without the broker a service works on its database poll: ready, degraded.
  broker_up_ = false;
  r = http_request("GET", url("/readyz"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(json_of(r)["status"], "degraded");
  EXPECT_EQ(json_of(r)["checks"]["broker"], "down");
  EXPECT_EQ(json_of(r)["checks"]["database"], "up");

  // Without the database it can do nothing: not ready.
  db_up_ = false;
  r = http_request("GET", url("/readyz"));
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(json_of(r)["status"], "not ready");
  EXPECT_EQ(json_of(r)["checks"]["database"], "down");

  r = http_request("GET", url("/metrics"));
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.headers["content-type"], HasSubstr("text/plain; version=0.0.4"));
  // Earlier requests were counted by route pattern.
  EXPECT_THAT(r.body, HasSubstr("conveyor_http_requests_total{code=\"503\",method=\"GET\",route=\"/readyz\"} 1"));
  EXPECT_THAT(r.body, HasSubstr("# TYPE conveyor_http_request_duration_seconds histogram"));
}

TEST_F(ServerTest, PathQueryAndHeaders) {
  auto r = http_request("GET", url("/v1/jobs/42?view=full"), "", {{"x-trace", "abc"}});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(json_of(r), nlohmann::json({{"id", "42"}, {"view", "full"}, {"trace", "abc"}}));
  // A literal segment beats a placeholder.
  r = http_request("GET", url("/v1/jobs/special"));
  EXPECT_EQ(json_of(r)["special"], true);
}

TEST_F(ServerTest, ErrorsAreProblemJsonAndServingContinues) {
  auto r = http_request("GET", url("/v1/jobs/404"));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.headers["content-type"], "application/problem+json");
  EXPECT_EQ(json_of(r)["detail"], "job 404 does not exist");
  EXPECT_EQ(json_of(r)["type"], "https://conveyor.dev/problems/not_found");

  r = http_request("POST", url("/v1/boom"), "{}");
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(r.headers["content-type"], "application/problem+json");
  EXPECT_EQ(r.body.find("secret internals"), std::string::npos);

  r = http_request("POST", url("/v1/jobs"), "{\"job_type\": ");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(json_of(r)["detail"].get<std::string>(), HasSubstr("malformed JSON"));

  r = http_request("GET", url("/no/such/route"));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.headers["content-type"], "application/problem+json");

  r = http_request("DELETE", url("/healthz"));
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.headers["allow"], "GET");
  EXPECT_EQ(r.headers["content-type"], "application/problem+json");

  r = http_request("POST", url("/v1/jobs"), "{\"job_type\":\"x\"}");
  EXPECT_EQ(r.status, 201);
  EXPECT_EQ(json_of(r)["got"]["job_type"], "x");

  EXPECT_EQ(http_request("GET", url("/healthz")).status, 200);
  EXPECT_THAT(registry_.render(),
              HasSubstr("conveyor_http_requests_total{code=\"404\",method=\"GET\",route=\"unmatched\"} 1"));
}

TEST_F(ServerTest, OversizedBodyIs413) {
  const std::string big = "\"" + std::string(4096, 'x') + "\"";
  auto r = http_request("POST", url("/v1/jobs"), big);
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.headers["content-type"], "application/problem+json");
  EXPECT_THAT(json_of(r)["detail"].get<std::string>(), HasSubstr("1024 bytes"));
  EXPECT_THAT(registry_.render(),
              HasSubstr("conveyor_http_requests_total{code=\"413\",method=\"POST\",route=\"unmatched\"} 1"));
  // Still serving.
  EXPECT_EQ(http_request("POST", url("/v1/jobs"), "[1]").status, 201);
}

TEST_F(ServerTest, StopClosesThePort) {
  const std::string health = url("/healthz");
  server_.stop();
  try {
    http_request("GET", health, "", {}, std::chrono::seconds(2));
    FAIL() << "request to a stopped server succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), errc::unavailable);
  }
  EXPECT_THROW(server_.start(), Error);
}

TEST(Server, RouteAfterStartIsRejected) {
  Server s("127.0.0.1", 0);
  s.start();
  EXPECT_THROW(s.route("GET", "/late", [](const Request&) { return Response{}; }), Error);
}

TEST(Server, BusyPortIsUnavailable) {
  Server first("127.0.0.1", 0);
  first.start();
  Server second("127.0.0.1", first.port());
  try {
    second.start();
    FAIL() << "second bind on the same port succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), errc::unavailable);
  }
}

TEST(Client, TimeoutIsReportedAsTimeout) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  Server s("127.0.0.1", 0);
  s.route("GET", "/slow", [released](const Request&) {
    released.wait_for(std::chrono::seconds(10));
    return Response::json({{"late", true}});
  });
  s.start();
  try {
    http_request("GET", "http://127.0.0.1:" + std::to_string(s.port()) + "/slow", "", {},
                 std::chrono::milliseconds(200));
    ADD_FAILURE() << "slow request did not time out";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), errc::timeout);
  }
  release.set_value();
}

TEST(Client, MalformedUrlIsBadInput) {
  try {
    http_request("GET", "ftp://user:pw@host/x");
    FAIL() << "ftp URL accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), errc::bad_input);
    EXPECT_EQ(std::string(e.what()).find("pw"), std::string::npos);
  }
}

}  // namespace
}  // namespace conveyor::http
