#pragma once
// conveyor::logging — one named spdlog logger per module, all writing to
// stderr through shared sinks, as text for people or one JSON object per
// line for log collectors.
//
// Thread-safe: setup() and get() may be called from any thread; loggers are
// spdlog's multi-threaded loggers. setup() re-applies the format and level to
// loggers created before it.
#include <memory>
#include <string>
#include <string_view>

#include <spdlog/logger.h>
#include <spdlog/sinks/sink.h>

namespace conveyor::logging {

enum class Format { text, json };
enum class Level { trace, debug, info, warn, error };

// "text"|"json" and "trace"|"debug"|"info"|"warn"|"error"; throw
// Error(errc::bad_input) naming the bad value.
Format parse_format(std::string_view text);
Level parse_level(std::string_view text);

// Configures every Conveyor logger. json: {"time","level","service","logger","msg"}
// per line, time in RFC 3339 UTC with milliseconds.
void setup(Format format, Level level, const std::string& service);
// Same, writing to `sink` instead of stderr (tests).
void setup(Format format, Level level, const std::string& service, spdlog::sink_ptr sink);

// The logger of a module ("http", "db", "relay"...), created on first use.
std::shared_ptr<spdlog::logger> get(const std::string& module);

// Makes a URL or libpq connection string safe to log: the password of
// "scheme://user:password@host" and any "password=value" (conninfo keyword
// or query parameter) become "****". Other text is returned unchanged.
std::string redact_url(std::string_view text);

}  // namespace conveyor::logging
