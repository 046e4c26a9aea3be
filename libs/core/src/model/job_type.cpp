#include "conveyor/model/job_type.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <regex>
#include <set>
#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>

#include "conveyor/error/error.hpp"
#include "conveyor/model/schedule.hpp"

// Job types are operator-written data, so parsing is strict: every field is
// checked and an unknown field is an error (a typo such as "timout_s" would
// otherwise silently keep the default). Messages name the type and the field.
namespace conveyor::model {
namespace {

using json = nlohmann::json;

// Placeholders every command may use besides the type's parameters.
const std::set<std::string, std::less<>> kBuiltins = {"job_id", "attempt", "output_dir", "inputs"};

const std::vector<std::string> kFields = {
    "name",         "enabled",         "command",        "image",
    "runner",       "resources",       "network",        "timeout_s",
    "max_attempts", "retry_backoff_s", "priority",       "concurrency_limit",
    "pool",         "schedule",        "catchup_policy", "catchup_window_s",
    "triggers",     "sinks",           "params_schema",  "env",
    "description",
};

const std::set<std::string, std::less<>> kParamTypes = {"string", "integer", "number", "boolean", "array", "object"};

// Levenshtein distance, for "did you mean" on unknown fields.
std::size_t distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string suggestion(const std::string& unknown, const std::vector<std::string>& known) {
  std::string best;
  std::size_t best_d = 3;  // only near misses
  for (const auto& k : known) {
    const auto d = distance(unknown, k);
    if (d < best_d) {
      best_d = d;
      best = k;
    }
  }
  return best.empty() ? "" : " (did you mean '" + best + "'?)";
}

// j[key] when j is an object holding it, else `fallback` (json::value() trips -Wnull-dereference).
json member(const json& j, const char* key, json fallback) {
  if (!j.is_object()) return fallback;
  const auto it = j.find(key);
  return it == j.end() ? fallback : *it;
}

// Collects the context of one job type so each check can name it.
class Parser {
 public:
  explicit Parser(std::string type) : type_(std::move(type)) {}

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw Error(errc::bad_input, "job type '" + type_ + "': " + field + ": " + what);
  }

  int integer(const json& v, const std::string& field, long long min, const std::string& what) const {
    if (!v.is_number_integer()) fail(field, what);
    const auto n = v.get<long long>();
    if (n < min || n > std::numeric_limits<int>::max()) fail(field, what);
    return static_cast<int>(n);
  }
  std::string string(const json& v, const std::string& field) const {
    if (!v.is_string()) fail(field, "must be a string");
    return v.get<std::string>();
  }

