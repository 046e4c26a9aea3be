#include "conveyor/config/config.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include "conveyor/error/error.hpp"
#include "conveyor/logging/logging.hpp"

extern char** environ;  // POSIX; declared here because only this module reads it

namespace conveyor::config {
namespace {

constexpr std::string_view kPrefix = "CONVEYOR_";

std::string trim(std::string_view s) {
  const auto begin = s.find_first_not_of(" \t\r\n");
  if (begin == std::string_view::npos) return {};
  const auto end = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(begin, end - begin + 1));
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool parse_int(std::string_view text, std::int64_t& out) {
  if (text.empty()) return false;
  const char* begin = text.data();
  if (*begin == '+') ++begin;
  const auto [ptr, ec] = std::from_chars(begin, text.data() + text.size(), out);
  return ec == std::errc{} && ptr == text.data() + text.size();
}

bool parse_bool(std::string_view text, bool& out) {
  const std::string t = lower(text);
  if (t == "true" || t == "1" || t == "yes" || t == "on") {
    out = true;
    return true;
  }
  if (t == "false" || t == "0" || t == "no" || t == "off") {
    out = false;
    return true;
  }
  return false;
}

bool parse_duration_ms(std::string_view text, std::int64_t& out) {
  std::size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  if (digits == 0) return false;
  std::int64_t n = 0;
  if (!parse_int(text.substr(0, digits), n)) return false;
  const std::string_view unit = text.substr(digits);
  std::int64_t factor;
  if (unit.empty() || unit == "ms") {
    factor = 1;
  } else if (unit == "s") {
    factor = 1000;
  } else if (unit == "m") {
    factor = 60'000;
  } else if (unit == "h") {
    factor = 3'600'000;
  } else {
    return false;
  }
  if (n > INT64_MAX / factor) return false;
  out = n * factor;
  return true;
}

std::string range_text(const Key& key) {
  if (key.min == INT64_MIN && key.max == INT64_MAX) return "";
  if (key.max == INT64_MAX) return " >= " + std::to_string(key.min);
  if (key.min == INT64_MIN) return " <= " + std::to_string(key.max);
  return " " + std::to_string(key.min) + ".." + std::to_string(key.max);
}

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out += sep;
    out += parts[i];
  }
  return out;
}

// Checks `raw` against the key's type; returns "" when valid, otherwise what
// was expected (for the error message).
std::string validate(const Key& key, const std::string& raw, std::int64_t& number, bool& flag) {
  // Values as they will be shown: a secret's value is never echoed back.
  const std::string shown = key.secret ? mask_secret(raw) : raw;
  switch (key.type) {
    case Type::string:
      return "";
    case Type::integer:
      if (!parse_int(raw, number) || number < key.min || number > key.max) {
        return "expected an integer" + range_text(key) + ", got '" + shown + "'";
      }
      return "";
    case Type::boolean:
      if (!parse_bool(raw, flag)) return "expected true or false, got '" + shown + "'";
      return "";
    case Type::enumeration:
      if (std::find(key.allowed.begin(), key.allowed.end(), raw) == key.allowed.end()) {
        return "expected one of " + join(key.allowed, ", ") + ", got '" + shown + "'";
      }
      return "";
    case Type::duration_ms:
      if (!parse_duration_ms(raw, number) || number < key.min || number > key.max) {
        return "expected a duration (e.g. 500ms, 5s, 2m, 1h)" + range_text(key) + " in ms, got '" + shown + "'";
      }
      return "";
    case Type::url: {
      if (raw.empty() && key.default_value && key.default_value->empty()) return "";
      const auto sep = raw.find("://");
      const bool scheme_ok = sep != std::string::npos && sep > 0 &&
                             std::all_of(raw.begin(), raw.begin() + static_cast<std::ptrdiff_t>(sep), [](char c) {
                               return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.';
                             });
      if (!scheme_ok || sep + 3 >= raw.size()) {
        return "expected a URL like scheme://host/path, got '" + shown + "'";
      }
      return "";
    }
  }
  return "";
}

struct Value {
  std::string raw;  // Source::Kind::secret_file: not read yet, see resolve_secret_file()
  Source source;
  std::string file_where;  // Source::Kind::secret_file: where <KEY>_FILE was set
};

constexpr std::string_view kFileSuffix = "_FILE";

