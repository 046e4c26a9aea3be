// The OpenAPI document (deploy/api/openapi.json) against the real services,
// both ways (issue 15, item 4):
//   - every route a service registers is in the document (the service logs
//     its routes at start-up: http::Server::routes()), and every route the
//     document gives a service is registered;
//   - every documented route answers as documented: called with a token of
//     its x-conveyor-role, the status is one the document lists, the
//     Content-Type one it lists, and a JSON body fits the documented schema;
//     without a token it is 401, with a token below its role 403.
// The services: conveyor-creation, conveyor-monitor and a stage service
// (conveyor-configuration), as processes of a Stack.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "conveyor/auth/auth.hpp"
#include "conveyor/http/client.hpp"
#include "conveyor/testing/stack.hpp"
#include "conveyor/testing/testing.hpp"
#include "schema_subset.hpp"

namespace {

namespace ct = conveyor::testing;
using conveyor::http::ClientResponse;
using conveyor::testing::openapi::SchemaCheck;
using nlohmann::json;

// The Stack's processes this test starts; the document names services by
// their /version name (x-conveyor-services).
const std::vector<std::string> kProcesses = {"creation", "configuration", "monitor"};
const std::set<std::string> kMethods = {"get", "put", "post", "delete", "patch", "head", "options"};
const std::set<std::string> kRoles = {"public", "reader", "submitter", "operator"};

json load_document() {
  std::ifstream in(CONVEYOR_OPENAPI_PATH);
  if (!in) throw std::runtime_error("cannot read " + std::string(CONVEYOR_OPENAPI_PATH));
  return json::parse(in);
}

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string join(const std::set<std::string>& items, const std::string& separator = "\n  ") {
  std::string out;
  for (const auto& s : items) out += separator + s;
  return out;
}

// "GET /v1/jobs/{id}" for each operation of the document that `service` serves.
std::set<std::string> documented_routes(const json& doc, const std::string& service) {
  std::set<std::string> out;
  for (const auto& [path, item] : doc.at("paths").items()) {
    const json services = item.value("x-conveyor-services", json::array());
    const bool served = std::find(services.begin(), services.end(), "*") != services.end() ||
                        std::find(services.begin(), services.end(), service) != services.end();
    if (!served) continue;
    for (const auto& [method, op] : item.items()) {
      if (kMethods.contains(method)) out.insert(upper(method) + " " + path);
    }
  }
  return out;
}

// The routes a service logged at start-up: http::Server::start() writes
// "routes: GET /healthz, GET /readyz, ..." (the Stack's logs are JSON lines).
std::set<std::string> registered_routes(const std::filesystem::path& log) {
  std::ifstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    const json record = json::parse(line, nullptr, false);
    if (record.is_discarded() || !record.contains("msg")) continue;
    const std::string msg = record["msg"].get<std::string>();
    if (msg.rfind("routes: ", 0) != 0) continue;
    std::set<std::string> routes;
    std::stringstream list(msg.substr(8));
    std::string route;
    while (std::getline(list, route, ',')) routes.insert(route.substr(route.find_first_not_of(' ')));
    return routes;
  }
  return {};
}

// The role auth::required_role gives a route, as x-conveyor-role spells it.
// The console's routes are on the monitor, the one service with a login.
std::string policy_role(const std::string& method, const std::string& path, bool console) {
  const auto role = conveyor::auth::required_role(upper(method), path, /*metrics_open=*/true, console);
  return role ? std::string(conveyor::auth::to_string(*role)) : "public";
}

bool serves_console(const json& path_item) {
  const json services = path_item.value("x-conveyor-services", json::array());
  return std::find(services.begin(), services.end(), "conveyor-monitor") != services.end();
}

// ---------------------------------------------------------------- the document alone

