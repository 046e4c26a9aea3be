#include "conveyor/http/problem.hpp"

#include <nlohmann/json.hpp>

#include "conveyor/logging/logging.hpp"

namespace conveyor::http {
namespace {

constexpr const char* kTypeBase = "https://conveyor.dev/problems/";

// The problem type name of a status we produce without an errc (routing,
// body limits) or for which the errc is implied.
std::string type_name_for(int status) {
  switch (status) {
    case 400:
      return "bad_input";
    case 401:
      return "unauthorized";
    case 403:
      return "forbidden";
    case 404:
      return "not_found";
    case 405:
      return "method_not_allowed";
    case 409:
      return "conflict";
    case 413:
      return "payload_too_large";
    case 423:
      return "locked";
    case 429:
      return "too_many_requests";
    case 503:
      return "unavailable";
    case 504:
      return "timeout";
    default:
      return status >= 500 ? "internal" : "http_" + std::to_string(status);
  }
}

Response make(const std::string& type, int status, std::string title, std::string detail, std::string field) {
  nlohmann::ordered_json body;
  body["type"] = kTypeBase + type;
  body["title"] = std::move(title);
  body["status"] = status;
  body["detail"] = std::move(detail);
  if (!field.empty()) body["field"] = std::move(field);
  Response response;
  response.status = status;
  response.content_type = "application/problem+json";
  response.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return response;
}

}  // namespace

int status_for(errc code) noexcept {
  switch (code) {
    case errc::bad_input:
    case errc::invalid_config:
      return 400;
    case errc::not_found:
      return 404;
    case errc::conflict:
    case errc::invalid_transition:
      return 409;
    case errc::locked:
      return 423;
    case errc::forbidden:
      return 403;
    case errc::unavailable:
      return 503;
    case errc::timeout:
      return 504;
    case errc::ok:
    case errc::internal:
      return 500;
  }
  return 500;
}

const char* reason_phrase(int status) noexcept {
  switch (status) {
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 409:
      return "Conflict";
    case 413:
      return "Payload Too Large";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Content";
    case 423:
      return "Locked";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Error";
  }
}

Response problem(int status, std::string title, std::string detail, std::string field) {
  return make(type_name_for(status), status, std::move(title), std::move(detail), std::move(field));
}

Response problem(errc code, int status, std::string title, std::string detail, std::string field) {
  return make(to_string(code), status, std::move(title), std::move(detail), std::move(field));
}

Response problem_from(const std::exception& error) {
  if (const auto* e = dynamic_cast<const Error*>(&error)) {
    const int status = status_for(e->code());
    if (status == 500) {
      logging::get("http")->error("internal error while serving a request: {}", logging::redact_url(e->what()));
      return problem(errc::internal, 500, reason_phrase(500), "the server failed to handle the request; see its log");
    }
    std::string field;
    if (const auto* f = dynamic_cast<const FieldError*>(e)) field = f->field();
    return problem(e->code(), status, reason_phrase(status), e->what(), std::move(field));
  }
  if (dynamic_cast<const nlohmann::json::parse_error*>(&error) != nullptr) {
    return problem(errc::bad_input, 400, reason_phrase(400), std::string("malformed JSON: ") + error.what());
  }
  // type_error / out_of_range come from reading a request body's fields
  // (a string where a number belongs, a missing member).
  if (dynamic_cast<const nlohmann::json::type_error*>(&error) != nullptr ||
      dynamic_cast<const nlohmann::json::out_of_range*>(&error) != nullptr) {
    return problem(errc::bad_input, 400, reason_phrase(400), std::string("invalid JSON document: ") + error.what());
  }
  logging::get("http")->error("unexpected exception while serving a request: {}", logging::redact_url(error.what()));
  return problem(errc::internal, 500, reason_phrase(500), "the server failed to handle the request; see its log");
}

}  // namespace conveyor::http
