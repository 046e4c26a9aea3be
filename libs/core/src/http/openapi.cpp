#include "conveyor/http/openapi.hpp"

#include <memory>

#include <nlohmann/json.hpp>

#include "conveyor/error/error.hpp"

namespace conveyor::http {

// Defined in the source cmake/EmbedFile.cmake generates from deploy/api/openapi.json.
namespace embedded {
std::string_view openapi_json();
}  // namespace embedded

std::string_view openapi_document() { return embedded::openapi_json(); }

void add_openapi_route(Server& server, const std::string& version) {
  // Rendered once: a malformed document stops the service at start-up (the
  // test of the document fails first), not at its first reader.
  nlohmann::ordered_json document;
  try {
    document = nlohmann::ordered_json::parse(openapi_document());
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(errc::internal,
                std::string("the built-in OpenAPI document (deploy/api/openapi.json) is not JSON: ") + e.what());
  }
  document["info"]["version"] = version;
  auto body = std::make_shared<const std::string>(document.dump(2));
  server.route("GET", "/openapi.json", [body](const Request&) {
    Response r = Response::text(*body, 200, "application/json");
    r.headers["Cache-Control"] = "no-cache";
    return r;
  });
}

}  // namespace conveyor::http