// The secret key that `name` reads from a file (`name` is <KEY>_FILE), or
// nullptr. A schema that declares <KEY>_FILE itself keeps it as its own key.
const Key* secret_file_target(const Schema& schema, std::string_view name) {
  if (!name.ends_with(kFileSuffix) || schema.find(name) != nullptr) return nullptr;
  const Key* key = schema.find(name.substr(0, name.size() - kFileSuffix.size()));
  return key != nullptr && key->secret ? key : nullptr;
}

// Why an unknown <KEY>_FILE name is unknown, when KEY is a key that is not secret.
std::string not_secret_hint(const Schema& schema, std::string_view name) {
  if (!name.ends_with(kFileSuffix)) return "";
  const Key* key = schema.find(name.substr(0, name.size() - kFileSuffix.size()));
  if (key == nullptr || key->secret) return "";
  return "; " + key->name + " is not a secret and is not read from a file";
}

// What one layer (an env file, or the environment) set, to refuse KEY and
// KEY_FILE side by side: nothing says which of the two was meant.
struct LayerKeys {
  std::map<std::string, std::string> direct;   // KEY -> where
  std::map<std::string, std::string> by_file;  // KEY -> where KEY_FILE was set
  void check(std::vector<std::string>& problems) const {
    for (const auto& [name, where] : by_file) {
      auto it = direct.find(name);
      if (it == direct.end()) continue;
      problems.push_back(name + " (from " + it->second + ") and " + name + std::string(kFileSuffix) + " (from " +
                         where + ") are both set: set one");
    }
  }
};

// Records a value of `layer`: KEY=value, or KEY_FILE=path for a secret key.
void set_value(const Schema& schema, const std::string& name, const std::string& value, Source source,
               const std::filesystem::path& relative_to, std::map<std::string, Value>& values, LayerKeys& layer) {
  const std::string where = source.to_string();
  if (const Key* key = secret_file_target(schema, name)) {
    if (value.empty()) return;  // KEY_FILE= : not set
    std::filesystem::path path(value);
    if (path.is_relative() && !relative_to.empty()) path = relative_to / path;
    Source file_source{Source::Kind::secret_file, path, 0, name + " from " + where};
    values[key->name] = Value{"", std::move(file_source), where};
    layer.by_file[key->name] = where;
    return;
  }
  values[name] = Value{value, std::move(source), {}};
  layer.direct[name] = where;
}

// Reads a secret file into value.raw (trailing newlines stripped); returns
// "" or the problem. The problem names the file, never its content.
std::string resolve_secret_file(const Key& key, Value& value) {
  const std::filesystem::path& path = value.source.file;
  const std::string prefix =
      key.name + std::string(kFileSuffix) + " (from " + value.file_where + "): cannot read " + path.string() + ": ";
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec) return prefix + ec.message();
  if (!std::filesystem::is_regular_file(status)) return prefix + "not a regular file";
  constexpr std::uintmax_t kMaxBytes = 1u << 20;  // a secret, not a data file
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) return prefix + ec.message();
  if (size > kMaxBytes) return prefix + "larger than 1 MiB";
  std::ifstream in(path, std::ios::binary);
  if (!in) return prefix + std::strerror(errno);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return prefix + "read error";
  std::string content = std::move(buffer).str();
  while (!content.empty() && (content.back() == '\n' || content.back() == '\r')) content.pop_back();
  if (content.empty()) return prefix + "the file is empty";
  value.raw = std::move(content);
  return "";
}

// Unquotes a value from an env file; returns false on an unterminated quote.
bool unquote(std::string_view text, std::string& out) {
  if (!text.empty() && (text.front() == '"' || text.front() == '\'')) {
    const char quote = text.front();
    out.clear();
    std::size_t i = 1;
    for (; i < text.size() && text[i] != quote; ++i) {
      // Double quotes take \" \\ and \n escapes, like shells and compose.
      if (quote == '"' && text[i] == '\\' && i + 1 < text.size()) {
        const char next = text[++i];
        out += next == 'n' ? '\n' : next;
      } else {
        out += text[i];
      }
    }
    if (i >= text.size()) return false;
    // Anything after the closing quote must be empty or a comment.
    const std::string rest = trim(text.substr(i + 1));
    return rest.empty() || rest.front() == '#';
  }
  // Unquoted: " #" starts a comment (as in docker compose); a '#' inside a
  // word (e.g. a password) does not.
  std::string value(text);
  for (std::size_t i = 1; i < value.size(); ++i) {
    if (value[i] == '#' && (value[i - 1] == ' ' || value[i - 1] == '\t')) {
      value.resize(i);
      break;
    }
  }
  out = trim(value);
  return true;
}