 private:
  std::string type_;
};

const std::regex& name_re() {
  static const std::regex re("^[a-z][a-z0-9_-]{0,62}$");  // the CHECK of conveyor.job_type.name
  return re;
}

// Placeholder names used by one template argument; throws on malformed braces.
std::vector<std::string> placeholders(const std::string& arg, const std::function<void(const std::string&)>& bad) {
  std::vector<std::string> names;
  for (std::size_t i = 0; i < arg.size(); ++i) {
    if (arg[i] == '{') {
      if (i + 1 < arg.size() && arg[i + 1] == '{') {
        ++i;
        continue;
      }
      const auto close = arg.find('}', i + 1);
      if (close == std::string::npos) bad("unterminated '{' (write '{{' for a literal brace)");
      const std::string name = arg.substr(i + 1, close - i - 1);
      static const std::regex name_ok("^[A-Za-z_][A-Za-z0-9_]*$");
      if (!std::regex_match(name, name_ok)) bad("'{" + name + "}' is not a valid placeholder");
      names.push_back(name);
      i = close;
    } else if (arg[i] == '}') {
      if (i + 1 < arg.size() && arg[i + 1] == '}') {
        ++i;
        continue;
      }
      bad("unmatched '}' (write '}}' for a literal brace)");
    }
  }
  return names;
}

// Every keyword of JSON Schema draft 7 that valijson enforces, and the
// annotations it ignores; anything else is a typo (e.g. "patern") that would
// otherwise silently check nothing.
// clang-format off
const std::vector<std::string> kSchemaKeywords = {
    "type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf", "minLength", "maxLength", "pattern", "format", "items", "additionalItems",
    "minItems", "maxItems", "uniqueItems", "contains", "properties", "patternProperties",
    "additionalProperties", "required", "minProperties", "maxProperties", "propertyNames",
    "dependencies", "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "$ref",
    "definitions", "default", "examples", "description", "title", "$comment"};
// clang-format on

// valijson 1.0 checks only these formats; any other would be accepted unchecked.
const std::vector<std::string> kFormats = {"date", "time", "date-time"};

// `pattern` runs through std::regex, whose backtracking recurses per
// character of the pattern: a long one can exhaust the stack.
constexpr std::size_t kMaxPatternLength = 256;

void check_pattern(const Parser& p, const std::string& f, const json& v) {
  if (!v.is_string()) p.fail(f, "must be a string (a regular expression)");
  const auto& pattern = v.get_ref<const std::string&>();
  if (pattern.size() > kMaxPatternLength) {
    p.fail(f, "at most " + std::to_string(kMaxPatternLength) + " characters");
  }
  try {
    std::regex re(pattern);
  } catch (const std::regex_error& e) {
    p.fail(f, "not a valid regular expression (ECMAScript): " + std::string(e.what()));
  }
}

// libstdc++'s std::regex (valijson's only engine, for `pattern`,
// `patternProperties` and `format`) recurses once per character of the
// *input*: a 100,000-character string crashed the process. A value that a
// regular expression would read is therefore refused above this length
// before valijson sees it; a schema without such keywords takes any length.
constexpr std::size_t kMaxRegexInputLength = 4096;

// Whether any (sub)schema of `schema` runs a regular expression on values.
bool reads_with_regex(const json& schema) {
  if (schema.is_array()) {
    return std::any_of(schema.begin(), schema.end(), [](const json& s) { return reads_with_regex(s); });
  }
  if (!schema.is_object()) return false;
  for (const auto& [k, v] : schema.items()) {
    if (k == "pattern" || k == "patternProperties" || k == "format") return true;
    if (reads_with_regex(v)) return true;
  }
  return false;
}

// The first string value or object key below `value` longer than
// kMaxRegexInputLength, as a problem naming its path, or "".
std::string too_long_for_regex(const json& value, const std::string& path) {
  if (value.is_string()) {
    if (value.get_ref<const std::string&>().size() <= kMaxRegexInputLength) return "";
    return path + ": longer than " + std::to_string(kMaxRegexInputLength) +
           " bytes, the most a pattern or format is checked on";
  }
  if (value.is_object()) {
    for (const auto& [k, v] : value.items()) {
      if (k.size() > kMaxRegexInputLength) {
        return path + ": a key longer than " + std::to_string(kMaxRegexInputLength) + " bytes";
      }
      if (auto p = too_long_for_regex(v, path + "." + k); !p.empty()) return p;
    }
  }
  if (value.is_array()) {
    for (std::size_t i = 0; i < value.size(); ++i) {
      if (auto p = too_long_for_regex(value[i], path + "[" + std::to_string(i) + "]"); !p.empty()) return p;
    }
  }
  return "";
}

// The keywords of one (sub)schema, and the subschemas below it.
void check_subschema(const Parser& p, const std::string& f, const json& schema) {
  if (schema.is_boolean()) return;  // draft 7: true accepts anything, false nothing
  if (!schema.is_object()) p.fail(f, "must be a JSON Schema (an object)");
  for (const auto& [k, v] : schema.items()) {
    if (std::find(kSchemaKeywords.begin(), kSchemaKeywords.end(), k) == kSchemaKeywords.end()) {
      p.fail(f, "unsupported keyword '" + k + "'" + suggestion(k, kSchemaKeywords));
    }
  }
  if (schema.contains("pattern")) check_pattern(p, f + ".pattern", schema["pattern"]);
  if (schema.contains("format")) {
    const json& fm = schema["format"];
    if (!fm.is_string() || std::find(kFormats.begin(), kFormats.end(), fm.get<std::string>()) == kFormats.end()) {
      p.fail(f + ".format", "must be one of date, time, date-time (others are not checked)");
    }
  }
  for (const char* k :
       {"items", "additionalItems", "contains", "propertyNames", "not", "if", "then", "else", "additionalProperties"}) {
    if (!schema.contains(k)) continue;
    const json& sub = schema[k];
    if (sub.is_array() && std::string(k) == "items") {
      for (std::size_t i = 0; i < sub.size(); ++i) check_subschema(p, f + ".items[" + std::to_string(i) + "]", sub[i]);
    } else {
      check_subschema(p, f + "." + k, sub);
    }
  }
  for (const char* k : {"allOf", "anyOf", "oneOf"}) {
    if (!schema.contains(k)) continue;
    if (!schema[k].is_array() || schema[k].empty()) p.fail(f + "." + k, "must be a non-empty array of schemas");
    for (std::size_t i = 0; i < schema[k].size(); ++i) {
      check_subschema(p, f + "." + k + "[" + std::to_string(i) + "]", schema[k][i]);
    }
  }
  for (const char* k : {"properties", "patternProperties", "definitions"}) {
    if (!schema.contains(k)) continue;
    if (!schema[k].is_object()) p.fail(f + "." + k, "must be an object of schemas");
    for (const auto& [name, sub] : schema[k].items()) {
      if (std::string(k) == "patternProperties") check_pattern(p, f + "." + k + "." + name, name);
      check_subschema(p, f + "." + k + "." + name, sub);
    }
  }
}

// The whole schema as valijson reads it, or the reason it cannot.
std::string compile_error(const json& schema) {
  try {
    valijson::Schema compiled;
    valijson::SchemaParser parser;
    valijson::adapters::NlohmannJsonAdapter adapter(schema);
    parser.populateSchema(adapter, compiled);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

std::vector<std::string> schema_problems(const json& schema, const json& value);

// One parameter of params_schema.properties (`pf` names it): a name that can
// be a placeholder, a type, and the keywords the project checks itself.
void check_param_schema(const Parser& p, const std::string& pf, const std::string& name, const json& prop) {
  if (kBuiltins.count(name)) p.fail(pf, "'" + name + "' is a built-in placeholder and cannot be a parameter");
  static const std::regex name_ok("^[A-Za-z_][A-Za-z0-9_]*$");
  if (!std::regex_match(name, name_ok)) p.fail(pf, "a parameter name must match [A-Za-z_][A-Za-z0-9_]*");
  if (!prop.is_object()) p.fail(pf, "must be an object");
  if (!prop.contains("type")) p.fail(pf + ".type", "required");
  if (!prop["type"].is_string() || !kParamTypes.count(prop["type"].get<std::string>())) {
    p.fail(pf + ".type", "must be one of string, integer, number, boolean, array, object");
  }
  if (prop.contains("enum") && (!prop["enum"].is_array() || prop["enum"].empty())) {
    p.fail(pf + ".enum", "must be a non-empty array");
  }
  for (const char* k : {"minimum", "maximum"}) {
    if (prop.contains(k) && !prop[k].is_number()) p.fail(pf + "." + k, "must be a number");
  }
  for (const char* k : {"minLength", "maxLength"}) {
    if (prop.contains(k) && !(prop[k].is_number_unsigned() || (prop[k].is_number_integer() && prop[k] >= 0))) {
      p.fail(pf + "." + k, "must be a non-negative integer");
    }
  }
  check_subschema(p, pf, prop);
}

void check_params_schema(const Parser& p, const json& schema) {
  const std::string f = "params_schema";
  if (!schema.is_object()) p.fail(f, "must be an object");
  if (schema.empty()) return;  // no schema: any params object
  // The top level stays the project's own: an object of named parameters
  // (they become command placeholders); below each parameter, JSON Schema.
  static const std::vector<std::string> top = {"type",        "properties", "required",    "additionalProperties",
                                               "description", "title",      "definitions", "$comment"};
  for (const auto& [k, v] : schema.items()) {
    if (std::find(top.begin(), top.end(), k) == top.end()) {
      p.fail(f, "unsupported keyword '" + k + "'" + suggestion(k, top));
    }
  }
  if (schema.contains("type") && schema["type"] != "object") p.fail(f + ".type", "must be \"object\"");
  if (schema.contains("additionalProperties") && !schema["additionalProperties"].is_boolean()) {
    p.fail(f + ".additionalProperties", "must be true or false");
  }
  json props = member(schema, "properties", json::object());
  if (!props.is_object()) p.fail(f + ".properties", "must be an object");
  for (const auto& [name, prop] : props.items()) {
    check_param_schema(p, f + ".properties." + name, name, prop);
  }
  if (schema.contains("definitions")) {
    if (!schema["definitions"].is_object()) p.fail(f + ".definitions", "must be an object of schemas");
    for (const auto& [name, sub] : schema["definitions"].items()) {
      check_subschema(p, f + ".definitions." + name, sub);
    }
  }
  if (schema.contains("required")) {
    const auto& req = schema["required"];
    if (!req.is_array()) p.fail(f + ".required", "must be an array of parameter names");
    for (const auto& r : req) {
      if (!r.is_string()) p.fail(f + ".required", "must be an array of parameter names");
      if (!props.contains(r.get<std::string>())) {
        p.fail(f + ".required", "'" + r.get<std::string>() + "' is not in properties");
      }
    }
  }
  if (const std::string e = compile_error(schema); !e.empty()) p.fail(f, e);
  // A default is a value the job gets: it must pass its own parameter's schema.
  for (const auto& [name, prop] : props.items()) {
    if (!prop.contains("default")) continue;
    json one = schema;
    one.erase("required");
    for (const auto& problem : schema_problems(one, json{{name, prop["default"]}})) {
      p.fail(f + ".properties." + name + ".default", problem);
    }
  }
}

Sink parse_sink(const Parser& p, const json& j, std::size_t index) {
  const std::string f = "sinks[" + std::to_string(index) + "]";
  if (!j.is_object()) p.fail(f, "must be an object with a \"kind\"");
  if (!j.contains("kind")) p.fail(f + ".kind", "required (webhook, kafka or file)");
  Sink s;
  s.kind = p.string(j["kind"], f + ".kind");
  std::vector<std::string> allowed;
  if (s.kind == "webhook") allowed = {"url", "secret_env", "timeout_ms"};
  else if (s.kind == "kafka") allowed = {"topic"};
  else if (s.kind == "file") allowed = {"dir"};
  else p.fail(f + ".kind", "'" + s.kind + "' is not a sink kind (webhook, kafka or file)");
  for (const auto& [k, v] : j.items()) {
    if (k == "kind") continue;
    if (std::find(allowed.begin(), allowed.end(), k) == allowed.end()) {
      p.fail(f, "unknown field '" + k + "' for a " + s.kind + " sink" + suggestion(k, allowed));
    }
    s.settings[k] = v;
  }
  const json& st = s.settings;
  if (s.kind == "webhook") {
    // No url: the publication service posts to system_parameters.publication_endpoint_url.
    if (st.contains("url")) {
      const std::string url = p.string(st["url"], f + ".url");
      if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) {
        p.fail(f + ".url", "must start with http:// or https:// (omit it to use publication_endpoint_url)");
      }
    }
    if (st.contains("secret_env")) {
      static const std::regex env_name("^[A-Za-z_][A-Za-z0-9_]*$");
      if (!st["secret_env"].is_string() || !std::regex_match(st["secret_env"].get<std::string>(), env_name)) {
        p.fail(f + ".secret_env", "must be the name of an environment variable");
      }
    }
    if (st.contains("timeout_ms")) p.integer(st["timeout_ms"], f + ".timeout_ms", 1, "must be a positive integer");
  } else if (s.kind == "kafka") {
    if (!st.contains("topic")) p.fail(f + ".topic", "required for a kafka sink");
    static const std::regex topic_re("^[A-Za-z0-9._-]{1,249}$");
    if (!st["topic"].is_string() || !std::regex_match(st["topic"].get<std::string>(), topic_re)) {
      p.fail(f + ".topic", "must be a Kafka topic name ([A-Za-z0-9._-], 1 to 249 characters)");
    }
  } else {
    // A relative dir is under CONVEYOR_DATA_DIR (see deploy/config/README.md).
    if (!st.contains("dir")) p.fail(f + ".dir", "required for a file sink");
    const std::string dir = p.string(st["dir"], f + ".dir");
    if (dir.empty()) p.fail(f + ".dir", "must not be empty");
    if (dir.find('{') != std::string::npos || dir.find('}') != std::string::npos) {
      p.fail(f + ".dir", "placeholders are not supported in sinks (a relative dir is under CONVEYOR_DATA_DIR)");
    }
  }
  return s;
}

json trigger_json(const Parser& p, const json& triggers) {
  // Each trigger: {"job_type": "B", "params": {...}}: create a B job when a
  // job of this type is done.
  if (!triggers.is_array()) p.fail("triggers", "must be an array");
  for (std::size_t i = 0; i < triggers.size(); ++i) {
    const std::string f = "triggers[" + std::to_string(i) + "]";
    const auto& t = triggers[i];
    if (!t.is_object()) p.fail(f, "must be an object with a \"job_type\"");
    for (const auto& [k, v] : t.items()) {
      if (k != "job_type" && k != "params") p.fail(f, "unknown field '" + k + "'");
    }
    if (!t.contains("job_type") || !t["job_type"].is_string() ||
        !std::regex_match(t["job_type"].get<std::string>(), name_re())) {
      p.fail(f + ".job_type", "must be a job type name");
    }
    if (t.contains("params") && !t["params"].is_object()) p.fail(f + ".params", "must be an object");
  }
  return triggers;
}

// Code points, not bytes, for minLength/maxLength.
std::size_t utf8_length(const std::string& s) {
  return static_cast<std::size_t>(
      std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

bool has_type(const json& v, const std::string& type) {
  if (type == "string") return v.is_string();
  if (type == "integer") {
    if (v.is_number_integer()) return true;
    // JSON Schema counts 3.0 as an integer.
    return v.is_number_float() && std::isfinite(v.get<double>()) && v.get<double>() == std::floor(v.get<double>());
  }
  if (type == "number") return v.is_number();
  if (type == "boolean") return v.is_boolean();
  if (type == "array") return v.is_array();
  if (type == "object") return v.is_object();
  return false;
}

std::string article(const std::string& type) {
  return (type == "integer" || type == "array" || type == "object" ? "an " : "a ") + type;
}

// JSON Schema counts 3.0 as an integer; valijson's nlohmann adapter does not,
// so the validator sees integral numbers as integers.
json integral_numbers(const json& v) {
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) {
      return static_cast<std::int64_t>(d);
    }
    return v;
  }
  json out = v;
  if (v.is_object() || v.is_array()) {
    for (auto& [k, item] : out.items()) item = integral_numbers(item);
  }
  return out;
}

// valijson's path ["<root>", "[tile]", "[0]"] as "params.tile[0]".
std::string params_path(const std::vector<std::string>& context) {
  std::string path = "params";
  for (const auto& c : context) {
    if (c.size() < 2 || c.front() != '[' || c.back() != ']') continue;  // "<root>"
    const std::string inner = c.substr(1, c.size() - 2);
    const bool index = !inner.empty() && std::all_of(inner.begin(), inner.end(), ::isdigit);
    path += index ? c : "." + inner;
  }
  return path;
}

// valijson's sentence ("Failed to match regex specified by 'pattern'
// constraint.") in the style of the other messages.
std::string reworded(std::string description) {
  if (!description.empty()) description[0] = static_cast<char>(std::tolower(description[0]));
  if (!description.empty() && description.back() == '.') description.pop_back();
  static const std::regex trailing_zeros("([0-9])\\.0+\\b");  // "-180.000000" -> "-180"
  return std::regex_replace(description, trailing_zeros, "$1");
}

// Every violation of `schema` by `value`, as "params.<path>: <what>", without
// valijson's summaries of the enclosing object or array ("Failed to validate
// item #1 ...") when the violation itself is reported.
std::vector<std::string> schema_problems(const json& schema, const json& value) {
  valijson::Schema compiled;
  valijson::SchemaParser parser;
  valijson::adapters::NlohmannJsonAdapter schema_adapter(schema);
  std::vector<std::string> problems;
  try {
    parser.populateSchema(schema_adapter, compiled);
  } catch (const std::exception& e) {
    problems.push_back("params: the type's params_schema cannot be used: " + std::string(e.what()));
    return problems;
  }
  const json target = integral_numbers(value);
  valijson::adapters::NlohmannJsonAdapter target_adapter(target);
  valijson::ValidationResults results;
  valijson::Validator validator;
  if (validator.validate(compiled, target_adapter, &results)) return problems;
  std::vector<valijson::ValidationResults::Error> errors(results.begin(), results.end());
  const auto is_summary = [](const valijson::ValidationResults::Error& e) {
    for (const char* s :
         {"Failed to validate item #", "Failed to validate against schema associated with",
          "Failed to validate against additional properties schema", "Failed to validate against child schema #"}) {
      if (e.description.rfind(s, 0) == 0) return true;
    }
    return false;
  };
  const auto wrong_type_at = [&](const std::vector<std::string>& context) {
    return std::any_of(errors.begin(), errors.end(), [&](const auto& o) {
      return o.context == context && o.description.rfind("Value type not permitted", 0) == 0;
    });
  };
  for (const auto& e : errors) {
    // valijson checks a format on a value of the wrong type too; the type is the problem.
    if (e.description.rfind("String should be a valid", 0) == 0 && wrong_type_at(e.context)) continue;
    const bool summarises_another = is_summary(e) && std::any_of(errors.begin(), errors.end(), [&](const auto& o) {
                                      return !is_summary(o) && o.context.size() >= e.context.size() &&
                                             std::equal(e.context.begin(), e.context.end(), o.context.begin());
                                    });
    if (summarises_another) continue;
    std::string problem = params_path(e.context) + ": " + reworded(e.description);
    if (std::find(problems.begin(), problems.end(), problem) == problems.end()) {
      problems.push_back(std::move(problem));
    }
  }
  return problems;
}

std::string render_value(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  return v.dump();  // numbers as written (3, 2.5), arrays and objects as compact JSON
}

// SQL for conveyor.job_type. Empty strings are stored as NULL.
constexpr db::Statement kSelectAll{
    "job_type_select_all",
    "SELECT name, enabled, command::text AS command, image, timeout_s, max_attempts, "
    "retry_backoff_s, "
    "priority, concurrency_limit, pool, schedule, catchup_policy, catchup_window_s, triggers::text "
    "AS triggers, "
    "sinks::text AS sinks, params_schema::text AS params_schema, env::text AS env, description, "
    "resources::text AS resources, network, runner "
    "FROM conveyor.job_type ORDER BY name"};
constexpr db::Statement kSelectOne{
    "job_type_select_one",
    "SELECT name, enabled, command::text AS command, image, timeout_s, max_attempts, "
    "retry_backoff_s, "
    "priority, concurrency_limit, pool, schedule, catchup_policy, catchup_window_s, triggers::text "
    "AS triggers, "
    "sinks::text AS sinks, params_schema::text AS params_schema, env::text AS env, description, "
    "resources::text AS resources, network, runner, xmin::text AS version "
    "FROM conveyor.job_type WHERE name = $1"};
constexpr db::Statement kUpsert{
    "job_type_upsert",
    "INSERT INTO conveyor.job_type (name, enabled, command, image, timeout_s, max_attempts, "
    "retry_backoff_s, "
    "priority, concurrency_limit, pool, schedule, catchup_policy, catchup_window_s, triggers, "
    "sinks, "
    "params_schema, env, description, resources, network, runner) "
    "VALUES ($1, $2, $3::jsonb, NULLIF($4, ''), $5, $6, $7, $8, $9, $10, NULLIF($11, ''), $12, "
    "$13, $14::jsonb, "
    "$15::jsonb, $16::jsonb, $17::jsonb, NULLIF($18, ''), $19::jsonb, $20, $21) "
    "ON CONFLICT (name) DO UPDATE SET enabled = EXCLUDED.enabled, command = EXCLUDED.command, "
    "image = EXCLUDED.image, timeout_s = EXCLUDED.timeout_s, max_attempts = EXCLUDED.max_attempts, "
    "retry_backoff_s = EXCLUDED.retry_backoff_s, priority = EXCLUDED.priority, "
    "concurrency_limit = EXCLUDED.concurrency_limit, pool = EXCLUDED.pool, schedule = "
    "EXCLUDED.schedule, "
    "catchup_policy = EXCLUDED.catchup_policy, catchup_window_s = EXCLUDED.catchup_window_s, "
    "triggers = EXCLUDED.triggers, sinks = EXCLUDED.sinks, params_schema = EXCLUDED.params_schema, "
    "env = EXCLUDED.env, description = EXCLUDED.description, resources = EXCLUDED.resources, "
    "network = EXCLUDED.network, runner = EXCLUDED.runner"};

JobType from_row(const db::Row& r) {
  json j = json::object();
  j["name"] = r["name"].as_string();
  j["enabled"] = r["enabled"].as_bool();
  j["command"] = r["command"].is_null() ? json::array() : json::parse(r["command"].view());
  j["image"] = r["image"].as_string();
  j["timeout_s"] = r["timeout_s"].as_int();
  j["max_attempts"] = r["max_attempts"].as_int();
  j["retry_backoff_s"] = r["retry_backoff_s"].as_int();
  j["priority"] = r["priority"].as_int();
  j["concurrency_limit"] = r["concurrency_limit"].is_null() ? json() : json(r["concurrency_limit"].as_int());
  j["pool"] = r["pool"].as_string();
  j["schedule"] = r["schedule"].as_string();
  j["catchup_policy"] = r["catchup_policy"].as_string();
  j["catchup_window_s"] = r["catchup_window_s"].is_null() ? json() : json(r["catchup_window_s"].as_int());
  j["triggers"] = json::parse(r["triggers"].view());
  j["sinks"] = json::parse(r["sinks"].view());
  j["params_schema"] = json::parse(r["params_schema"].view());
  j["env"] = json::parse(r["env"].view());
  j["description"] = r["description"].as_string();
  j["resources"] = json::parse(r["resources"].view());
  j["network"] = r["network"].as_bool();
  j["runner"] = r["runner"].as_string();
  // Rows are validated like the file: a row edited by hand into something
  // invalid is reported with its field rather than run half-understood.
  return parse_job_type(j);
}

}  // namespace

nlohmann::json Resources::to_json() const {
  json j = json::object();
  if (cpus > 0) j["cpus"] = cpus;
  if (memory_mb > 0) j["memory_mb"] = memory_mb;
  return j;
}

bool reserved_env_name(std::string_view name) { return name.substr(0, 2) == "PG" || name.substr(0, 9) == "CONVEYOR_"; }

bool valid_image_tag(std::string_view tag) {
  if (tag.empty() || tag.size() > 128 || tag.front() == '.' || tag.front() == '-') return false;
  return std::all_of(tag.begin(), tag.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
  });
}

