#pragma once
// The one place that maps errors to HTTP: RFC 9457 problem details
// (application/problem+json) from conveyor::errc codes and JSON errors.
//
//   bad_input, invalid_config -> 400     not_found -> 404
//   conflict, invalid_transition -> 409  locked -> 423
//   unavailable -> 503                    timeout -> 504
//   nlohmann::json parse errors -> 400 "malformed JSON: ..."
//   anything else -> 500 with a generic detail (internals are logged, not sent)
#include <exception>
#include <string>

#include "conveyor/error/error.hpp"
#include "conveyor/http/server.hpp"

namespace conveyor::http {

// A bad_input error about one field of a request, so the problem names it
// ({"field": "priority"}). Throw it from handlers and request parsers. It is
// conveyor::FieldError (error module), so the model can throw it too.
using FieldError = conveyor::FieldError;

// {"type":"https://conveyor.dev/problems/<name>","title","status","detail","field"?}
// where <name> is the errc name for the status (bad_input, not_found...).
Response problem(int status, std::string title, std::string detail, std::string field = "");
// Same with an explicit errc for the type URI.
Response problem(errc code, int status, std::string title, std::string detail, std::string field = "");
Response problem_from(const std::exception& error);

int status_for(errc code) noexcept;
// "Not Found" for 404 and so on; "Error" for codes we do not use.
const char* reason_phrase(int status) noexcept;

}  // namespace conveyor::http
