#pragma once
// GET /openapi.json: the OpenAPI 3.1 document of Conveyor's REST API,
// deploy/api/openapi.json, built into the library (cmake/EmbedFile.cmake),
// so every service serves the document of the build it runs. Open to
// everyone (auth::required_role): it describes the API and holds no secret.
// tests/integration/openapi/openapi_test.cpp proves that every route a
// service registers is in it and that every documented route answers as
// documented. Thread-safe: constant data.
#include <string>
#include <string_view>

#include "conveyor/http/server.hpp"

namespace conveyor::http {

// The document exactly as committed.
std::string_view openapi_document();

// Adds GET /openapi.json: the document with info.version set to `version`
// (the running build's). Called by add_admin_routes.
void add_openapi_route(Server& server, const std::string& version);

}  // namespace conveyor::http
