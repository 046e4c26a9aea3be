#pragma once
// Conveyor's error codes: one enum for the whole core, one category, and one
// exception type carrying a code and a message meant for an operator.
// Thread-safe: plain values.
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace conveyor {

enum class errc {
  ok = 0,
  bad_input,           // a request, file or argument is malformed; message names the field
  invalid_config,      // a configuration key is missing or invalid; message names the key
  not_found,           // the named thing does not exist
  conflict,            // unique violation, stale conditional update
  invalid_transition,  // the status machine refused a transition
  locked,              // migrations are locked, or another holder has a lock
  forbidden,           // the caller is known but may not do this (an API token's role)
  unavailable,         // database or broker unreachable, paused system
  timeout,             // a deadline passed
  internal,            // a bug or an impossible state
};

const std::error_category& conveyor_category() noexcept;
std::error_code make_error_code(errc e) noexcept;
// Short stable name of a code ("bad_input"), for logs and problem+json `type`.
const char* to_string(errc e) noexcept;

// The one exception type the core throws for expected failures.
class Error : public std::runtime_error {
 public:
  Error(errc code, const std::string& message) : std::runtime_error(message), code_(code) {}
  errc code() const noexcept { return code_; }

 private:
  errc code_;
};

// A bad_input error about one named field of a request, argument or row, so
// that whoever reports it can name the field (problem+json {"field": ...},
// a CLI flag).
class FieldError : public Error {
 public:
  FieldError(std::string field, const std::string& message)
      : Error(errc::bad_input, message), field_(std::move(field)) {}
  const std::string& field() const noexcept { return field_; }

 private:
  std::string field_;
};

// Well-formed input that names things that do not fit (an unknown job type,
// params against the type's schema, missing dependencies): the REST API
// answers 422, anything else that catches it as a FieldError 400. `problems`
// lists each finding when there are several.
class UnprocessableError : public FieldError {
 public:
  UnprocessableError(std::string field, const std::string& message, std::vector<std::string> problems = {})
      : FieldError(std::move(field), message), problems_(std::move(problems)) {}
  const std::vector<std::string>& problems() const noexcept { return problems_; }

 private:
  std::vector<std::string> problems_;
};

// Throws `e` again, as its own class (an UnprocessableError stays one),
// about a field of an item: field, message and each of an
// UnprocessableError's problems prefixed with `prefix` ("jobs[3]." makes
// "params: ..." "jobs[3].params: ...").
[[noreturn]] void rethrow_within(const std::string& prefix, const FieldError& e);

}  // namespace conveyor

template <>
struct std::is_error_code_enum<conveyor::errc> : std::true_type {};
