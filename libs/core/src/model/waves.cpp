#include "conveyor/model/waves.hpp"

#include <algorithm>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "conveyor/error/error.hpp"
#include "conveyor/model/job_type.hpp"

namespace conveyor::model {
namespace {

using nlohmann::json;

// Dependencies the jobs themselves showed (depends_on across types) in the
// last 30 days, besides the types' triggers.
constexpr db::Statement kObservedEdges{
    "model_wave_edges",
    "SELECT DISTINCT u.job_type, d.job_type FROM conveyor.job d JOIN conveyor.job u ON u.id = ANY(d.depends_on) "
    "WHERE d.depends_on <> '{}' AND d.created_at > now() - interval '30 days' AND u.job_type <> d.job_type"};

constexpr db::Statement kLoadRun{
    "model_wave_run_load",
    "SELECT id, waves::text, current, threshold, state, started_by, " CONVEYOR_RFC3339("started_at") ", " CONVEYOR_RFC3339("updated_at") " "
    "FROM conveyor.wave_run ORDER BY (state = 'running') DESC, id DESC LIMIT 1"};

// The running run, locked; a second monitor replica skips it.
constexpr db::Statement kLockRunning{
    "model_wave_run_lock",
    "SELECT id, waves::text, current, threshold, state, started_by, " CONVEYOR_RFC3339("started_at") ", " CONVEYOR_RFC3339("updated_at") " "
    "FROM conveyor.wave_run WHERE state = 'running' FOR UPDATE SKIP LOCKED"};

constexpr db::Statement kInsertRun{
    "model_wave_run_insert",
    "INSERT INTO conveyor.wave_run (waves, threshold) VALUES ($1::jsonb, $2) "
    "ON CONFLICT ((true)) WHERE state = 'running' DO NOTHING "
    "RETURNING id, waves::text, current, threshold, state, started_by, " CONVEYOR_RFC3339(
        "started_at") ", " CONVEYOR_RFC3339("updated_at")};

constexpr db::Statement kStopRun{
    "model_wave_run_stop",
    "UPDATE conveyor.wave_run SET state = 'stopped', updated_at = now() WHERE state = 'running' "
    "RETURNING id, waves::text, current, threshold, state, started_by, " CONVEYOR_RFC3339(
        "started_at") ", " CONVEYOR_RFC3339("updated_at")};

constexpr db::Statement kMoveRun{
    "model_wave_run_move", "UPDATE conveyor.wave_run SET current = $2, state = $3, updated_at = now() WHERE id = $1"};

// The backlog of a wave: its jobs not yet processed that can still progress.
// Left out, as they would never drain and the run would never advance: a job
// whose cancel is pending (on its way out), and a ready job admission leaves
// on purpose (conveyor.job_admission_eligible, admission's own rule): held
// or of a paused type or pool. It is asked at 'infinity': a back-off
// not_before ends, so that job still counts; the wave's types are the run's
// choice, so job_types_list is not applied (NULL).
constexpr db::Statement kBacklog{"model_wave_backlog",
                                 "SELECT count(*) FROM conveyor.job j WHERE j.job_type = ANY($1::text[]) "
                                 "AND j.status IN ('initialized', 'configured', 'ready', 'queued', 'started') "
                                 "AND j.canceled_at IS NULL "
                                 "AND (j.status <> 'ready' OR conveyor.job_admission_eligible(j, 'infinity', NULL, "
                                 "(SELECT conveyor.paused_queues())))"};

WaveRun to_run(const db::Row r) {
  WaveRun w;
  w.id = r[0].as_int();
  try {
    w.waves = json::parse(r[1].as_string()).get<std::vector<std::vector<std::string>>>();
  } catch (const json::exception& e) {  // written by hand? the monitor must not die of it
    throw Error(errc::internal, "conveyor.wave_run " + std::to_string(w.id) +
                                    ": waves must be an array of arrays of job type names (" + e.what() + ")");
  }
  w.current = static_cast<int>(r[2].as_int());
  w.threshold = r[3].as_int();
  w.state = r[4].as_string();
  w.started_by = r[5].as_string();
  w.started_at = r[6].as_string();
  w.updated_at = r[7].as_string();
  return w;
}

std::int64_t backlog_of(db::Tx& tx, const std::vector<std::string>& types) {
  return tx.exec(kBacklog, {types})[0][0].as_int();
}

// job_types_list alone, so the monitor needs UPDATE on that one column
// (migration 20261210000400) and no other parameter. The row's CHECKs judge
// it and its trigger records the history and the parameters event, as for
// patch_system_parameters; the names come from job_type_waves.
constexpr db::Statement kSetTypesList{"model_wave_set_job_types_list",
                                      "UPDATE conveyor.system_parameters SET job_types_list = $1::text[] WHERE id"};

void admit(db::Tx& tx, const std::optional<std::vector<std::string>>& list) { tx.exec(kSetTypesList, {list}); }

}  // namespace

JobTypeWaves job_type_waves(db::Tx& tx) {
  std::vector<std::string> types;
  std::map<std::string, std::set<std::string>> upstream;
  for (const auto& t : load_job_types(tx)) {
    if (!t.enabled) continue;
    types.push_back(t.name);
    // A trigger of t names the type it creates: t is upstream of that type.
    for (const auto& trig : t.triggers) {
      if (trig.contains("job_type")) upstream[trig.at("job_type").get<std::string>()].insert(t.name);
    }
  }
  for (const db::Row r : tx.exec(kObservedEdges)) upstream[r[1].as_string()].insert(r[0].as_string());
  std::sort(types.begin(), types.end());
  const std::set<std::string> known(types.begin(), types.end());

  JobTypeWaves out;
  // A type joins the first wave after all of its (enabled) upstream types.
  std::set<std::string> placed;
  std::vector<std::string> left = types;
  while (!left.empty()) {
    std::vector<std::string> layer, rest;
    for (const auto& t : left) {
      bool ready = true;
      const auto it = upstream.find(t);
      if (it != upstream.end()) {
        for (const auto& u : it->second) {
          if (known.count(u) && !placed.count(u)) ready = false;
        }
      }
      (ready ? layer : rest).push_back(t);
    }
    if (layer.empty()) {  // a cycle: what is left goes last, together
      out.waves.push_back(rest);
      break;
    }
    placed.insert(layer.begin(), layer.end());
    out.waves.push_back(layer);
    left = rest;
  }
  for (const auto& t : types) {
    std::vector<std::string> ups;
    const auto it = upstream.find(t);
    if (it != upstream.end()) {
      for (const auto& u : it->second) {
        if (known.count(u)) ups.push_back(u);
      }
    }
    if (!ups.empty()) out.upstream.emplace_back(t, ups);
  }
  return out;
}

std::vector<std::string> admitted_types(const std::vector<std::vector<std::string>>& waves, std::size_t n) {
  std::vector<std::string> list;
  for (std::size_t i = 0; i < n && i < waves.size(); ++i) list.insert(list.end(), waves[i].begin(), waves[i].end());
  std::sort(list.begin(), list.end());
  return list;
}

std::optional<WaveRun> load_wave_run(db::Tx& tx) {
  const db::Result r = tx.exec(kLoadRun);
  if (r.empty()) return std::nullopt;
  WaveRun w = to_run(r[0]);
  w.backlog = backlog_of(tx, w.waves[static_cast<std::size_t>(w.current - 1)]);
  return w;
}

WaveRun start_waves(db::Tx& tx, std::int64_t threshold) {
  if (threshold < 0)
    throw FieldError("threshold", "wave threshold must be 0 or more, got " + std::to_string(threshold));
  const JobTypeWaves layers = job_type_waves(tx);
  if (layers.waves.empty()) throw Error(errc::not_found, "no enabled job type: there are no waves to run");
  const db::Result r = tx.exec(kInsertRun, {json(layers.waves).dump(), threshold});
  if (r.empty()) {
    const auto running = load_wave_run(tx);
    throw Error(errc::conflict, "a wave run is already running (id " + std::to_string(running ? running->id : 0) +
                                    ", wave " + std::to_string(running ? running->current : 0) +
                                    "): stop it first (conveyor system waves --stop)");
  }
  WaveRun w = to_run(r[0]);
  admit(tx, admitted_types(w.waves, 1));
  w.backlog = backlog_of(tx, w.waves[0]);
  return w;
}

std::optional<WaveRun> stop_waves(db::Tx& tx) {
  const db::Result r = tx.exec(kStopRun);
  if (r.empty()) return std::nullopt;
  WaveRun w = to_run(r[0]);
  w.backlog = backlog_of(tx, w.waves[static_cast<std::size_t>(w.current - 1)]);
  return w;
}

std::optional<WaveStep> advance_waves(db::Tx& tx) {
  const db::Result r = tx.exec(kLockRunning);
  if (r.empty()) return std::nullopt;
  const WaveRun w = to_run(r[0]);
  WaveStep step;
  step.run_id = w.id;
  step.from = w.current;
  step.backlog = backlog_of(tx, w.waves[static_cast<std::size_t>(w.current - 1)]);
  if (step.backlog > w.threshold) return std::nullopt;
  if (static_cast<std::size_t>(w.current) >= w.waves.size()) {
    admit(tx, std::nullopt);  // every type again, as before the restart
    tx.exec(kMoveRun, {w.id, w.current, "done"});
    step.done = true;
    return step;
  }
  step.to = w.current + 1;
  admit(tx, admitted_types(w.waves, static_cast<std::size_t>(step.to)));
  tx.exec(kMoveRun, {w.id, step.to, "running"});
  return step;
}

}  // namespace conveyor::model