TEST(OpenApiDocument, IsAnOpenApi31DocumentWhoseSchemasAndRolesAreChecked) {
  const json doc = load_document();
  ASSERT_EQ(doc.value("openapi", ""), "3.1.0");
  ASSERT_TRUE(doc.contains("info") && doc["info"].contains("title") && doc["info"].contains("version"));
  ASSERT_TRUE(doc.contains("paths") && !doc["paths"].empty());
  const SchemaCheck check(doc);
  std::set<std::string> problems;
  auto add = [&](const std::vector<std::string>& found) { problems.insert(found.begin(), found.end()); };
  for (const auto& [name, schema] : doc.at("components").at("schemas").items()) {
    add(check.check_schema(schema, "#/components/schemas/" + name));
  }
  std::set<std::string> operation_ids;
  for (const auto& [path, item] : doc.at("paths").items()) {
    if (!item.contains("x-conveyor-services")) problems.insert(path + ": no x-conveyor-services");
    for (const auto& [method, op] : item.items()) {
      if (!kMethods.contains(method)) continue;
      const std::string at = upper(method) + " " + path;
      if (!operation_ids.insert(op.value("operationId", "")).second)
        problems.insert(at + ": operationId missing or repeated");
      const std::string role = op.value("x-conveyor-role", "");
      if (!kRoles.contains(role))
        problems.insert(at + ": x-conveyor-role '" + role + "' is not one of" + join(kRoles, " "));
      const std::string policy = policy_role(method, path, serves_console(item));
      if (role != policy) {
        problems.insert(at + ": x-conveyor-role is " + role + " but auth::required_role says " + policy);
      }
      if (role == "public" && op.value("security", json(nullptr)) != json::array()) {
        problems.insert(at + ": a public route must say security: []");
      }
      for (const auto& [status, response] : op.at("responses").items()) {
        const json& r = response.contains("$ref") ? check.resolve(response["$ref"]) : response;
        const json contents = r.value("content", json::object());
        for (const auto& [media, content] : contents.items()) {
          if (content.contains("schema")) add(check.check_schema(content["schema"], at + " " + status + " " + media));
        }
      }
      // A request body's example is what the answering test sends: it must fit.
      if (op.contains("requestBody")) {
        const json& media = op["requestBody"].at("content").at("application/json");
        if (!media.contains("example")) problems.insert(at + ": the request body has no example");
        else add(check.validate(media.at("schema"), media["example"], at + " request example"));
      }
      // Every {name} of the path is a declared path parameter.
      std::set<std::string> declared;
      for (json p : op.value("parameters", json::array())) {
        if (p.contains("$ref")) p = check.resolve(p["$ref"]);
        if (p.value("in", "") == "path") declared.insert(p.value("name", ""));
      }
      const std::regex placeholder("\\{([^}]+)\\}");
      for (auto m = std::sregex_iterator(path.begin(), path.end(), placeholder); m != std::sregex_iterator(); ++m) {
        if (!declared.contains((*m)[1].str()))
          problems.insert(at + ": path parameter {" + (*m)[1].str() + "} not declared");
      }
    }
  }
  EXPECT_TRUE(problems.empty()) << "deploy/api/openapi.json:" << join(problems);
}

// ---------------------------------------------------------------- against the services

class OpenApiServices : public ::testing::Test {
 protected:
  static ct::Stack::Options stack_options() {
    ct::Stack::Options o;
    o.workers = 0;
    o.services = kProcesses;
    o.env = {{"CONVEYOR_LOG_FORMAT", "json"}};
    return o;
  }

  void SetUp() override {
    doc_ = load_document();
    for (const auto& name : kProcesses) {
      const ClientResponse r = call(name, "GET", "/version", "", "public");
      ASSERT_EQ(r.status, 200) << name << ": " << r.body;
      service_of_[name] = json::parse(r.body).at("service").get<std::string>();
    }
    tokens_["reader"] = ct::create_api_token(stack_.db().url(), "openapi-reader", "reader");
    tokens_["submitter"] = ct::create_api_token(stack_.db().url(), "openapi-submitter", "submitter");
    tokens_["operator"] = stack_.api_token();
  }

  void TearDown() override {
    if (HasFailure()) std::cerr << stack_.logs_tail(15);
  }

  // A request to a process of the stack with a token of `role` ("public": none).
  ClientResponse call(const std::string& process, const std::string& method, const std::string& target,
                      const std::string& body, const std::string& role) {
    std::map<std::string, std::string> headers;
    if (role != "public") headers = ct::bearer(tokens_.at(role), !body.empty());
    else if (!body.empty()) headers["Content-Type"] = "application/json";
    return conveyor::http::http_request(method, "http://127.0.0.1:" + std::to_string(stack_.port(process)) + target,
                                        body, headers);
  }

  // The process that serves a documented path ("*": every one).
  std::vector<std::string> processes_for(const json& path_item) const {
    std::vector<std::string> out;
    const json services = path_item.at("x-conveyor-services");
    for (const auto& name : kProcesses) {
      const bool every = std::find(services.begin(), services.end(), "*") != services.end();
      if (every || std::find(services.begin(), services.end(), service_of_.at(name)) != services.end()) {
        out.push_back(name);
      }
    }
    return out;
  }

  ct::Stack stack_{stack_options()};
  json doc_;
  std::map<std::string, std::string> service_of_;  // process -> service name
  std::map<std::string, std::string> tokens_;      // role -> token
};