std::string argv_output_dir(const std::string& image, const std::string& host_output_dir) {
  return image.empty() ? host_output_dir : std::string(kContainerOutputDir);
}

nlohmann::json JobType::to_json() const {
  json sinks_j = json::array();
  for (const auto& s : sinks) {
    json o = s.settings.is_object() ? s.settings : json::object();
    o["kind"] = s.kind;
    sinks_j.push_back(std::move(o));
  }
  json env_j = json::object();
  for (const auto& [k, v] : env) env_j[k] = v;
  return {
      {"name", name},
      {"enabled", enabled},
      {"command", command},
      {"image", image},
      {"runner", runner},
      {"resources", resources.to_json()},
      {"network", network},
      {"timeout_s", timeout_s},
      {"max_attempts", max_attempts},
      {"retry_backoff_s", retry_backoff_s},
      {"priority", priority},
      {"concurrency_limit", concurrency_limit ? json(*concurrency_limit) : json()},
      {"pool", pool},
      {"schedule", schedule},
      {"catchup_policy", catchup_policy},
      {"catchup_window_s", catchup_window_s ? json(*catchup_window_s) : json()},
      {"triggers", triggers},
      {"sinks", sinks_j},
      {"params_schema", params_schema},
      {"env", env_j},
      {"description", description},
  };
}

