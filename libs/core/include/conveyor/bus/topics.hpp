#pragma once
// Kafka topic names: the one place that says which topic an event goes to.
// Job events have a topic per event type, "<prefix>.job.<name>" for the
// CloudEvent type "io.conveyor.job.<name>" (DESIGN §5), so a service
// subscribes to the types it acts on and reads nothing else; the others are
// "<prefix>.<stream>" ("<prefix>.parameters", "<prefix>.control"). The
// prefix (CONVEYOR_TOPIC_PREFIX, default "conveyor") keeps test runs apart.
// Thread-safe: functions of their arguments and constant data.
#include <string>
#include <string_view>
#include <vector>

namespace conveyor::bus {

// Streams: the `topic` column of conveyor.outbox. Job events are written to
// the stream "jobs" and published to the topic of their type.
inline constexpr const char* kJobsTopic = "jobs";
inline constexpr const char* kParametersTopic = "parameters";
inline constexpr const char* kControlTopic = "control";
inline constexpr std::string_view kJobEventTypePrefix = "io.conveyor.job.";

// "<prefix>.<suffix>".
std::string topic_name(const std::string& prefix, std::string_view suffix);

// "<prefix>.job.<name>" for the type "io.conveyor.job.<name>"; "" when
// `type` is not a job event type or <name> is not a valid topic name part
// (empty, longer than 200 characters or not [A-Za-z0-9_-]).
std::string job_event_topic(const std::string& prefix, std::string_view type);

// The topic of an event of stream `stream` (an outbox row's topic) and
// CloudEvent type `type`: its job event topic, else "<prefix>.<stream>".
std::string topic_for(const std::string& prefix, std::string_view stream, std::string_view type);

// Every job event type the database emits: one per status
// (io.conveyor.job.<status>, the status trigger and the reconciler), and
// cancel_requested / restart_requested (canceled_at changes), held /
// released (held_at changes). unit_bus checks the migrations emit no other.
const std::vector<std::string>& job_event_types();

// The job event topics of `types` (types that are not job events are left
// out), in the order given: what a consumer of those types subscribes to.
std::vector<std::string> job_event_topics(const std::string& prefix, const std::vector<std::string>& types);

// Every topic Conveyor uses under `prefix`: the job event topics, then
// parameters and control (`conveyor events topics`, `events tail`).
std::vector<std::string> all_topics(const std::string& prefix);

}  // namespace conveyor::bus