TEST_F(OpenApiServices, EveryRegisteredRouteIsDocumentedAndEveryDocumentedRouteIsRegistered) {
  for (const auto& name : kProcesses) {
    const std::string service = service_of_.at(name);
    const std::set<std::string> registered = registered_routes(stack_.data_dir() / (name + ".log"));
    ASSERT_FALSE(registered.empty()) << service << " logged no 'routes: ...' line at start-up";
    const std::set<std::string> documented = documented_routes(doc_, service);
    std::set<std::string> undocumented, unserved;
    std::set_difference(registered.begin(), registered.end(), documented.begin(), documented.end(),
                        std::inserter(undocumented, undocumented.end()));
    std::set_difference(documented.begin(), documented.end(), registered.begin(), registered.end(),
                        std::inserter(unserved, unserved.end()));
    EXPECT_TRUE(undocumented.empty()) << service
                                      << " serves routes that deploy/api/openapi.json does not document (add them; "
                                      << "deploy/api/README.md says how):" << join(undocumented);
    EXPECT_TRUE(unserved.empty()) << "deploy/api/openapi.json gives " << service
                                  << " routes it does not serve (x-conveyor-services):" << join(unserved);
  }
}

TEST_F(OpenApiServices, EveryServiceServesTheDocumentWithItsVersion) {
  for (const auto& name : kProcesses) {
    const ClientResponse r = call(name, "GET", "/openapi.json", "", "public");
    ASSERT_EQ(r.status, 200) << name << ": " << r.body;
    EXPECT_EQ(r.headers.at("content-type").substr(0, 16), "application/json") << name;
    json served = json::parse(r.body);
    const json version = json::parse(call(name, "GET", "/version", "", "public").body);
    EXPECT_EQ(served["info"]["version"], version["version"]) << name;
    served["info"]["version"] = doc_["info"]["version"];
    const json differences = json::diff(doc_, served);
    EXPECT_TRUE(differences.empty()) << name << " serves another document than deploy/api/openapi.json "
                                     << "(rebuild?); JSON patch from the file to it, first 5 changes: "
                                     << json(std::vector<json>(
                                                 differences.begin(),
                                                 differences.begin() + std::min<std::ptrdiff_t>(5, differences.size())))
                                            .dump();
  }
}

// ---------------------------------------------------------------- every documented route answers

// One call's answer checked against the operation's documented responses.
std::vector<std::string> check_answer(const SchemaCheck& check, const json& op, const std::string& what,
                                      const ClientResponse& r) {
  const std::string status = std::to_string(r.status);
  const json& responses = op.at("responses");
  if (!responses.contains(status)) {
    return {what + ": answered " + status + ", which is not among the documented responses: " + r.body.substr(0, 300)};
  }
  const json& documented =
      responses[status].contains("$ref") ? check.resolve(responses[status]["$ref"]) : responses[status];
  if (!documented.contains("content")) return {};
  const auto type_it = r.headers.find("content-type");
  const std::string type = type_it == r.headers.end() ? "" : type_it->second.substr(0, type_it->second.find(';'));
  if (!documented["content"].contains(type)) {
    return {what + ": answered " + status + " as '" + type + "', not a documented content type of it"};
  }
  const json& media = documented["content"][type];
  const bool is_json = type == "application/json" || type.ends_with("+json");
  if (!is_json || !media.contains("schema")) return {};
  const json body = json::parse(r.body, nullptr, false);
  if (body.is_discarded()) return {what + ": answered " + status + " with a body that is not JSON"};
  return check.validate(media["schema"], body, what + " " + status + " $");
}

// The role one step below (what must get 403); "" for public and reader.
std::string role_below(const std::string& role) {
  if (role == "submitter" || role == "operator") return "reader";
  return "";
}

