#include "conveyor/logging/logging.hpp"

#include <ctime>
#include <map>
#include <mutex>

#include <nlohmann/json.hpp>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

#include "conveyor/error/error.hpp"

namespace conveyor::logging {
namespace {

const char* level_name(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace:
      return "trace";
    case spdlog::level::debug:
      return "debug";
    case spdlog::level::info:
      return "info";
    case spdlog::level::warn:
      return "warn";
    case spdlog::level::err:
      return "error";
    case spdlog::level::critical:
      return "critical";
    default:
      return "off";
  }
}

spdlog::level::level_enum to_spdlog(Level level) {
  switch (level) {
    case Level::trace:
      return spdlog::level::trace;
    case Level::debug:
      return spdlog::level::debug;
    case Level::info:
      return spdlog::level::info;
    case Level::warn:
      return spdlog::level::warn;
    case Level::error:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

// "2024-05-01T12:00:00.123Z"
std::string rfc3339_utc_ms(spdlog::log_clock::time_point tp) {
  const auto since_epoch = tp.time_since_epoch();
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
  const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(since_epoch - seconds);
  const std::time_t t = static_cast<std::time_t>(seconds.count());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  const auto n = std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                               tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(millis.count()));
  return std::string(buf, static_cast<std::size_t>(n));
}

// One JSON object per line. Built with nlohmann::json so every field is
// escaped correctly whatever the message holds; invalid UTF-8 is replaced
// rather than throwing inside the logger.
class JsonFormatter final : public spdlog::formatter {
 public:
  explicit JsonFormatter(std::string service) : service_(std::move(service)) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    nlohmann::ordered_json line;
    line["time"] = rfc3339_utc_ms(msg.time);
    line["level"] = level_name(msg.level);
    line["service"] = service_;
    line["logger"] = std::string(msg.logger_name.data(), msg.logger_name.size());
    line["msg"] = std::string(msg.payload.data(), msg.payload.size());
    const std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    dest.append(text.data(), text.data() + text.size());
  }

  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(service_); }

 private:
  std::string service_;
};

// Process-wide logging settings and the loggers made from them.
struct State {
  std::mutex mutex;
  Format format = Format::text;
  Level level = Level::info;
  std::string service = "conveyor";
  spdlog::sink_ptr sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  std::map<std::string, std::shared_ptr<spdlog::logger>> loggers;
};

State& state() {
  static State instance;
  return instance;
}

std::unique_ptr<spdlog::formatter> make_formatter(const State& s) {
  if (s.format == Format::json) return std::make_unique<JsonFormatter>(s.service);
  return std::make_unique<spdlog::pattern_formatter>("%Y-%m-%dT%H:%M:%S.%eZ %-5l [" + s.service + "/%n] %v",
                                                     spdlog::pattern_time_type::utc);
}

// Caller holds s.mutex.
void configure(const State& s, spdlog::logger& logger) {
  logger.sinks().clear();
  logger.sinks().push_back(s.sink);
  logger.set_formatter(make_formatter(s));
  logger.set_level(to_spdlog(s.level));
  logger.flush_on(spdlog::level::warn);
}

}  // namespace

Format parse_format(std::string_view text) {
  if (text == "text") return Format::text;
  if (text == "json") return Format::json;
  throw Error(errc::bad_input, "unknown log format '" + std::string(text) + "' (expected text or json)");
}

Level parse_level(std::string_view text) {
  if (text == "trace") return Level::trace;
  if (text == "debug") return Level::debug;
  if (text == "info") return Level::info;
  if (text == "warn") return Level::warn;
  if (text == "error") return Level::error;
  throw Error(errc::bad_input,
              "unknown log level '" + std::string(text) + "' (expected trace, debug, info, warn or error)");
}

void setup(Format format, Level level, const std::string& service) {
  setup(format, level, service, std::make_shared<spdlog::sinks::stderr_sink_mt>());
}

void setup(Format format, Level level, const std::string& service, spdlog::sink_ptr sink) {
  State& s = state();
  std::lock_guard lock(s.mutex);
  s.format = format;
  s.level = level;
  s.service = service;
  s.sink = std::move(sink);
  for (auto& [name, logger] : s.loggers) configure(s, *logger);
}

std::shared_ptr<spdlog::logger> get(const std::string& module) {
  State& s = state();
  std::lock_guard lock(s.mutex);
  auto it = s.loggers.find(module);
  if (it != s.loggers.end()) return it->second;
  // Not registered with spdlog's global registry: our map owns them, so two
  // libraries cannot collide on a name and setup() reaches all of ours.
  auto logger = std::make_shared<spdlog::logger>(module);
  configure(s, *logger);
  s.loggers.emplace(module, logger);
  return logger;
}

std::string redact_url(std::string_view text) {
  std::string out(text);
  // scheme://user:password@host
  const auto scheme_end = out.find("://");
  if (scheme_end != std::string::npos) {
    const auto authority_begin = scheme_end + 3;
    auto authority_end = out.find_first_of("/?#", authority_begin);
    if (authority_end == std::string::npos) authority_end = out.size();
    const auto at = out.rfind('@', authority_end);
    if (at != std::string::npos && at >= authority_begin) {
      const auto colon = out.find(':', authority_begin);
      if (colon != std::string::npos && colon < at) {
        out.replace(colon + 1, at - colon - 1, "****");
      }
    }
  }
  // password=value and sslpassword=value (the client key's passphrase):
  // libpq keyword/value strings (spaces allowed around '=') and URI query
  // parameters.
  for (const std::string_view key : {std::string_view("password"), std::string_view("sslpassword")}) {
    std::size_t pos = 0;
    while ((pos = out.find(key, pos)) != std::string::npos) {
      const bool at_word_start =
          pos == 0 || out[pos - 1] == ' ' || out[pos - 1] == '?' || out[pos - 1] == '&' || out[pos - 1] == '\t';
      std::size_t value_begin = pos + key.size();
      while (value_begin < out.size() && (out[value_begin] == ' ' || out[value_begin] == '\t')) {
        ++value_begin;
      }
      if (!at_word_start || value_begin >= out.size() || out[value_begin] != '=') {
        pos += key.size();
        continue;
      }
      ++value_begin;
      while (value_begin < out.size() && (out[value_begin] == ' ' || out[value_begin] == '\t')) {
        ++value_begin;
      }
      std::size_t value_end;
      if (value_begin < out.size() && out[value_begin] == '\'') {
        // Quoted conninfo value; \' escapes a quote inside it.
        value_end = value_begin + 1;
        while (value_end < out.size() && out[value_end] != '\'') {
          value_end += out[value_end] == '\\' ? 2 : 1;
        }
        value_end = std::min(value_end + 1, out.size());
      } else {
        value_end = out.find_first_of(" \t&#", value_begin);
        if (value_end == std::string::npos) value_end = out.size();
      }
      out.replace(value_begin, value_end - value_begin, "****");
      pos = value_begin + 4;
    }
  }
  return out;
}

}  // namespace conveyor::logging