void read_env_file(const std::filesystem::path& file, const Schema& schema, std::map<std::string, Value>& values,
                   std::vector<std::string>& problems, const std::vector<std::string>& known) {
  std::ifstream in(file);
  if (!in) {
    problems.push_back(file.string() + ": cannot read env file");
    return;
  }
  LayerKeys layer;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    const std::string where = file.string() + ":" + std::to_string(number);
    std::string text = trim(line);
    if (text.empty() || text.front() == '#') continue;
    if (text.rfind("export ", 0) == 0) text = trim(std::string_view(text).substr(7));
    const auto eq = text.find('=');
    if (eq == std::string::npos || eq == 0) {
      problems.push_back(where + ": expected KEY=VALUE, got '" + text + "'");
      continue;
    }
    const std::string name = trim(std::string_view(text).substr(0, eq));
    std::string value;
    if (!unquote(trim(std::string_view(text).substr(eq + 1)), value)) {
      problems.push_back(name + " (from " + where + "): unterminated quote");
      continue;
    }
    // Other variables (e.g. for compose or PostgreSQL tools) may share the file.
    if (name.rfind(kPrefix, 0) != 0) continue;
    if (schema.find(name) == nullptr && secret_file_target(schema, name) == nullptr) {
      std::string problem = name + " (from " + where + "): unknown key";
      const std::string hint = not_secret_hint(schema, name);
      const std::string suggestion = closest_match(name, known);
      if (!hint.empty()) {
        problem += hint;
      } else if (!suggestion.empty()) {
        problem += "; did you mean " + suggestion + "?";
      }
      problems.push_back(problem);
      continue;
    }
    set_value(schema, name, value, Source{Source::Kind::file, file, number, {}}, file.parent_path(), values, layer);
  }
  layer.check(problems);
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> previous(b.size() + 1), current(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) previous[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    current[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      current[j] = std::min({previous[j] + 1, current[j - 1] + 1, substitution});
    }
    std::swap(previous, current);
  }
  return previous[b.size()];
}

}  // namespace

Schema& Schema::add(Key key) {
  auto it = std::find_if(keys_.begin(), keys_.end(), [&](const Key& existing) { return existing.name == key.name; });
  if (it != keys_.end()) {
    *it = std::move(key);
  } else {
    keys_.push_back(std::move(key));
  }
  return *this;
}

const Key* Schema::find(std::string_view name) const {
  for (const Key& key : keys_) {
    if (key.name == name) return &key;
  }
  return nullptr;
}

Schema core_schema() {
  Schema schema;
  schema.add({.name = "CONVEYOR_DATABASE_URL",
              .type = Type::string,  // libpq accepts a URI or key=value pairs
              .default_value = std::nullopt,
              .secret = true,
              .help = "PostgreSQL connection string (URI or key=value), may hold a password"});
  schema.add({.name = "CONVEYOR_KAFKA_BROKERS",
              .default_value = "",
              .help = "Kafka bootstrap servers host:port[,host:port]; empty: no broker"});
  schema.add({.name = "CONVEYOR_HTTP_HOST",
              .default_value = "127.0.0.1",
              .help = "address the admin/API HTTP server listens on"});
  // 0 as every service has it (runtime::ServiceSpec::default_http_port):
  // the schema's default is what `conveyor config show` and --help print.
  schema.add({.name = "CONVEYOR_HTTP_PORT",
              .type = Type::integer,
              .default_value = "0",
              .help = "HTTP port; 0 picks a free port",
              .min = 0,
              .max = 65535});
  schema.add({.name = "CONVEYOR_LOG_LEVEL",
              .type = Type::enumeration,
              .default_value = "info",
              .help = "minimum level logged",
              .allowed = {"trace", "debug", "info", "warn", "error"}});
  schema.add({.name = "CONVEYOR_LOG_FORMAT",
              .type = Type::enumeration,
              .default_value = "text",
              .help = "text for people, json for log collectors",
              .allowed = {"json", "text"}});
  schema.add({.name = "CONVEYOR_DATA_DIR",
              .default_value = "/var/lib/conveyor",
              .help = "where job logs and local state are kept"});
  schema.add(
      {.name = "CONVEYOR_TOPIC_PREFIX", .default_value = "conveyor", .help = "prefix of every Kafka topic name"});
  schema.add({.name = "CONVEYOR_INSTANCE_ID", .default_value = "", .help = "name of this instance; empty: host-pid"});
  schema.add({.name = "CONVEYOR_MIGRATIONS_DIR",
              .default_value = "",
              .help = "directory of SQL migrations; empty: the built-in one"});
  schema.add({.name = "CONVEYOR_API_URL",
              .default_value = "",
              .help = "base URL of the creation service's REST API (tools/dev writes it)"});
  return schema;
}