namespace {

bool present(const json& j, const char* k) { return j.contains(k) && !j[k].is_null(); }

// image, resources and network: what a container job has and a process job must not.
void parse_container_fields(const Parser& p, const json& j, JobType& t) {
  if (present(j, "image")) {
    t.image = p.string(j["image"], "image");
    // It becomes an argument of `podman run`: a reference, never an option.
    static const std::regex image_re("^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,511}$");
    if (!t.image.empty() && !std::regex_match(t.image, image_re)) {
      p.fail("image",
             "must be an image reference such as registry.example/tool:1.0 "
             "(letters, digits and . _ / : @ + -, not starting with '-')");
    }
  }
  if (present(j, "resources")) {
    const auto& r = j["resources"];
    if (!r.is_object()) p.fail("resources", "must be an object such as {\"cpus\": 1, \"memory_mb\": 512}");
    for (const auto& [k, v] : r.items()) {
      if (k == "cpus") {
        if (!v.is_number() || v.get<double>() <= 0 || v.get<double>() > 1024)
          p.fail("resources.cpus", "must be a number of CPUs, more than 0 and at most 1024");
        t.resources.cpus = v.get<double>();
      } else if (k == "memory_mb") {
        if (!v.is_number_integer() || v.get<long long>() < 6 || v.get<long long>() > (1LL << 30))
          p.fail("resources.memory_mb", "must be an integer number of MiB, at least 6");
        t.resources.memory_mb = v.get<std::int64_t>();
      } else {
        p.fail("resources." + k, "unknown field (known: cpus, memory_mb)");
      }
    }
  }
  if (present(j, "network")) {
    if (!j["network"].is_boolean()) p.fail("network", "must be true or false");
    t.network = j["network"].get<bool>();
  }
  if (t.image.empty() && !t.resources.empty())
    p.fail("resources", "limits apply to container jobs only: set image, or remove resources");
  if (t.image.empty() && t.network)
    p.fail("network", "applies to container jobs only (a process job has the host's network)");
}

// runner and command: what the worker starts, and how.
void parse_runner_and_command(const Parser& p, const json& j, JobType& t) {
  if (present(j, "runner")) {
    t.runner = p.string(j["runner"], "runner");
    if (t.runner != "process" && t.runner != "resident") {
      p.fail("runner",
             "must be \"process\" (a process per job) or \"resident\" (one program "
             "per worker, fed jobs as JSON lines), got \"" +
                 t.runner + "\"");
    }
    if (t.runner == "resident" && !t.image.empty())
      p.fail("runner", "\"resident\" runs a process on the worker: remove image, or use \"process\"");
  }
  if (present(j, "command")) {
    const auto& c = j["command"];
    if (!c.is_array()) p.fail("command", "must be an array of strings (argv template)");
    for (std::size_t i = 0; i < c.size(); ++i)
      t.command.push_back(p.string(c[i], "command[" + std::to_string(i) + "]"));
  }
  if (t.command.empty() && t.image.empty()) p.fail("command", "required (a non-empty argv) when there is no image");
  if (!t.command.empty() && t.command[0].empty()) p.fail("command[0]", "the program must not be empty");
}

// timeout, attempts, back-off, priority, concurrency limit and pool.
void parse_run_limits(const Parser& p, const json& j, JobType& t) {
  if (present(j, "timeout_s")) t.timeout_s = p.integer(j["timeout_s"], "timeout_s", 1, "must be a positive integer");
  if (present(j, "max_attempts"))
    t.max_attempts = p.integer(j["max_attempts"], "max_attempts", 1, "must be an integer >= 1");
  if (present(j, "retry_backoff_s")) {
    t.retry_backoff_s = p.integer(j["retry_backoff_s"], "retry_backoff_s", 0, "must be an integer >= 0");
  }
  if (present(j, "priority")) {
    t.priority = p.integer(j["priority"], "priority", std::numeric_limits<int>::min(), "must be an integer");
  }
  if (present(j, "concurrency_limit")) {
    t.concurrency_limit =
        p.integer(j["concurrency_limit"], "concurrency_limit", 1, "must be a positive integer or null (no limit)");
  }
  if (present(j, "pool")) {
    t.pool = p.string(j["pool"], "pool");
    static const std::regex pool_re("^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$");
    if (!std::regex_match(t.pool, pool_re)) p.fail("pool", "must be a pool name ([A-Za-z0-9._-])");
  }
}

// schedule and its catch-up policy and window.
void parse_schedule_fields(const Parser& p, const json& j, JobType& t) {
  if (present(j, "schedule")) {
    t.schedule = p.string(j["schedule"], "schedule");
    if (!t.schedule.empty()) {
      try {
        Schedule::parse(t.schedule);
      } catch (const Error& e) {
        p.fail("schedule", e.what());
      }
    }
  }
  if (present(j, "catchup_policy")) {
    t.catchup_policy = p.string(j["catchup_policy"], "catchup_policy");
    if (!parse_catchup_policy(t.catchup_policy)) p.fail("catchup_policy", "must be one of all, latest, none, collapse");
  }
  if (present(j, "catchup_window_s")) {
    t.catchup_window_s = p.integer(j["catchup_window_s"], "catchup_window_s", 1, "must be a positive integer or null");
  }
}

void parse_env(const Parser& p, const json& env, JobType& t) {
  if (!env.is_object()) p.fail("env", "must be an object of strings");
  static const std::regex env_name("^[A-Za-z_][A-Za-z0-9_]*$");
  for (const auto& [k, v] : env.items()) {
    if (!std::regex_match(k, env_name)) p.fail("env." + k, "is not a valid environment variable name");
    else if (reserved_env_name(k))
      p.fail("env." + k,
             "is reserved: PG* and CONVEYOR_* variables never reach a job "
             "(the worker's database settings and Conveyor's own)");
    if (!v.is_string()) p.fail("env." + k, "must be a string");
    t.env[k] = v.get<std::string>();
  }
}

// Typo protection for the command: each placeholder must be a built-in or a
// declared parameter (when the schema declares any).
void check_command_placeholders(const Parser& p, const JobType& t) {
  const json props = member(t.params_schema, "properties", json::object());
  const bool declared = t.params_schema.contains("properties");
  for (std::size_t i = 0; i < t.command.size(); ++i) {
    const std::string f = "command[" + std::to_string(i) + "]";
    for (const auto& name : placeholders(t.command[i], [&](const std::string& what) { p.fail(f, what); })) {
      // A resident program starts once for many jobs: nothing of one job
      // can be in its command (each job's params come on its stdin).
      if (t.runner == "resident") {
        p.fail(f, "placeholder {" + name +
                      "}: a resident type's command is started once for "
                      "many jobs, so it takes no per-job placeholders (each job's params, id and "
                      "output dir come on the program's stdin)");
      }
      if (kBuiltins.count(name) || !declared || props.contains(name)) continue;
      p.fail(f, "placeholder {" + name + "} is neither a parameter in params_schema.properties nor one of " +
                    "{job_id}, {attempt}, {output_dir}, {inputs}" + suggestion(name, [&] {
                      std::vector<std::string> known(kBuiltins.begin(), kBuiltins.end());
                      for (const auto& [k, v] : props.items()) known.push_back(k);
                      return known;
                    }()));
    }
  }
}

}  // namespace

