// Topic names (see topics.hpp for the rule).
#include "conveyor/bus/topics.hpp"

#include <algorithm>

#include "conveyor/model/status.hpp"

namespace conveyor::bus {

namespace {

// Kafka topic names are at most 249 characters of [A-Za-z0-9._-]; a name
// part of [A-Za-z0-9_-] also keeps the ".job." separator unambiguous.
bool valid_name_part(std::string_view name) {
  return !name.empty() && name.size() <= 200 && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

}  // namespace

std::string topic_name(const std::string& prefix, std::string_view suffix) {
  return prefix + "." + std::string(suffix);
}

std::string job_event_topic(const std::string& prefix, std::string_view type) {
  if (!type.starts_with(kJobEventTypePrefix)) return "";
  const std::string_view name = type.substr(kJobEventTypePrefix.size());
  if (!valid_name_part(name)) return "";
  return prefix + ".job." + std::string(name);
}

std::string topic_for(const std::string& prefix, std::string_view stream, std::string_view type) {
  std::string topic = job_event_topic(prefix, type);
  return topic.empty() ? topic_name(prefix, stream) : topic;
}

const std::vector<std::string>& job_event_types() {
  static const std::vector<std::string> types = [] {
    std::vector<std::string> out;
    for (const model::JobStatus s : model::kAllStatuses) {
      out.push_back(std::string(kJobEventTypePrefix) + std::string(model::to_string(s)));
    }
    for (const char* name : {"cancel_requested", "restart_requested", "held", "released"}) {
      out.push_back(std::string(kJobEventTypePrefix) + name);
    }
    return out;
  }();
  return types;
}

std::vector<std::string> job_event_topics(const std::string& prefix, const std::vector<std::string>& types) {
  std::vector<std::string> topics;
  for (const std::string& type : types) {
    if (std::string topic = job_event_topic(prefix, type); !topic.empty()) topics.push_back(std::move(topic));
  }
  return topics;
}

std::vector<std::string> all_topics(const std::string& prefix) {
  std::vector<std::string> topics = job_event_topics(prefix, job_event_types());
  topics.push_back(topic_name(prefix, kParametersTopic));
  topics.push_back(topic_name(prefix, kControlTopic));
  return topics;
}

}  // namespace conveyor::bus