std::string Source::to_string() const {
  switch (kind) {
    case Kind::default_value:
      return "default";
    case Kind::file:
      return file.string() + ":" + std::to_string(line);
    case Kind::environment:
      return "environment";
    case Kind::secret_file:
      return "file " + file.string() + " (" + named_by + ")";
  }
  return "default";
}

namespace {

// Every name a file or the environment may set: the keys, and NAME_FILE for
// the secrets that may be read from a file.
std::vector<std::string> known_names(const Schema& schema) {
  std::vector<std::string> known;
  for (const Key& key : schema.keys()) {
    known.push_back(key.name);
    if (secret_file_target(schema, key.name + std::string(kFileSuffix))) {
      known.push_back(key.name + std::string(kFileSuffix));
    }
  }
  return known;
}

// The CONVEYOR_* variables of the environment over `values`. Returns the
// warnings for unknown names: the environment is shared with other tools,
// so an unknown name is not an error.
std::vector<std::string> read_environment(const Schema& schema, const std::map<std::string, std::string>& environment,
                                          const std::vector<std::string>& known, std::map<std::string, Value>& values,
                                          std::vector<std::string>& problems) {
  std::vector<std::string> warnings;
  LayerKeys environment_layer;
  for (const auto& [name, value] : environment) {
    if (name.rfind(kPrefix, 0) != 0) continue;
    if (schema.find(name) == nullptr && secret_file_target(schema, name) == nullptr) {
      std::string warning = name + " (from environment): unknown key, ignored";
      const std::string hint = not_secret_hint(schema, name);
      const std::string suggestion = closest_match(name, known);
      if (!hint.empty()) {
        warning += hint;
      } else if (!suggestion.empty()) {
        warning += "; did you mean " + suggestion + "?";
      }
      warnings.push_back(warning);
      continue;
    }
    set_value(schema, name, value, Source{Source::Kind::environment, {}, 0, {}}, {}, values, environment_layer);
  }
  environment_layer.check(problems);
  return warnings;
}

}  // namespace

Config load(const Schema& schema, const std::vector<std::filesystem::path>& env_files,
            const std::map<std::string, std::string>& environment) {
  std::vector<std::string> problems;
  Config config;
  const std::vector<std::string> known = known_names(schema);

  std::map<std::string, Value> values;
  for (const Key& key : schema.keys()) {
    if (key.default_value) values[key.name] = Value{*key.default_value, Source{}, {}};
  }
  for (const auto& file : env_files) read_env_file(file, schema, values, problems, known);
  config.warnings_ = read_environment(schema, environment, known, values, problems);

  for (const Key& key : schema.keys()) {
    auto it = values.find(key.name);
    if (it == values.end()) {
      problems.push_back(key.name + ": required but not set");
      continue;
    }
    if (it->second.source.kind == Source::Kind::secret_file) {
      if (std::string problem = resolve_secret_file(key, it->second); !problem.empty()) {
        problems.push_back(std::move(problem));
        continue;
      }
    }
    Config::Entry entry{key, it->second.raw, it->second.source};
    const std::string problem = validate(key, entry.raw, entry.number, entry.flag);
    if (!problem.empty()) {
      const std::string from =
          entry.source.kind == Source::Kind::default_value ? " (default)" : " (from " + entry.source.to_string() + ")";
      problems.push_back(key.name + from + ": " + problem);
      continue;
    }
    config.entries_.push_back(std::move(entry));
  }

  if (!problems.empty()) {
    std::string message = "invalid configuration (" + std::to_string(problems.size()) +
                          (problems.size() == 1 ? " problem):" : " problems):");
    for (const auto& p : problems) message += "\n  " + p;
    throw Error(errc::invalid_config, message);
  }
  return config;
}