// Each check fails with the first problem found, in the order of the fields
// below (the order the error messages have always come in).
JobType parse_job_type(const nlohmann::json& j) {
  if (!j.is_object()) throw Error(errc::bad_input, "job type: must be a JSON object");
  if (!j.contains("name") || !j["name"].is_string()) {
    throw Error(errc::bad_input, "job type: name: required, a string");
  }
  JobType t;
  t.name = j["name"].get<std::string>();
  Parser p(t.name);
  if (!std::regex_match(t.name, name_re())) {
    p.fail("name", "must match ^[a-z][a-z0-9_-]{0,62}$ (lower case, digits, '-' and '_')");
  }
  for (const auto& [k, v] : j.items()) {
    if (std::find(kFields.begin(), kFields.end(), k) == kFields.end()) {
      p.fail(k, "unknown field" + suggestion(k, kFields));
    }
  }
  if (present(j, "enabled")) {
    if (!j["enabled"].is_boolean()) p.fail("enabled", "must be true or false");
    t.enabled = j["enabled"].get<bool>();
  }
  parse_container_fields(p, j, t);
  parse_runner_and_command(p, j, t);
  parse_run_limits(p, j, t);
  parse_schedule_fields(p, j, t);
  if (present(j, "triggers")) t.triggers = trigger_json(p, j["triggers"]);
  if (present(j, "sinks")) {
    if (!j["sinks"].is_array()) p.fail("sinks", "must be an array");
    for (std::size_t i = 0; i < j["sinks"].size(); ++i) t.sinks.push_back(parse_sink(p, j["sinks"][i], i));
  }
  if (present(j, "params_schema")) {
    check_params_schema(p, j["params_schema"]);
    t.params_schema = j["params_schema"];
  }
  if (present(j, "env")) parse_env(p, j["env"], t);
  if (present(j, "description")) t.description = p.string(j["description"], "description");
  check_command_placeholders(p, t);
  return t;
}

