#include "conveyor/model/job_config.hpp"

#include <cmath>

#include "conveyor/error/error.hpp"

namespace conveyor::model {
namespace {

using nlohmann::json;

[[noreturn]] void wrong(const std::string& field, const std::string& what) {
  throw FieldError("config." + field, "job config: " + field + " must be " + what);
}

// The member `field` of `config`, or nullptr when it is absent or null.
const json* member(const json& config, const std::string& field) {
  const auto it = config.find(field);
  return it == config.end() || it->is_null() ? nullptr : &*it;
}

std::string string_of(const json& config, const std::string& field, std::string fallback) {
  const json* v = member(config, field);
  if (!v) return fallback;
  if (!v->is_string()) wrong(field, "a string");
  return v->get<std::string>();
}

// `path` names the field in errors when it is nested (resources.cpus).
double number_of(const json& config, const std::string& field, double fallback, const std::string& path = {}) {
  const json* v = member(config, field);
  if (!v) return fallback;
  if (!v->is_number() || !std::isfinite(v->get<double>()) || v->get<double>() < 0) {
    wrong(path.empty() ? field : path, "a number >= 0");
  }
  return v->get<double>();
}

std::vector<std::string> strings_of(const json& config, const std::string& field) {
  const json* v = member(config, field);
  if (!v) return {};
  if (!v->is_array()) wrong(field, "an array of strings");
  std::vector<std::string> out;
  for (const auto& s : *v) {
    if (!s.is_string()) wrong(field, "an array of strings");
    out.push_back(s.get<std::string>());
  }
  return out;
}

}  // namespace

std::optional<std::chrono::milliseconds> JobConfig::timeout() const {
  if (timeout_s <= 0) return std::nullopt;
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(timeout_s * 1000.0)));
}

JobConfig parse_job_config(const json& config) {
  if (!config.is_object()) throw FieldError("config", "job config must be a JSON object, not " + config.dump());
  JobConfig c;
  c.job_type = string_of(config, "job_type", "");
  c.argv = strings_of(config, "argv");
  c.command_template = strings_of(config, "command_template");
  c.image = string_of(config, "image", "");
  c.runner = string_of(config, "runner", "process");
  if (const json* r = member(config, "resources")) {
    if (!r->is_object()) wrong("resources", "an object");
    c.resources.cpus = number_of(*r, "cpus", 0, "resources.cpus");
    c.resources.memory_mb = static_cast<std::int64_t>(number_of(*r, "memory_mb", 0, "resources.memory_mb"));
  }
  if (const json* n = member(config, "network")) {
    if (!n->is_boolean()) wrong("network", "true or false");
    c.network = n->get<bool>();
  }
  if (const json* e = member(config, "env")) {
    if (!e->is_object()) wrong("env", "an object");
    for (const auto& [k, v] : e->items()) c.env[k] = v.is_string() ? v.get<std::string>() : v.dump();
  }
  c.timeout_s = number_of(config, "timeout_s", 0);
  const double max_attempts = number_of(config, "max_attempts", 1);
  if (max_attempts < 1 || max_attempts != std::floor(max_attempts)) wrong("max_attempts", "an integer >= 1");
  c.max_attempts = static_cast<int>(max_attempts);
  c.retry_backoff_s = number_of(config, "retry_backoff_s", 30);
  c.inputs = strings_of(config, "inputs");
  c.output_dir = string_of(config, "output_dir", "");
  if (const json* s = member(config, "sinks")) {
    if (!s->is_array()) wrong("sinks", "an array of objects");
    for (const auto& sink : *s) {
      if (!sink.is_object() || !sink.contains("kind") || !sink["kind"].is_string()) {
        wrong("sinks", "an array of objects, each with a string \"kind\"");
      }
    }
    c.sinks = *s;
  }
  c.pool = string_of(config, "pool", "default");
  if (const json* l = member(config, "concurrency_limit")) {
    if (!l->is_number_integer() || l->get<std::int64_t>() < 0) wrong("concurrency_limit", "an integer >= 0");
    c.concurrency_limit = l->get<std::int64_t>();
  }
  return c;
}

}  // namespace conveyor::model