const Config::Entry& Config::entry(std::string_view key) const {
  for (const Entry& e : entries_) {
    if (e.key.name == key) return e;
  }
  throw Error(errc::invalid_config, "configuration key " + std::string(key) + " is not in the schema");
}

std::string Config::get_string(std::string_view key) const { return entry(key).raw; }

std::int64_t Config::get_int(std::string_view key) const {
  const Entry& e = entry(key);
  if (e.key.type != Type::integer && e.key.type != Type::duration_ms) {
    throw Error(errc::invalid_config, std::string(key) + " is not an integer key");
  }
  return e.number;
}

bool Config::get_bool(std::string_view key) const {
  const Entry& e = entry(key);
  if (e.key.type != Type::boolean) {
    throw Error(errc::invalid_config, std::string(key) + " is not a boolean key");
  }
  return e.flag;
}

std::chrono::milliseconds Config::get_duration(std::string_view key) const {
  const Entry& e = entry(key);
  if (e.key.type != Type::duration_ms) {
    throw Error(errc::invalid_config, std::string(key) + " is not a duration key");
  }
  return std::chrono::milliseconds(e.number);
}

Source Config::source(std::string_view key) const { return entry(key).source; }

std::vector<std::tuple<std::string, std::string, std::string>> Config::show() const {
  std::vector<std::tuple<std::string, std::string, std::string>> rows;
  rows.reserve(entries_.size());
  for (const Entry& e : entries_) {
    rows.emplace_back(e.key.name, e.key.secret ? mask_secret(e.raw) : e.raw, e.source.to_string());
  }
  return rows;
}

std::map<std::string, std::string> process_environment() {
  std::map<std::string, std::string> env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string_view text(*entry);
    const auto eq = text.find('=');
    if (eq == std::string_view::npos) continue;
    env.emplace(std::string(text.substr(0, eq)), std::string(text.substr(eq + 1)));
  }
  return env;
}

std::optional<std::string> secret_from_environment(const std::string& name) {
  if (name.rfind("CONVEYOR_", 0) != 0 || name.size() == 9) return std::nullopt;
  const char* value = std::getenv(name.c_str());
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

std::string mask_secret(std::string_view value) {
  if (value.empty()) return "";
  const std::string redacted = logging::redact_url(value);
  // A URL or conninfo is worth showing with its password masked; anything
  // else that is secret is masked whole.
  if (value.find("://") != std::string_view::npos || redacted != value) return redacted;
  return "****";
}

EnvFileArgs split_env_file_args(const std::vector<std::string>& args) {
  EnvFileArgs out;
  constexpr std::string_view flag = "--env-file";
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == flag) {
      if (i + 1 >= args.size() || args[i + 1].empty()) {
        throw Error(errc::bad_input, "--env-file needs a path");
      }
      out.env_files.emplace_back(args[++i]);
    } else if (arg.rfind(std::string(flag) + "=", 0) == 0) {
      const std::string path = arg.substr(flag.size() + 1);
      if (path.empty()) throw Error(errc::bad_input, "--env-file needs a path");
      out.env_files.emplace_back(path);
    } else if (arg == "--") {
      // Everything after "--" belongs to the program, even "--env-file".
      out.args.insert(out.args.end(), args.begin() + static_cast<std::ptrdiff_t>(i), args.end());
      break;
    } else {
      out.args.push_back(arg);
    }
  }
  return out;
}

EnvFileArgs split_env_file_args(int argc, const char* const* argv) {
  if (argc <= 0) return {};
  std::vector<std::string> rest(argv + 1, argv + argc);
  EnvFileArgs out = split_env_file_args(rest);
  out.args.insert(out.args.begin(), argv[0]);
  return out;
}

std::string closest_match(std::string_view name, const std::vector<std::string>& candidates) {
  std::string best;
  std::size_t best_distance = SIZE_MAX;
  for (const auto& candidate : candidates) {
    const std::size_t d = edit_distance(name, candidate);
    if (d < best_distance) {
      best_distance = d;
      best = candidate;
    }
  }
  // Beyond a third of the name it is a different word, not a typo.
  const std::size_t limit = std::max<std::size_t>(2, name.size() / 3);
  return best_distance <= limit ? best : std::string();
}

}  // namespace conveyor::config