std::vector<JobType> parse_job_types_file(const nlohmann::json& j) {
  const json* list = &j;
  if (j.is_object()) {
    for (const auto& [k, v] : j.items()) {
      if (k != "job_types" && k != "description") {
        throw Error(errc::bad_input, "unknown top-level field '" + k + "' (expected \"job_types\")");
      }
    }
    if (!j.contains("job_types")) throw Error(errc::bad_input, "job_types: required, an array of job types");
    list = &j["job_types"];
  }
  if (!list->is_array()) throw Error(errc::bad_input, "job_types: must be an array of job types");
  std::vector<JobType> out;
  std::set<std::string> names;
  for (std::size_t i = 0; i < list->size(); ++i) {
    const auto& item = (*list)[i];
    if (!item.is_object() || !item.contains("name")) {
      throw Error(errc::bad_input, "job_types[" + std::to_string(i) + "]: name: required");
    }
    out.push_back(parse_job_type(item));
    if (!names.insert(out.back().name).second) {
      throw Error(errc::bad_input, "job type '" + out.back().name + "': name: defined twice in the file");
    }
  }
  return out;
}

namespace {

// `required` with null counted as absent.
void check_required(const json& schema, const json& params, std::vector<std::string>& problems) {
  if (!schema.contains("required") || !schema["required"].is_array()) return;
  for (const auto& r : schema["required"]) {
    if (r.is_string() && (!params.contains(r.get<std::string>()) || params[r.get<std::string>()].is_null())) {
      problems.push_back("params." + r.get<std::string>() + ": required");
    }
  }
}

// One declared, non-null parameter `f` against its property schema: type,
// enum, bounds and lengths, in the project's own words.
void check_param(const std::string& f, const json& prop, const json& value, std::vector<std::string>& problems) {
  const json type_j = member(prop, "type", "");
  const std::string type = type_j.is_string() ? type_j.get<std::string>() : "";
  if (!type.empty() && !has_type(value, type)) {
    problems.push_back(f + ": expected " + article(type));
    return;
  }
  if (prop.contains("enum") && prop["enum"].is_array()) {
    const auto& e = prop["enum"];
    if (std::find(e.begin(), e.end(), value) == e.end()) {
      problems.push_back(f + ": must be one of " + e.dump() + " (got " + value.dump() + ")");
    }
  }
  if (value.is_number()) {
    const double d = value.get<double>();
    if (prop.contains("minimum") && prop["minimum"].is_number() && d < prop["minimum"].get<double>()) {
      problems.push_back(f + ": must be >= " + prop["minimum"].dump() + " (got " + value.dump() + ")");
    }
    if (prop.contains("maximum") && prop["maximum"].is_number() && d > prop["maximum"].get<double>()) {
      problems.push_back(f + ": must be <= " + prop["maximum"].dump() + " (got " + value.dump() + ")");
    }
  }
  if (value.is_string()) {
    const auto len = utf8_length(value.get<std::string>());
    if (prop.contains("minLength") && prop["minLength"].is_number() && len < prop["minLength"].get<std::size_t>()) {
      problems.push_back(f + ": must be at least " + prop["minLength"].dump() + " character(s) long");
    }
    if (prop.contains("maxLength") && prop["maxLength"].is_number() && len > prop["maxLength"].get<std::size_t>()) {
      problems.push_back(f + ": must be at most " + prop["maxLength"].dump() + " character(s) long");
    }
  }
}

// The declared parameters left for the full JSON Schema check. A parameter
// already reported is not reported twice; a null one is absent; one too
// long for a regex its schema (or a shared definition it may $ref) reads is
// reported here and left out.
json left_for_full_check(const json& schema, const json& props, const json& params,
                         std::vector<std::string>& problems) {
  json rest = json::object();
  for (const auto& [name, value] : params.items()) {
    const std::string f = "params." + name;
    const bool reported = std::any_of(problems.begin(), problems.end(),
                                      [&](const std::string& p) { return p.compare(0, f.size() + 1, f + ":") == 0; });
    if (!value.is_null() && !reported && props.contains(name)) rest[name] = value;
  }
  json outside_properties = schema;
  outside_properties.erase("properties");
  const bool shared_regex = reads_with_regex(outside_properties);
  for (auto it = rest.begin(); it != rest.end();) {
    if (shared_regex || reads_with_regex(props[it.key()])) {
      if (auto p = too_long_for_regex(it.value(), "params." + it.key()); !p.empty()) {
        problems.push_back(std::move(p));
        it = rest.erase(it);
        continue;
      }
    }
    ++it;
  }
  return rest;
}

}  // namespace

