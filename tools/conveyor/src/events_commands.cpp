// `conveyor events tail`: the CloudEvents on the Kafka topics, as they come
// (DESIGN §5, §6); `--topic jobs` is the topic of every job event type. A consumer group of its own per run that never
// commits, so tailing takes nothing from the services. Stops on Ctrl-C, after --count events or after --for seconds.
#include <unistd.h>

#include <chrono>
#include <ostream>

#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "conveyor/bus/cloudevent.hpp"
#include "conveyor/bus/kafka.hpp"
#include "conveyor/bus/topics.hpp"
#include "conveyor/error/error.hpp"

namespace conveyor::cli {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kEventsUsage =
    "usage: conveyor events tail [--topic jobs|parameters|control|all] [--from-beginning]\n"
    "                            [--job ID] [--count N] [--for SECONDS|DURATION]\n"
    "       conveyor events topics\n"
    "tail prints one line per event (--json: the CloudEvents envelope) until Ctrl-C,\n"
    "N events, or the --for time (60, 30s, 10m; 0: no limit); --topic jobs is every job event type's topic\n"
    "(<prefix>.job.<type>). topics lists every topic, one a line.\n";

// "io.conveyor.job.done job 3 processed -> done (conveyor-publication)"
std::string describe(const bus::CloudEvent& e) {
  std::string line = display_time(e.time.empty() ? std::nullopt : std::optional(e.time));
  line += " " + e.type;
  if (!e.subject.empty()) line += " job " + e.subject;
  const json& d = e.data;
  if (d.is_object()) {
    if (d.contains("to_status")) {
      line += " " + (d.value("from_status", json()).is_string() ? d["from_status"].get<std::string>() : "(insert)") +
              " -> " + d.value("to_status", std::string("?"));
    }
    if (d.value("reemitted", false)) line += " [re-emitted]";
    if (d.contains("changed_keys") && d["changed_keys"].is_array()) {
      std::string keys;
      for (const auto& k : d["changed_keys"])
        keys += (keys.empty() ? "" : ",") + (k.is_string() ? k.get<std::string>() : k.dump());
      line += " " + keys;
    }
    if (d.contains("actor") && d["actor"].is_string()) line += " (" + d["actor"].get<std::string>() + ")";
  }
  return line;
}

// The topics of --topic `which`; jobs: the topic of every job event type
// the database emits (topics.hpp).
std::vector<std::string> tail_topics(const std::string& prefix, const std::string& which) {
  if (which == "all") return bus::all_topics(prefix);
  if (which == bus::kJobsTopic) return bus::job_event_topics(prefix, bus::job_event_types());
  if (which == bus::kParametersTopic || which == bus::kControlTopic) return {bus::topic_name(prefix, which)};
  throw FieldError("--topic", "--topic: expected jobs, parameters, control or all, got '" + which + "'");
}

int tail(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "events tail", {"--topic", "--job", "--count", "--for"}, {"--from-beginning"});
  if (!o.positional.empty())
    throw FieldError(o.positional[0], "events tail: unexpected argument '" + o.positional[0] + "'");
  const std::string which = o.get("--topic").value_or("all");
  const std::string prefix = ctx.config.get_string("CONVEYOR_TOPIC_PREFIX");
  const std::vector<std::string> topics = tail_topics(prefix, which);
  const auto job = o.get("--job");
  if (job && job->find_first_not_of("0123456789") != std::string::npos) {
    throw FieldError("--job", "--job: '" + *job + "' is not a job id");
  }
  const std::int64_t count = int_option(o, "--count", 0, 0, 1'000'000'000);
  const auto for_value = o.get("--for");
  const std::int64_t seconds = for_value ? duration_option("--for", *for_value, true) : 0;
  const std::string brokers = ctx.config.get_string("CONVEYOR_KAFKA_BROKERS");
  if (brokers.empty())
    throw Error(errc::invalid_config, "CONVEYOR_KAFKA_BROKERS is not set: export it or `. .conveyor/env`");

  bus::ConsumerOptions co;
  co.brokers = brokers;
  co.group_id = "conveyor-cli-tail-" + std::to_string(::getpid()) + "-" +
                std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
  co.topics = topics;
  co.client_id = "conveyor-cli";
  co.auto_offset_reset = o.has("--from-beginning") ? "earliest" : "latest";
  bus::Consumer consumer(co);

  const InterruptGuard guard;
  const auto until = seconds > 0 ? Clock::now() + std::chrono::seconds(seconds) : Clock::time_point::max();
  std::int64_t shown = 0;
  if (!ctx.json) ctx.err << "tailing " << topics.size() << " topic(s) on " << brokers << " (Ctrl-C to stop)\n";
  while (!InterruptGuard::interrupted() && Clock::now() < until && (count == 0 || shown < count)) {
    for (const auto& m : consumer.poll(100, std::chrono::milliseconds(200))) {
      bus::CloudEvent e;
      try {
        e = bus::decode(m.value);
      } catch (const Error& bad) {
        ctx.err << "conveyor: skipping a malformed message at " << m.topic << "/" << m.partition << "@" << m.offset
                << ": " << bad.what() << "\n";
        continue;
      }
      if (job && e.subject != *job) continue;
      if (ctx.json) {
        ctx.out << bus::encode(e) << "\n";
      } else {
        ctx.out << describe(e) << "\n";
      }
      ctx.out.flush();
      if (count > 0 && ++shown >= count) break;
    }
  }
  return kExitOk;
}

// Every topic, one a line (--json: an array): for a broker that does not
// create topics on first use.
int topics(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "events topics", {});
  if (!o.positional.empty())
    throw FieldError(o.positional[0], "events topics: unexpected argument '" + o.positional[0] + "'");
  const std::vector<std::string> names = bus::all_topics(ctx.config.get_string("CONVEYOR_TOPIC_PREFIX"));
  if (ctx.json) {
    ctx.out << json(names).dump() << "\n";
  } else {
    for (const std::string& name : names) ctx.out << name << "\n";
  }
  return kExitOk;
}

}  // namespace

int events_command(Context& ctx, const std::vector<std::string>& args) {
  return dispatch(ctx, args, "events", kEventsUsage, {{"tail", tail}, {"topics", topics}});
}

}  // namespace conveyor::cli
