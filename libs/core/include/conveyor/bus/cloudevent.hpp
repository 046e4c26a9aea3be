#pragma once
// CloudEvents 1.0 JSON envelope (structured mode) for every Conveyor event.
// Required attributes: specversion ("1.0"), id, source, type. Conveyor also
// sets time (RFC 3339), subject (job id), datacontenttype and the extension
// attribute `schemaversion` so old and new services can run side by side.
// Thread-safe: plain values.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace conveyor::bus {

inline constexpr int kEventSchemaVersion = 1;
// The Kafka protocol binding's structured mode: every event record carries
// the header `content-type: application/cloudevents+json`, which is how the
// CloudEvents SDKs (and kcat users) know the value is a whole envelope.
inline constexpr const char* kContentTypeHeader = "content-type";
inline constexpr const char* kStructuredContentType = "application/cloudevents+json";
// Limits on a received envelope, checked before it is parsed: larger or
// deeper messages are refused (decode throws), never recursed into.
inline constexpr std::size_t kMaxEventBytes = 1024 * 1024;
inline constexpr int kMaxEventDepth = 100;

struct CloudEvent {
  std::string id;
  std::string source;
  std::string type;     // e.g. "io.conveyor.job.processed"
  std::string subject;  // job id, or empty
  std::string time;     // RFC 3339, or empty
  std::string datacontenttype = "application/json";
  int schemaversion = kEventSchemaVersion;
  nlohmann::json data;  // object or null
  // The data as JSON text, sent as it is instead of `data` when not empty.
  // For a sender that already holds the text of one valid JSON value (the
  // outbox relay: PostgreSQL's jsonb text), so that no parse and dump runs
  // per event; the sender vouches for it. decode() never sets it.
  std::string data_json;
};

// Serialises to the JSON text of the structured envelope.
std::string encode(const CloudEvent& event);
// Parses and validates an envelope. Throws conveyor::Error(bad_input) naming
// what is wrong: larger than kMaxEventBytes, nested deeper than
// kMaxEventDepth, not JSON, not an object, a required attribute missing or
// not a string, specversion other than "1.0", a `time` that is not RFC 3339.
// Linear in the size of the text; nothing recursive runs before the limits
// are checked.
CloudEvent decode(std::string_view text);

}  // namespace conveyor::bus
