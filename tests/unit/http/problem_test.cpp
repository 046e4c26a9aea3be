#include "conveyor/http/problem.hpp"

#include <ostream>
#include <string>

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

namespace conveyor::http {
namespace {

nlohmann::json body_of(const Response& r) { return nlohmann::json::parse(r.body); }

struct Case {
  errc code;
  int status;
  const char* type;
};

// gtest prints the parameter into the test's listing: the type, not the
// struct's bytes (a pointer among them changes from run to run).
void PrintTo(const Case& c, std::ostream* os) { *os << c.type; }

class ProblemMapping : public ::testing::TestWithParam<Case> {};

TEST_P(ProblemMapping, ErrcMapsToStatusAndType) {
  const Case c = GetParam();
  const Response r = problem_from(Error(c.code, "the detail"));
  EXPECT_EQ(r.status, c.status);
  EXPECT_EQ(r.content_type, "application/problem+json");
  const auto body = body_of(r);
  EXPECT_EQ(body["status"], c.status);
  EXPECT_EQ(body["type"], std::string("https://conveyor.dev/problems/") + c.type);
  EXPECT_EQ(body["title"], reason_phrase(c.status));
  EXPECT_FALSE(body.contains("field"));
  if (c.status != 500) {
    EXPECT_EQ(body["detail"], "the detail");
  } else {
    // Internals stay in the log.
    EXPECT_NE(body["detail"], "the detail");
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllCodes, ProblemMapping,
    ::testing::Values(Case{errc::bad_input, 400, "bad_input"}, Case{errc::invalid_config, 400, "invalid_config"},
                      Case{errc::not_found, 404, "not_found"}, Case{errc::conflict, 409, "conflict"},
                      Case{errc::invalid_transition, 409, "invalid_transition"}, Case{errc::locked, 423, "locked"},
                      Case{errc::forbidden, 403, "forbidden"}, Case{errc::unavailable, 503, "unavailable"},
                      Case{errc::timeout, 504, "timeout"}, Case{errc::internal, 500, "internal"}),
    // Named by the problem type: stable test names (the default prints the
    // bytes of the struct, a pointer included, which change from run to run).
    [](const ::testing::TestParamInfo<Case>& p) { return std::string(p.param.type); });

TEST(Problem, FieldErrorNamesTheField) {
  const Response r = problem_from(FieldError("priority", "priority must be an integer"));
  EXPECT_EQ(r.status, 400);
  const auto body = body_of(r);
  EXPECT_EQ(body["field"], "priority");
  EXPECT_EQ(body["detail"], "priority must be an integer");
  EXPECT_EQ(body["type"], "https://conveyor.dev/problems/bad_input");
}

TEST(Problem, MalformedJsonIs400) {
  try {
    const auto parsed = nlohmann::json::parse("{\"a\":");
    FAIL() << parsed.dump() << "parse did not throw";
  } catch (const nlohmann::json::exception& e) {
    const Response r = problem_from(e);
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(body_of(r)["detail"].get<std::string>().rfind("malformed JSON: ", 0), 0u);
  }
}

TEST(Problem, WrongJsonTypeIs400) {
  try {
    const int value = nlohmann::json::parse("{\"a\":\"x\"}")["a"].get<int>();
    FAIL() << value << "get did not throw";
  } catch (const nlohmann::json::exception& e) {
    EXPECT_EQ(problem_from(e).status, 400);
  }
}

TEST(Problem, UnknownExceptionIsGeneric500) {
  const Response r = problem_from(std::runtime_error("pq: password authentication failed"));
  EXPECT_EQ(r.status, 500);
  const auto body = body_of(r);
  EXPECT_EQ(body["type"], "https://conveyor.dev/problems/internal");
  EXPECT_EQ(body["detail"].get<std::string>().find("password"), std::string::npos);
}

TEST(Problem, ExplicitProblemBody) {
  const Response r = problem(413, "Payload Too Large", "too big \"really\"", "body");
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.body, R"({"type":"https://conveyor.dev/problems/payload_too_large","title":"Payload Too Large",)"
                    R"("status":413,"detail":"too big \"really\"","field":"body"})");
}

}  // namespace
}  // namespace conveyor::http
