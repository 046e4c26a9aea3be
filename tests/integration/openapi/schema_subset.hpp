#pragma once
// A JSON Schema (2020-12, as OpenAPI 3.1 uses it) check of the subset the
// OpenAPI document uses, for tests/integration/openapi: no validator library
// is a dependency of the project for this one test.
//
// Keywords checked: type (a name or a list), enum, const, properties,
// required, additionalProperties (bool or schema), items, allOf, minimum,
// maximum, minLength, maxLength, minItems, maxItems, $ref ("#/..." into the document).
// Annotations are ignored: description, format, examples, example, default,
// title. Any other keyword is an error of the document (check_schema), so
// the document cannot use a keyword this check would silently skip.
// Thread-safe: holds a const reference to the document.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace conveyor::testing::openapi {

class SchemaCheck {
 public:
  // `root` is the OpenAPI document; $refs resolve in it. It must outlive this.
  explicit SchemaCheck(const nlohmann::json& root) : root_(root) {}

  // What in `value` does not fit `schema`, each "<where>: <what>"
  // ("$.items[0].status: expected string, got null"); empty when it fits.
  std::vector<std::string> validate(const nlohmann::json& schema, const nlohmann::json& value,
                                    const std::string& where = "$") const;

  // What is wrong with `schema` itself: unknown keywords, $refs that do not
  // resolve, keywords of the wrong type. `where` names it in the messages.
  std::vector<std::string> check_schema(const nlohmann::json& schema, const std::string& where) const;

  // The schema a "#/components/..." reference points at; throws
  // std::runtime_error naming it when it does not resolve.
  const nlohmann::json& resolve(const std::string& ref) const;

 private:
  void validate(const nlohmann::json& schema, const nlohmann::json& value, const std::string& where, int depth,
                std::vector<std::string>& problems) const;
  void validate_object(const nlohmann::json& schema, const nlohmann::json& value, const std::string& where, int depth,
                       std::vector<std::string>& problems) const;
  void check_schema(const nlohmann::json& schema, const std::string& where, int depth,
                    std::vector<std::string>& problems) const;
  const nlohmann::json& root_;
};

}  // namespace conveyor::testing::openapi
