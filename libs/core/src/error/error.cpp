#include "conveyor/error/error.hpp"

namespace conveyor {
namespace {

// Stateless, so one static instance serves every thread.
class ConveyorCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "conveyor"; }
  std::string message(int value) const override { return to_string(static_cast<errc>(value)); }
};

}  // namespace

const std::error_category& conveyor_category() noexcept {
  static const ConveyorCategory category;
  return category;
}

std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), conveyor_category()}; }

const char* to_string(errc e) noexcept {
  switch (e) {
    case errc::ok:
      return "ok";
    case errc::bad_input:
      return "bad_input";
    case errc::invalid_config:
      return "invalid_config";
    case errc::not_found:
      return "not_found";
    case errc::conflict:
      return "conflict";
    case errc::invalid_transition:
      return "invalid_transition";
    case errc::locked:
      return "locked";
    case errc::unavailable:
      return "unavailable";
    case errc::forbidden:
      return "forbidden";
    case errc::timeout:
      return "timeout";
    case errc::internal:
      return "internal";
  }
  // A value outside the enum (cast from an int): name it rather than crash.
  return "unknown";
}

void rethrow_within(const std::string& prefix, const FieldError& e) {
  if (const auto* u = dynamic_cast<const UnprocessableError*>(&e)) {
    std::vector<std::string> problems;
    problems.reserve(u->problems().size());
    for (const std::string& p : u->problems()) problems.push_back(prefix + p);
    throw UnprocessableError(prefix + u->field(), prefix + u->what(), std::move(problems));
  }
  throw FieldError(prefix + e.field(), prefix + e.what());
}

}  // namespace conveyor