std::vector<std::string> validate_params(const nlohmann::json& schema, const nlohmann::json& params) {
  // The project's own messages for the common keywords first (type, enum,
  // bounds, lengths, required, unknown names), then JSON Schema in full
  // (valijson) for the rest: pattern, format, items, nested objects, ...
  std::vector<std::string> problems;
  if (!params.is_object()) {
    problems.push_back("params: expected an object");
    return problems;
  }
  if (!schema.is_object() || schema.empty()) return problems;
  const json props = member(schema, "properties", json::object());
  const json additional_j = member(schema, "additionalProperties", true);
  const bool additional = !additional_j.is_boolean() || additional_j.get<bool>();
  check_required(schema, params, problems);
  for (const auto& [name, value] : params.items()) {
    if (!props.contains(name)) {
      if (!additional) problems.push_back("params." + name + ": unknown parameter");
      continue;
    }
    if (value.is_null()) continue;  // absent; `required` reported it if needed
    check_param("params." + name, props[name], value, problems);
  }
  const json rest = left_for_full_check(schema, props, params, problems);
  json full = schema;
  full.erase("required");  // reported above, with null counted as absent
  full["additionalProperties"] = true;
  for (auto& p : schema_problems(full, rest)) problems.push_back(std::move(p));
  return problems;
}

