#include "conveyor/bus/cloudevent.hpp"

#include <algorithm>
#include <limits>

#include "conveyor/error/error.hpp"
#include "conveyor/text/text.hpp"

namespace conveyor::bus {
namespace {

using nlohmann::json;

[[noreturn]] void reject(const std::string& what) { throw Error(errc::bad_input, "cloudevent: " + what); }

// A required context attribute: present, a string, not empty.
std::string required_string(const json& envelope, const char* name) {
  auto it = envelope.find(name);
  if (it == envelope.end() || it->is_null()) {
    reject(std::string("missing required attribute '") + name + "'");
  }
  if (!it->is_string()) {
    reject(std::string("attribute '") + name + "' must be a string, not " + it->type_name());
  }
  std::string value = it->get<std::string>();
  if (value.empty()) reject(std::string("attribute '") + name + "' must not be empty");
  return value;
}

// An optional attribute: absent or null gives "" (the JSON format treats a
// null attribute as absent); otherwise it must be a string.
std::string optional_string(const json& envelope, const char* name) {
  auto it = envelope.find(name);
  if (it == envelope.end() || it->is_null()) return {};
  if (!it->is_string()) {
    reject(std::string("attribute '") + name + "' must be a string, not " + it->type_name());
  }
  return it->get<std::string>();
}

bool is_json_content_type(const std::string& content_type) {
  // "application/json", "application/cloudevents+json; charset=utf-8", ...
  std::string media = content_type.substr(0, content_type.find(';'));
  while (!media.empty() && media.back() == ' ') media.pop_back();
  if (media.empty() || media == "application/json" || media == "text/json") return true;
  return media.size() >= 5 && media.compare(media.size() - 5, 5, "+json") == 0;
}

}  // namespace

namespace {

// `value` as a JSON string, as json::dump writes it: plain printable ASCII
// is copied between quotes (every attribute the relay writes: ids, types,
// sources, times), anything else goes through the library (escapes, UTF-8
// kept, an invalid byte replaced: a stray byte in a job's output must not
// make the event unpublishable).
void append_string(std::string& out, const std::string& value) {
  const bool plain = std::all_of(value.begin(), value.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u < 0x7f && c != '"' && c != '\\';
  });
  if (!plain) {
    out += json(value).dump(-1, ' ', false, json::error_handler_t::replace);
    return;
  }
  out += '"';
  out += value;
  out += '"';
}

}  // namespace

// The attributes in the order of their names, as a JSON object of them
// would be dumped (data, datacontenttype, id, schemaversion, source,
// specversion, subject, time, type), written straight into one string: the
// relay encodes every event of every job.
std::string encode(const CloudEvent& event) {
  std::string out;
  out.reserve(160 + event.data_json.size() + event.id.size() + event.source.size() + event.type.size() +
              event.subject.size() + event.time.size());
  out += '{';
  const auto key = [&out](const char* name) {
    if (out.size() > 1) out += ',';
    out += '"';
    out += name;
    out += "\":";
  };
  // A text of null is no data, as a null `data` is.
  if (!event.data_json.empty()) {
    if (event.data_json != "null") {
      key("data");
      out += event.data_json;
    }
  } else if (!event.data.is_null()) {
    key("data");
    out += event.data.dump(-1, ' ', false, json::error_handler_t::replace);
  }
  if (!event.datacontenttype.empty()) {
    key("datacontenttype");
    append_string(out, event.datacontenttype);
  }
  key("id");
  append_string(out, event.id);
  key("schemaversion");
  out += std::to_string(event.schemaversion);
  key("source");
  append_string(out, event.source);
  key("specversion");
  out += "\"1.0\"";
  if (!event.subject.empty()) {
    key("subject");
    append_string(out, event.subject);
  }
  if (!event.time.empty()) {
    key("time");
    append_string(out, event.time);
  }
  key("type");
  append_string(out, event.type);
  out += '}';
  return out;
}

CloudEvent decode(std::string_view message) {
  json envelope;
  try {
    text::JsonLimits limits;
    limits.max_bytes = kMaxEventBytes;
    limits.max_depth = kMaxEventDepth;
    envelope = text::parse_json(message, limits);
  } catch (const Error& e) {
    reject(e.what());
  }
  if (!envelope.is_object()) reject(std::string("not a JSON object but ") + envelope.type_name());

  std::string specversion = required_string(envelope, "specversion");
  if (specversion != "1.0") reject("unsupported specversion '" + specversion + "', expected '1.0'");

  CloudEvent event;
  event.id = required_string(envelope, "id");
  event.source = required_string(envelope, "source");
  event.type = required_string(envelope, "type");
  event.subject = optional_string(envelope, "subject");
  event.time = optional_string(envelope, "time");
  if (!event.time.empty() && !text::is_rfc3339(event.time)) {
    reject("attribute 'time' is not an RFC 3339 timestamp: '" + event.time.substr(0, 64) +
           (event.time.size() > 64 ? "...'" : "'"));
  }
  event.datacontenttype = optional_string(envelope, "datacontenttype");
  // The JSON format says an absent datacontenttype means JSON data.
  if (event.datacontenttype.empty()) event.datacontenttype = "application/json";

  if (auto it = envelope.find("schemaversion"); it != envelope.end() && !it->is_null()) {
    if (!it->is_number_integer()) {
      reject(std::string("attribute 'schemaversion' must be an integer, not ") + it->type_name());
    }
    auto version = it->get<std::int64_t>();
    if (version < 1 || version > std::numeric_limits<int>::max()) {
      reject("attribute 'schemaversion' out of range: " + std::to_string(version));
    }
    event.schemaversion = static_cast<int>(version);
  } else {
    // Events from before schema versioning carry none: they are version 1.
    event.schemaversion = 1;
  }

  if (envelope.contains("data_base64")) {
    reject("'data_base64' is not supported: Conveyor events carry JSON data");
  }
  if (auto it = envelope.find("data"); it != envelope.end()) {
    // In the JSON format, data of a non-JSON content type is carried as a string.
    if (!is_json_content_type(event.datacontenttype) && !it->is_string() && !it->is_null()) {
      reject("attribute 'data' must be a string for datacontenttype '" + event.datacontenttype + "', not " +
             it->type_name());
    }
    event.data = std::move(*it);  // depth is bounded by the parse; no copy anyway
  }
  return event;
}

}  // namespace conveyor::bus
