#include "schema_subset.hpp"

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>

namespace conveyor::testing::openapi {
namespace {

using nlohmann::json;

// Deeper than any schema of the document: a $ref cycle, not a schema.
constexpr int kMaxDepth = 64;

const std::set<std::string>& known_keywords() {
  static const std::set<std::string> keywords = {
      "type",    "enum",    "const",     "properties", "required", "additionalProperties", "items",  "allOf",
      "minimum", "maximum", "minLength", "maxLength",  "$ref",     "description",          "format", "examples",
      "example", "default", "title",     "minItems",   "maxItems"};
  return keywords;
}

std::string type_of(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "boolean";
  if (v.is_number_integer()) return "integer";
  if (v.is_number()) return "number";
  if (v.is_string()) return "string";
  if (v.is_array()) return "array";
  return "object";
}

bool has_type(const json& v, const std::string& type) {
  if (type == "number") return v.is_number();
  if (type == "integer") {
    return v.is_number_integer() || (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>());
  }
  return type_of(v) == type;
}

bool fits_type(const json& schema, const json& v) {
  const json& t = schema.at("type");
  if (t.is_string()) return has_type(v, t.get<std::string>());
  return std::any_of(t.begin(), t.end(), [&](const json& one) { return has_type(v, one.get<std::string>()); });
}

void check_bounds(const json& schema, const json& value, const std::string& where, std::vector<std::string>& problems) {
  if (value.is_number()) {
    const double v = value.get<double>();
    if (schema.contains("minimum") && v < schema["minimum"].get<double>()) {
      problems.push_back(where + ": " + value.dump() + " is below the minimum " + schema["minimum"].dump());
    }
    if (schema.contains("maximum") && v > schema["maximum"].get<double>()) {
      problems.push_back(where + ": " + value.dump() + " is above the maximum " + schema["maximum"].dump());
    }
  }
  if (value.is_array()) {
    const auto n = static_cast<std::int64_t>(value.size());
    if (schema.contains("minItems") && n < schema["minItems"].get<std::int64_t>()) {
      problems.push_back(where + ": fewer items than minItems " + schema["minItems"].dump());
    }
    if (schema.contains("maxItems") && n > schema["maxItems"].get<std::int64_t>()) {
      problems.push_back(where + ": more items than maxItems " + schema["maxItems"].dump());
    }
  }
  if (value.is_string()) {
    const auto n = static_cast<std::int64_t>(value.get<std::string>().size());
    if (schema.contains("minLength") && n < schema["minLength"].get<std::int64_t>()) {
      problems.push_back(where + ": shorter than minLength " + schema["minLength"].dump());
    }
    if (schema.contains("maxLength") && n > schema["maxLength"].get<std::int64_t>()) {
      problems.push_back(where + ": longer than maxLength " + schema["maxLength"].dump());
    }
  }
}

}  // namespace

const json& SchemaCheck::resolve(const std::string& ref) const {
  if (ref.rfind("#/", 0) != 0) throw std::runtime_error("$ref '" + ref + "' does not point into the document");
  const json::json_pointer pointer(ref.substr(1));
  if (!root_.contains(pointer)) throw std::runtime_error("$ref '" + ref + "' does not resolve");
  return root_.at(pointer);
}

std::vector<std::string> SchemaCheck::validate(const json& schema, const json& value, const std::string& where) const {
  std::vector<std::string> problems;
  validate(schema, value, where, 0, problems);
  return problems;
}

void SchemaCheck::validate(const json& schema, const json& value, const std::string& where, int depth,
                           std::vector<std::string>& problems) const {
  if (depth > kMaxDepth) {
    problems.push_back(where + ": schema nested deeper than " + std::to_string(kMaxDepth) + " ($ref cycle?)");
    return;
  }
  if (schema.is_boolean()) {
    if (!schema.get<bool>()) problems.push_back(where + ": no value is allowed here");
    return;
  }
  if (schema.contains("$ref")) validate(resolve(schema["$ref"]), value, where, depth + 1, problems);
  if (schema.contains("allOf")) {
    for (const json& part : schema["allOf"]) validate(part, value, where, depth + 1, problems);
  }
  if (schema.contains("type") && !fits_type(schema, value)) {
    problems.push_back(where + ": expected " + schema["type"].dump() + ", got " + type_of(value));
    return;
  }
  if (schema.contains("enum") &&
      std::find(schema["enum"].begin(), schema["enum"].end(), value) == schema["enum"].end()) {
    problems.push_back(where + ": " + value.dump() + " is not one of " + schema["enum"].dump());
  }
  if (schema.contains("const") && schema["const"] != value) {
    problems.push_back(where + ": " + value.dump() + " is not " + schema["const"].dump());
  }
  check_bounds(schema, value, where, problems);
  if (value.is_array() && schema.contains("items")) {
    for (std::size_t i = 0; i < value.size(); ++i) {
      validate(schema["items"], value[i], where + "[" + std::to_string(i) + "]", depth + 1, problems);
    }
  }
  if (value.is_object()) validate_object(schema, value, where, depth, problems);
}

void SchemaCheck::validate_object(const json& schema, const json& value, const std::string& where, int depth,
                                  std::vector<std::string>& problems) const {
  static const json kNone = json::object();
  const json& properties = schema.contains("properties") ? schema["properties"] : kNone;
  for (const json& name : schema.value("required", json::array())) {
    if (!value.contains(name.get<std::string>())) {
      problems.push_back(where + ": the required member \"" + name.get<std::string>() + "\" is missing");
    }
  }
  for (const auto& [name, member] : value.items()) {
    const std::string at = where + "." + name;
    if (properties.contains(name)) {
      validate(properties[name], member, at, depth + 1, problems);
    } else if (schema.contains("additionalProperties")) {
      const json& extra = schema["additionalProperties"];
      if (extra.is_boolean() && !extra.get<bool>()) {
        problems.push_back(at + ": not in the documented schema (additionalProperties: false)");
      } else {
        validate(extra, member, at, depth + 1, problems);
      }
    }
  }
}

std::vector<std::string> SchemaCheck::check_schema(const json& schema, const std::string& where) const {
  std::vector<std::string> problems;
  check_schema(schema, where, 0, problems);
  return problems;
}

void SchemaCheck::check_schema(const json& schema, const std::string& where, int depth,
                               std::vector<std::string>& problems) const {
  if (depth > kMaxDepth || schema.is_boolean()) return;
  if (!schema.is_object()) {
    problems.push_back(where + ": a schema must be an object or a boolean");
    return;
  }
  for (const auto& [keyword, value] : schema.items()) {
    if (!known_keywords().contains(keyword)) {
      problems.push_back(where + ": keyword '" + keyword +
                         "' is not checked by the test's SchemaCheck "
                         "(tests/integration/openapi/schema_subset.hpp): use another or add it there");
    }
  }
  if (schema.contains("$ref")) {
    try {
      resolve(schema["$ref"].get<std::string>());
    } catch (const std::exception& e) {
      problems.push_back(where + ": " + e.what());
    }
  }
  if (schema.contains("properties")) {
    for (const auto& [name, sub] : schema["properties"].items()) {
      check_schema(sub, where + "/properties/" + name, depth + 1, problems);
    }
  }
  for (const char* key : {"items", "additionalProperties"}) {
    if (schema.contains(key)) check_schema(schema[key], where + "/" + key, depth + 1, problems);
  }
  if (schema.contains("allOf")) {
    for (std::size_t i = 0; i < schema["allOf"].size(); ++i) {
      check_schema(schema["allOf"][i], where + "/allOf/" + std::to_string(i), depth + 1, problems);
    }
  }
}

}  // namespace conveyor::testing::openapi