TEST_F(OpenApiServices, EveryDocumentedRouteAnswersAsDocumented) {
  const SchemaCheck check(doc_);
  // Path parameters: a job the submitter owns (cancel and retry check
  // ownership); the others take the document's example.
  const ClientResponse submitted =
      call("creation", "POST", "/v1/jobs", R"({"job_type": "sleep", "params": {"seconds": 0}})", "submitter");
  ASSERT_EQ(submitted.status, 201) << submitted.body;
  const std::map<std::string, std::string> path_values = {{"id", json::parse(submitted.body).at("id").dump()}};
  // Bodies: the document's example, except where it cannot hold a secret.
  const std::map<std::string, json> bodies = {{"POST /login", {{"token", tokens_.at("reader")}}}};

  std::vector<std::string> problems;
  int calls = 0;
  for (const auto& [path, item] : doc_.at("paths").items()) {
    const std::vector<std::string> processes = processes_for(item);
    if (processes.empty()) problems.push_back(path + ": served by none of the services this test starts");
    for (const auto& [method, op] : item.items()) {
      if (!kMethods.contains(method)) continue;
      const std::string route = upper(method) + " " + path;
      // The target: {name} replaced by a known value or the parameter's example.
      std::string target = path;
      for (json p : op.value("parameters", json::array())) {
        if (p.contains("$ref")) p = check.resolve(p["$ref"]);
        if (p.value("in", "") != "path") continue;
        const std::string name = p.at("name");
        const auto known = path_values.find(name);
        const std::string value =
            known != path_values.end() ? known->second
            : p.contains("example") ? (p["example"].is_string() ? p["example"].get<std::string>() : p["example"].dump())
                                    : "";
        if (value.empty()) problems.push_back(route + ": give path parameter {" + name + "} an example");
        target.replace(target.find("{" + name + "}"), name.size() + 2, value);
      }
      std::string body;
      if (bodies.contains(route)) body = bodies.at(route).dump();
      else if (op.contains("requestBody"))
        body = op["requestBody"]["content"]["application/json"].value("example", json::object()).dump();
      const std::string role = op.at("x-conveyor-role");
      for (const auto& process : processes) {
        const std::string at = route + " on " + service_of_.at(process);
        // Refusals first: they must not change anything (the guard answers before the handler).
        if (role != "public") {
          const ClientResponse anonymous = call(process, upper(method), target, body, "public");
          if (anonymous.status != 401)
            problems.push_back(at + " without a token: " + std::to_string(anonymous.status) + ", not 401");
          for (auto& p : check_answer(check, op, at + " without a token", anonymous)) problems.push_back(p);
          if (const std::string below = role_below(role); !below.empty()) {
            const ClientResponse refused = call(process, upper(method), target, body, below);
            if (refused.status != 403)
              problems.push_back(at + " as " + below + ": " + std::to_string(refused.status) + ", not 403");
            for (auto& p : check_answer(check, op, at + " as " + below, refused)) problems.push_back(p);
          }
        }
        const ClientResponse answer = call(process, upper(method), target, body, role == "public" ? "public" : role);
        ++calls;
        if (answer.status >= 300 && answer.status != 303) {
          problems.push_back(at + " as " + role + ": " + std::to_string(answer.status) + " " +
                             answer.body.substr(0, 300));
        }
        for (auto& p : check_answer(check, op, at + " as " + role, answer)) problems.push_back(p);
      }
    }
  }
  EXPECT_GE(calls, 20);
  std::string all;
  for (const auto& p : problems) all += "\n  " + p;
  EXPECT_TRUE(problems.empty()) << problems.size() << " problem(s):" << all;
}

// The documented query parameters are accepted: each route called with all
// of them set to a documented value (the first of an enum, the default or
// minimum of an integer, the example or "x" of a string).
TEST_F(OpenApiServices, DocumentedQueryParametersAreAccepted) {
  const SchemaCheck check(doc_);
  std::vector<std::string> problems;
  for (const auto& [path, item] : doc_.at("paths").items()) {
    for (const auto& [method, op] : item.items()) {
      if (!kMethods.contains(method) || method != "get" || path.find('{') != std::string::npos) continue;
      std::string query;
      for (json p : op.value("parameters", json::array())) {
        if (p.contains("$ref")) p = check.resolve(p["$ref"]);
        if (p.value("in", "") != "query") continue;
        json schema = p.at("schema");
        if (schema.contains("$ref")) schema = check.resolve(schema["$ref"]);
        json value = p.contains("example")        ? p["example"]
                     : schema.contains("enum")    ? schema["enum"][0]
                     : schema.contains("default") ? schema["default"]
                     : schema.contains("minimum") ? schema["minimum"]
                                                  : json("x");
        query += (query.empty() ? "?" : "&") + p.at("name").get<std::string>() + "=" +
                 (value.is_string() ? value.get<std::string>() : value.dump());
      }
      if (query.empty()) continue;
      for (const auto& process : processes_for(item)) {
        const std::string role = op.at("x-conveyor-role");
        const ClientResponse r = call(process, "GET", path + query, "", role);
        const std::string at = "GET " + path + query + " on " + service_of_.at(process);
        if (r.status != 200) problems.push_back(at + ": " + std::to_string(r.status) + " " + r.body.substr(0, 300));
        for (auto& p : check_answer(check, op, at, r)) problems.push_back(p);
      }
    }
  }
  std::string all;
  for (const auto& p : problems) all += "\n  " + p;
  EXPECT_TRUE(problems.empty()) << all;
}

}  // namespace