std::vector<std::string> render_argv(const std::vector<std::string>& templ, const ArgvContext& ctx) {
  std::vector<std::string> argv;
  for (std::size_t i = 0; i < templ.size(); ++i) {
    const std::string& arg = templ[i];
    auto bad = [&](const std::string& what) {
      throw Error(errc::bad_input, "command argument " + std::to_string(i) + " (\"" + arg + "\"): " + what);
    };
    if (arg == "{inputs}") {
      argv.insert(argv.end(), ctx.inputs.begin(), ctx.inputs.end());
      continue;
    }
    std::string out;
    for (std::size_t k = 0; k < arg.size(); ++k) {
      const char c = arg[k];
      if ((c == '{' || c == '}') && k + 1 < arg.size() && arg[k + 1] == c) {
        out += c;
        ++k;
        continue;
      }
      if (c == '}') bad("unmatched '}' (write '}}' for a literal brace)");
      if (c != '{') {
        out += c;
        continue;
      }
      const auto close = arg.find('}', k + 1);
      if (close == std::string::npos) bad("unterminated '{' (write '{{' for a literal brace)");
      const std::string name = arg.substr(k + 1, close - k - 1);
      k = close;
      if (name == "job_id") out += std::to_string(ctx.job_id);
      else if (name == "attempt") out += std::to_string(ctx.attempt);
      else if (name == "output_dir") out += ctx.output_dir;
      else if (name == "inputs") out += json(ctx.inputs).dump();  // inside a larger argument: a JSON array
      else if (ctx.params.is_object() && ctx.params.contains(name) && !ctx.params[name].is_null()) {
        out += render_value(ctx.params[name]);
      } else {
        bad("unknown placeholder {" + name + "}: no parameter '" + name + "' in the job's params");
      }
    }
    argv.push_back(std::move(out));
  }
  return argv;
}

std::vector<JobType> load_job_types(db::Tx& tx) {
  std::vector<JobType> out;
  for (const auto row : tx.exec(kSelectAll)) out.push_back(from_row(row));
  return out;
}

std::optional<JobType> load_job_type(db::Tx& tx, const std::string& name) {
  const auto rows = tx.exec(kSelectOne, {name});
  if (rows.empty()) return std::nullopt;
  return from_row(rows[0]);
}

std::optional<VersionedJobType> read_versioned_job_type(db::Pool& pool, const std::string& name) {
  const auto rows = pool.exec_idempotent(kSelectOne, {name});
  if (rows.empty()) return std::nullopt;
  return VersionedJobType{from_row(rows[0]), rows[0]["version"].as_string()};
}

namespace {

// NO KEY UPDATE, as the upsert's own lock: the foreign-key checks of the
// scheduler's inserts (schedule_state, backfill_request) are not blocked.
constexpr db::Statement kScheduleOf{
    "job_type_schedule_of", "SELECT coalesce(schedule, '') FROM conveyor.job_type WHERE name = $1 FOR NO KEY UPDATE"};
constexpr db::Statement kScheduleNow{"job_type_schedule_now", kScheduleNowSql};
constexpr db::Statement kRestartScheduleState{
    "job_type_restart_schedule_state",
    "UPDATE conveyor.schedule_state SET last_slot = to_timestamp($2), next_slot = to_timestamp($3), "
    "  last_error = NULL, updated_at = now() WHERE job_type = $1"};

// A schedule that is removed, added back or changed starts again from now,
// as a new one does: the slots of the old spec, or of the time the type had
// none, are not caught up (the scheduler would otherwise plan from the old
// last slot). The row stays, hidden while the type has no schedule: its
// counts, a pause and the schedule_catchup_start it applied are kept, so an
// old start is not applied again (a new one is). A type scheduled for the
// first time has no row: the scheduler starts it, from its catch-up start
// if one is set.
void restart_schedule_if_changed(db::Tx& tx, const JobType& t, const std::string& before) {
  if (before == t.schedule) return;
  const TimePoint now{std::chrono::seconds(tx.exec(kScheduleNow)[0][0].as_int())};
  std::optional<std::int64_t> next;
  if (!t.schedule.empty()) next = Schedule::parse(t.schedule).next_after(now).time_since_epoch().count();
  tx.exec(kRestartScheduleState, {t.name, now.time_since_epoch().count(), next});
}

}  // namespace

void upsert_job_type(db::Tx& tx, const JobType& t) {
  const json j = t.to_json();
  const db::Result before = tx.exec(kScheduleOf, {t.name});
  tx.exec(kUpsert, {t.name,
                    t.enabled,
                    j["command"].dump(),
                    t.image,
                    t.timeout_s,
                    t.max_attempts,
                    t.retry_backoff_s,
                    t.priority,
                    t.concurrency_limit,
                    t.pool,
                    t.schedule,
                    t.catchup_policy,
                    t.catchup_window_s,
                    t.triggers.dump(),
                    j["sinks"].dump(),
                    t.params_schema.dump(),
                    j["env"].dump(),
                    t.description,
                    j["resources"].dump(),
                    t.network,
                    t.runner});
  restart_schedule_if_changed(tx, t, before.empty() ? std::string() : before[0][0].as_string());
}

}  // namespace conveyor::model
