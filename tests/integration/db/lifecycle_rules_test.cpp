// Each lifecycle rule once (issue 14, item 3; migration
// 20261215000000_lifecycle_rules): the SQL functions every caller uses, and
// history and outbox written by statement-level triggers with the same rows
// the row trigger wrote.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "conveyor/db/db.hpp"
#include "conveyor/testing/testing.hpp"

namespace conveyor {
namespace {

using namespace std::chrono_literals;

class LifecycleRulesTest : public ::testing::Test {
 protected:
  // A job moved to `status` along the hot path (triggers on), of type `type`
  // with config `config` (JSON text, or "NULL").
  std::string ready_job(const std::string& type, const std::string& config = "'{}'") {
    const std::string id = db_.query_value("INSERT INTO conveyor.job (job_type) VALUES ('" + type + "') RETURNING id");
    db_.exec("UPDATE conveyor.job SET status = 'configured', config = " + config + " WHERE id = " + id);
    db_.exec("UPDATE conveyor.job SET status = 'ready' WHERE id = " + id);
    return id;
  }

  // A job of type "t" moved along the hot path to processed.
  std::string processed_job() {
    const auto id = ready_job("t");
    for (const char* status : {"queued", "started", "processed"}) {
      db_.exec(std::string("UPDATE conveyor.job SET status = '") + status + "' WHERE id = " + id);
    }
    return id;
  }

  // Whether admission may take the job at `as_of` for job_types_list `types`.
  // Asked both ways: with the paused set read by the function on each row
  // (no fourth argument) and handed in once per statement, as the services
  // do; the two must agree.
  std::string eligible(const std::string& id, const std::string& as_of = "now()", const std::string& types = "NULL") {
    const std::string per_row = db_.query_value("SELECT conveyor.job_admission_eligible(j, " + as_of + ", " + types +
                                                ") FROM conveyor.job j WHERE id = " + id);
    const std::string per_statement =
        db_.query_value("SELECT conveyor.job_admission_eligible(j, " + as_of + ", " + types +
                        ", (SELECT conveyor.paused_queues())) FROM conveyor.job j WHERE id = " + id);
    EXPECT_EQ(per_row, per_statement) << "job " << id;
    return per_statement;
  }

  // What `listener` hears within a second, and 200 ms after that, as
  // "channel:payload".
  static std::multiset<std::string> heard(db::Session& listener) {
    std::multiset<std::string> seen;
    for (const auto& n : listener.wait_for_notifications(1s)) seen.insert(n.channel + ":" + n.payload);
    for (const auto& n : listener.wait_for_notifications(200ms)) seen.insert(n.channel + ":" + n.payload);
    return seen;
  }

  // The plan of `sql` (EXPLAIN `options`), one line per row.
  std::string plan(const std::string& sql, const std::string& options = "") {
    std::string text;
    for (const auto& row : db_.query("EXPLAIN " + options + sql)) text += row[0] + "\n";
    return text;
  }

  testing::TestDatabase db_;
};

TEST_F(LifecycleRulesTest, JobPoolIsTheConfigsThenTheTypesThenDefault) {
  EXPECT_EQ(db_.query_value("SELECT conveyor.job_pool('{\"pool\": \"gpu\"}'::jsonb)"), "gpu");
  EXPECT_EQ(db_.query_value("SELECT conveyor.job_pool('{\"pool\": \"gpu\"}'::jsonb, 'cpu')"), "gpu");
  EXPECT_EQ(db_.query_value("SELECT conveyor.job_pool('{}'::jsonb, 'cpu')"), "cpu");
  EXPECT_EQ(db_.query_value("SELECT conveyor.job_pool(NULL, 'cpu')"), "cpu") << "not configured yet";
  EXPECT_EQ(db_.query_value("SELECT conveyor.job_pool('{}'::jsonb)"), "default");
  EXPECT_EQ(db_.query_value("SELECT provolatile FROM pg_proc WHERE oid = 'conveyor.job_pool'::regproc"), "i")
      << "IMMUTABLE: usable in an index expression";
}

TEST_F(LifecycleRulesTest, AdmissionRefusesHeldPausedBackedOffCanceledAndUnhandledJobs) {
  const auto plain = ready_job("a");
  const auto held = ready_job("a");
  const auto paused_type = ready_job("b");
  const auto paused_pool = ready_job("a", "'{\"pool\": \"gpu\"}'");
  const auto backed_off = ready_job("a");
  const auto canceled = ready_job("a");
  db_.exec("UPDATE conveyor.job SET held_at = now() WHERE id = " + held);
  db_.exec(
      "INSERT INTO conveyor.queue_state (kind, name, paused) VALUES ('job_type', 'b', true), "
      "('pool', 'gpu', true), ('pool', 'default', false)");
  db_.exec("UPDATE conveyor.job SET not_before = now() + interval '1 hour' WHERE id = " + backed_off);
  // canceled_at set on a ready job: the cancel is pending, admission leaves it.
  db_.exec("UPDATE conveyor.job SET canceled_at = now() WHERE id = " + canceled);

  EXPECT_EQ(eligible(plain), "t");
  EXPECT_EQ(eligible(held), "f") << "held";
  EXPECT_EQ(eligible(paused_type), "f") << "its job type is paused";
  EXPECT_EQ(eligible(paused_pool), "f") << "its pool is paused";
  EXPECT_EQ(eligible(backed_off), "f") << "before not_before";
  EXPECT_EQ(eligible(backed_off, "now() + interval '2 hours'"), "t") << "after not_before";
  EXPECT_EQ(eligible(canceled), "f") << "cancel pending";
  EXPECT_EQ(eligible(plain, "now()", "ARRAY['b']"), "f") << "not in job_types_list";
  EXPECT_EQ(eligible(plain, "now()", "ARRAY['a', 'b']"), "t");

  // A pool resumed: its job is eligible again, at once.
  db_.exec("UPDATE conveyor.queue_state SET paused = false WHERE kind = 'pool' AND name = 'gpu'");
  EXPECT_EQ(eligible(paused_pool), "t");

  // Only a ready job is admissible.
  db_.exec("UPDATE conveyor.job SET status = 'queued' WHERE id = " + plain);
  EXPECT_EQ(eligible(plain), "f") << "queued already";
}

// The rule is one function: no caller keeps its own copy of the paused-queue
// test. Execution, the reconciler, the alerts and the waves' backlog read it
// through conveyor.job_admission_eligible, which the planner inlines into
// each of their queries (so admission still walks job_ready_idx).
TEST_F(LifecycleRulesTest, AdmissionRuleIsInlinedAndUsesTheReadyIndex) {
  // A few thousand jobs, few of them ready, as in a running system.
  db_.exec("INSERT INTO conveyor.job (job_type) SELECT 'a' FROM generate_series(1, 3000)");
  for (int i = 0; i < 20; ++i) ready_job("a");
  db_.exec("ANALYZE conveyor.job");
  const std::string text = plan(
      "SELECT j.id FROM conveyor.job j WHERE j.status = 'ready' "
      "AND conveyor.job_admission_eligible(j, now(), NULL) "
      "ORDER BY j.priority DESC, j.created_at, j.id LIMIT 10");
  EXPECT_NE(text.find("job_ready_idx"), std::string::npos) << text;
  EXPECT_EQ(text.find("job_admission_eligible"), std::string::npos) << "inlined:\n" << text;
}

// Migration 20261223000200_ready_not_before_index: admission's question,
// when the next back-off ends (execution's CONVEYOR_NEXT_BACKOFF_MS), is one
// probe of job_ready_not_before_idx, not a walk of every ready job.
TEST_F(LifecycleRulesTest, TheNextBackOffEndIsOneIndexProbe) {
  db_.exec("INSERT INTO conveyor.job (job_type) SELECT 'a' FROM generate_series(1, 3000)");
  // 300 ready jobs, moved set-based (one at a time took a minute on CI).
  const std::string first = db_.query_value("SELECT max(id) + 1 FROM conveyor.job");
  db_.exec("INSERT INTO conveyor.job (job_type) SELECT 'a' FROM generate_series(1, 300)");
  db_.exec("UPDATE conveyor.job SET status = 'configured', config = '{}' WHERE id >= " + first);
  db_.exec("UPDATE conveyor.job SET status = 'ready' WHERE id >= " + first);
  ASSERT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job WHERE status = 'ready'"), "300");
  db_.exec("UPDATE conveyor.job SET not_before = now() + interval '1 hour' WHERE id IN (" + first + ", " + first +
           " + 1)");
  db_.exec("ANALYZE conveyor.job");
  const std::string text = plan(
      "SELECT ceil(extract(epoch FROM (min(j.not_before) - clock_timestamp())) * 1000)::bigint "
      "FROM conveyor.job j WHERE j.status = 'ready' AND j.not_before > clock_timestamp() "
      "AND conveyor.job_admission_eligible(j, j.not_before, NULL, (SELECT conveyor.paused_queues()))");
  EXPECT_NE(text.find("job_ready_not_before_idx"), std::string::npos) << text;
  EXPECT_NE(text.find("Limit"), std::string::npos) << "min() as the first row of the index:\n" << text;
}

// Migration 20261221000000_paused_once_per_statement: handed the paused set
// as a subquery, the rule stays inlined and the set is read once per
// statement (an InitPlan), not once per ready job through queue_paused.
TEST_F(LifecycleRulesTest, ThePausedSetIsReadOncePerStatement) {
  db_.exec("INSERT INTO conveyor.job (job_type) SELECT 'a' FROM generate_series(1, 3000)");
  for (int i = 0; i < 20; ++i) ready_job("a");
  db_.exec("INSERT INTO conveyor.queue_state (kind, name, paused) VALUES ('job_type', 'b', true)");
  db_.exec("ANALYZE conveyor.job");
  const std::string text = plan(
      "SELECT j.id FROM conveyor.job j WHERE j.status = 'ready' "
      "AND conveyor.job_admission_eligible(j, now(), NULL, (SELECT conveyor.paused_queues())) "
      "ORDER BY j.priority DESC, j.created_at, j.id LIMIT 10",
      "(VERBOSE) ");
  EXPECT_NE(text.find("job_ready_idx"), std::string::npos) << text;
  EXPECT_NE(text.find("InitPlan"), std::string::npos) << "read once:\n" << text;
  EXPECT_EQ(text.find("job_admission_eligible"), std::string::npos) << "inlined:\n" << text;
  EXPECT_EQ(text.find("queue_paused"), std::string::npos) << "no call per row:\n" << text;

  EXPECT_EQ(db_.query_value("SELECT conveyor.paused_queues()"), "{job_type:b}");
  EXPECT_EQ(db_.query_value("SELECT conveyor.queue_paused('b', 'default')"), "t");
  EXPECT_EQ(db_.query_value("SELECT conveyor.queue_paused('a', 'default')"), "f");
}

// Statement-level triggers: one multi-row UPDATE writes exactly one history
// row and one event per job whose status changed, with the row trigger's
// actor, statuses, error fields and change_id; rows whose status did not
// change, and updates of other columns, write nothing.
TEST_F(LifecycleRulesTest, OneStatementWritesOneHistoryRowAndOneEventPerChangedJob) {
  db_.exec("INSERT INTO conveyor.job (job_type, priority) SELECT 't', g FROM generate_series(1, 20) g");
  db_.exec("UPDATE conveyor.job SET status = 'configured' WHERE id <= 10");
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job_status_change"), "30");
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.outbox WHERE topic = 'jobs'"), "30");

  // Half change status, half already are where they are asked to be.
  db_.exec(
      "SET LOCAL conveyor.actor = 'bob'; "
      "UPDATE conveyor.job SET status = 'internal_error', error_subtype = 'boom', "
      "error_message = 'it broke' WHERE id <= 10; "
      "UPDATE conveyor.job SET status = CASE WHEN id <= 15 THEN 'configured' ELSE status END "
      "WHERE id > 10");
  db_.exec("UPDATE conveyor.job SET priority = priority + 1, reemitted_at = now()");
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job_status_change"), "45");
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.outbox WHERE topic = 'jobs'"), "45");

  // History and event agree row by row, as the row trigger wrote them.
  const auto rows = db_.query(
      "SELECT h.job_id, coalesce(h.from_status, ''), h.to_status, h.actor, coalesce(h.error_subtype, ''), "
      "       coalesce(h.message, ''), o.type, o.key, o.subject, o.payload::text, h.id, "
      "       lag(h.to_status) OVER (PARTITION BY h.job_id ORDER BY h.id) "
      "FROM conveyor.job_status_change h "
      "JOIN conveyor.outbox o ON o.topic = 'jobs' AND (o.payload->>'change_id')::bigint = h.id "
      "ORDER BY h.id");
  ASSERT_EQ(rows.size(), 45u);
  std::multiset<std::string> changes;
  for (const auto& r : rows) {
    const auto p = nlohmann::json::parse(r[9]);
    changes.insert(r[0]);
    EXPECT_EQ(r[6], "io.conveyor.job." + r[2]);
    EXPECT_EQ(r[7], r[0]);
    EXPECT_EQ(r[8], r[0]);
    EXPECT_EQ(p.at("schema_version"), 1);
    EXPECT_EQ(std::to_string(p.at("job_id").get<long long>()), r[0]);
    EXPECT_EQ(p.at("job_type"), "t");
    EXPECT_EQ(p.at("to_status"), r[2]);
    EXPECT_EQ(r[1], r[11]) << "from the old row of the same job";
    if (r[2] == "initialized") {
      EXPECT_TRUE(p.at("from_status").is_null()) << "the insert";
    } else {
      EXPECT_EQ(p.at("from_status"), r[1]);
    }
    EXPECT_EQ(std::to_string(p.at("change_id").get<long long>()), r[10]);
    EXPECT_EQ(std::to_string(p.at("priority").get<int>()), r[0]) << "the row as changed, before the +1";
    EXPECT_TRUE(p.at("at").is_string());
    const bool by_bob = r[2] == "internal_error" || (r[2] == "configured" && std::stoi(r[0]) > 10);
    EXPECT_EQ(r[3], by_bob ? "bob" : "postgres");
    EXPECT_EQ(p.at("actor"), r[3]);
    if (r[2] == "internal_error") {
      EXPECT_EQ(r[4], "boom");
      EXPECT_EQ(r[5], "it broke");
      EXPECT_EQ(p.at("error_subtype"), "boom");
    } else {
      EXPECT_EQ(r[4], "") << "not an error status: no subtype";
      EXPECT_TRUE(p.at("error_subtype").is_null());
    }
  }
  for (int id = 1; id <= 20; ++id) {
    EXPECT_EQ(changes.count(std::to_string(id)), id <= 10 ? 3u : id <= 15 ? 2u : 1u) << "job " << id;
  }

  // No row-level trigger writes history any more.
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'conveyor.job'::regclass "
                            "AND tgfoid = 'conveyor.record_status_changes'::regproc "
                            "AND tgtype & 1 = 0 AND tgnewtable IS NOT NULL"),
            "2");
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM pg_trigger WHERE tgname = 'job_record_status_change'"), "0");
}

// Listeners only need a wake-up: one conveyor_outbox notification per
// statement, and one per new status on that status's own channel
// (conveyor_job_status_<status>, payload the status), so a listener of other
// statuses is sent nothing (migration 20261219000000).
TEST_F(LifecycleRulesTest, AStatementNotifiesOncePerNewStatusOnItsChannel) {
  db_.exec("INSERT INTO conveyor.job (job_type) SELECT 't' FROM generate_series(1, 6)");
  db::Session listener(db_.url());
  listener.listen("conveyor_job_status_configured");
  listener.listen("conveyor_job_status_canceled");
  listener.listen("conveyor_outbox");
  (void)listener.wait_for_notifications(0ms);
  db::Session other(db_.url());
  other.listen("conveyor_job_status_ready");
  (void)other.wait_for_notifications(0ms);

  db_.exec("UPDATE conveyor.job SET status = CASE WHEN id <= 4 THEN 'configured' ELSE 'canceled' END");
  std::vector<db::Notification> got;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (got.size() < 3 && std::chrono::steady_clock::now() < deadline) {
    for (auto& n : listener.wait_for_notifications(1s)) got.push_back(n);
  }
  // Anything else would have arrived with these (one transaction).
  for (auto& n : listener.wait_for_notifications(200ms)) got.push_back(n);

  std::multiset<std::string> seen;
  for (const auto& n : got) seen.insert(n.channel + ":" + n.payload);
  EXPECT_EQ(seen, (std::multiset<std::string>{"conveyor_outbox:", "conveyor_job_status_configured:configured",
                                              "conveyor_job_status_canceled:canceled"}));
  EXPECT_TRUE(other.wait_for_notifications(200ms).empty()) << "a listener of ready was sent another status";
}

// A queued job assigned to a worker (admission's Assignment, migration
// 20261222000000_assigned_queue) is notified on that worker's channel alone,
// once per statement; a job assigned to none on the channel every worker
// hears.
TEST_F(LifecycleRulesTest, AQueuedJobIsNotifiedToItsWorkerAloneOrToAllWhenItHasNone) {
  const auto a = db_.query_value("INSERT INTO conveyor.worker (name) VALUES ('a') RETURNING id");
  const auto b = db_.query_value("INSERT INTO conveyor.worker (name) VALUES ('b') RETURNING id");
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(ready_job("t"));

  db::Session listener(db_.url());
  for (const std::string& channel : {std::string("conveyor_job_status_queued"), "conveyor_job_queued_for_" + a}) {
    listener.listen(channel);
  }
  (void)listener.wait_for_notifications(0ms);
  db::Session other(db_.url());
  other.listen("conveyor_job_queued_for_" + b);
  (void)other.wait_for_notifications(0ms);

  // Assigned jobs only: the channel of all workers stays silent.
  db_.exec("UPDATE conveyor.job SET status = 'queued', worker_id = CASE id WHEN " + ids[0] + " THEN " + a + " ELSE " +
           b + " END WHERE id IN (" + ids[0] + ", " + ids[2] + ", " + ids[3] + ")");
  EXPECT_EQ(heard(listener), (std::multiset<std::string>{"conveyor_job_queued_for_" + a + ":queued"}));
  const auto to_b = other.wait_for_notifications(1s);
  ASSERT_EQ(to_b.size(), 1u) << "b is told once for its two jobs";
  EXPECT_EQ(to_b[0].channel, "conveyor_job_queued_for_" + b);
  // A job of no worker: every worker.
  db_.exec("UPDATE conveyor.job SET status = 'queued', worker_id = NULL WHERE id = " + ids[1]);
  EXPECT_EQ(heard(listener), (std::multiset<std::string>{"conveyor_job_status_queued:queued"}));
  EXPECT_TRUE(other.wait_for_notifications(200ms).empty());
  EXPECT_EQ(db_.query_value("SELECT conveyor.queued_channel(NULL)"), "conveyor_job_status_queued");
}

// No service waits on started (conveyor.job_status.notified, migration
// 20261228000000): the worker's claim, which only starts jobs, notifies no
// channel, so its commit wakes no listening backend. Its change is still
// history and an event, which the relay sends with the next notified change
// or at its poll. A statement that also makes a notified change notifies
// that change and conveyor_outbox, as before.
TEST_F(LifecycleRulesTest, AChangeToStartedNotifiesNoOneAndIsStillAnEvent) {
  const auto first = ready_job("t");
  const auto second = ready_job("t");
  db_.exec("UPDATE conveyor.job SET status = 'queued' WHERE id IN (" + first + ", " + second + ")");
  db::Session listener(db_.url());
  for (const char* channel : {"conveyor_outbox", "conveyor_job_status_started", "conveyor_job_status_processed"}) {
    listener.listen(channel);
  }
  (void)listener.wait_for_notifications(0ms);

  db_.exec("UPDATE conveyor.job SET status = 'started' WHERE id = " + first);
  EXPECT_TRUE(heard(listener).empty()) << "a change to started notified";
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.outbox WHERE type = 'io.conveyor.job.started' AND key = '" +
                            first + "'"),
            "1");
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job_status_change WHERE to_status = 'started' AND "
                            "job_id = " +
                            first),
            "1");

  db_.exec("UPDATE conveyor.job SET status = CASE id WHEN " + first +
           " THEN 'processed' ELSE 'started' END WHERE id IN (" + first + ", " + second + ")");
  EXPECT_EQ(heard(listener),
            (std::multiset<std::string>{"conveyor_outbox:", "conveyor_job_status_processed:processed"}));
}

// Where a run that succeeded goes (conveyor.status_after_success, migration
// 20270104000000): done through processed when its config names no sink and
// no cancel was asked, else processed, for publication or the cancel scan.
// The passage notifies its processed as a plain change does: that is how
// execution learns a job left started and freed its place (it waits on
// processed, not on done, which is notified only while a job waits on it).
TEST_F(LifecycleRulesTest, ARunThatSucceededIsDoneWhenItDeliversNothingAndItsProcessedIsStillNotified) {
  const auto after = [&](const std::string& canceled_at, const std::string& config) {
    return db_.query_value("SELECT conveyor.status_after_success(" + canceled_at + ", " + config + ")");
  };
  EXPECT_EQ(after("NULL", "NULL"), "done");
  EXPECT_EQ(after("NULL", "'{\"sinks\": []}'"), "done");
  EXPECT_EQ(after("NULL", "'{\"sinks\": [{\"kind\": \"webhook\"}]}'"), "processed");
  EXPECT_EQ(after("now()", "NULL"), "processed") << "a cancel asked is the cancel scan's to end";

  const auto id = ready_job("t");
  db_.exec("UPDATE conveyor.job SET status = 'queued' WHERE id = " + id);
  db_.exec("UPDATE conveyor.job SET status = 'started' WHERE id = " + id);
  db::Session listener(db_.url());
  for (const char* channel : {"conveyor_outbox", "conveyor_job_status_processed", "conveyor_job_status_done"}) {
    listener.listen(channel);
  }
  (void)listener.wait_for_notifications(0ms);

  db_.exec("UPDATE conveyor.job SET status = 'done' WHERE id = " + id);
  EXPECT_EQ(heard(listener),
            (std::multiset<std::string>{"conveyor_outbox:", "conveyor_job_status_processed:processed"}))
      << "no one waits on this done";
  EXPECT_EQ(db_.query_value("SELECT string_agg(from_status || '>' || to_status, ' ' ORDER BY id) "
                            "FROM conveyor.job_status_change WHERE job_id = " +
                            id + " AND from_status IN ('started', 'processed')"),
            "started>processed processed>done");
  EXPECT_EQ(db_.query_value("SELECT string_agg(type, ' ' ORDER BY id) FROM conveyor.outbox WHERE key = '" + id +
                            "' AND type IN ('io.conveyor.job.processed', 'io.conveyor.job.done')"),
            "io.conveyor.job.processed io.conveyor.job.done");
}

// Only configuration waits on done, for the configured jobs that depend on
// the job (migration 20261228000100): a done with none notifies no one, and
// a done that a configured job waits on is notified, with conveyor_outbox.
TEST_F(LifecycleRulesTest, ADoneJobIsNotifiedOnlyWhileAConfiguredJobWaitsOnIt) {
  const auto alone = processed_job();
  const auto awaited = processed_job();
  const auto waiting = db_.query_value("INSERT INTO conveyor.job (job_type, depends_on) VALUES ('t', ARRAY[" + awaited +
                                       "]::bigint[]) RETURNING id");
  db_.exec("UPDATE conveyor.job SET status = 'configured' WHERE id = " + waiting);
  db::Session listener(db_.url());
  for (const char* channel : {"conveyor_outbox", "conveyor_job_status_done"}) listener.listen(channel);
  (void)listener.wait_for_notifications(0ms);

  db_.exec("UPDATE conveyor.job SET status = 'done' WHERE id = " + alone);
  EXPECT_TRUE(heard(listener).empty()) << "a done nobody waits on notified";
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.outbox WHERE type = 'io.conveyor.job.done' AND key = '" +
                            alone + "'"),
            "1")
      << "its event";
  db_.exec("UPDATE conveyor.job SET status = 'done' WHERE id = " + awaited);
  EXPECT_EQ(heard(listener), (std::multiset<std::string>{"conveyor_outbox:", "conveyor_job_status_done:done"}));
}

// Scans counted in the current transaction (pg_stat_get_xact_numscans:
// index scans of an index, sequential scans of a table): the waiting jobs'
// index, the status index, the job table.
const std::string kDoneLookUpScans =
    "SELECT pg_stat_get_xact_numscans('conveyor.job_waiting_on_idx'::regclass) || ' ' || "
    "pg_stat_get_xact_numscans('conveyor.job_active_idx'::regclass) || ' ' || "
    "pg_stat_get_xact_numscans('conveyor.job'::regclass)";

// The done check reads the jobs that wait on the job made done, not every
// job that waits (migration 20261229000000): with 3,000 configured jobs
// waiting on another upstream, and statistics that say so, the commit that
// makes a job done scans job_waiting_on_idx once, job_active_idx
// (the status index) never, and the job table only through the new index,
// not sequentially. Before, the planner read the whole table, or ANDed that
// status index with job_depends_on_idx.
TEST_F(LifecycleRulesTest, ADoneLooksUpOnlyTheJobsThatWaitOnIt) {
  const auto upstream = processed_job();
  const auto awaited = processed_job();
  db_.exec("INSERT INTO conveyor.job (job_type, depends_on) SELECT 't', ARRAY[" + upstream +
           "]::bigint[] FROM generate_series(1, 3000)");
  const auto waiting = db_.query_value("INSERT INTO conveyor.job (job_type, depends_on) VALUES ('t', ARRAY[" + awaited +
                                       "]::bigint[]) RETURNING id");
  db_.exec("UPDATE conveyor.job SET status = 'configured' WHERE status = 'initialized'");
  db_.exec("ANALYZE conveyor.job");
  db::Session listener(db_.url());
  listener.listen("conveyor_job_status_done");
  (void)listener.wait_for_notifications(0ms);

  // One transaction of a new session: the counts are the UPDATE's.
  EXPECT_EQ(db_.query_value("UPDATE conveyor.job SET status = 'done' WHERE id = " + awaited + "; " + kDoneLookUpScans),
            "1 0 0")
      << "scans of job_waiting_on_idx, job_active_idx and the job table";
  EXPECT_EQ(heard(listener), (std::multiset<std::string>{"conveyor_job_status_done:done"}))
      << "job " << waiting << " waits on it";
}

// The same look-up when the statistics are older than a DAG's burst: they
// were taken over 30,000 jobs without dependencies, then 3,000 jobs with one
// were configured. The planner, told that no job is configured and none has
// dependencies, took a bitmap scan of job_active_idx for status =
// 'configured' and visited every configured job's row at each done, until
// the waiting jobs' index got a predicate that no other index can serve
// (migration 20261231000000). Before it this reads "0 1 0".
TEST_F(LifecycleRulesTest, ADoneLooksUpItsWaitingJobsThroughTheirIndexWhateverTheStatisticsSay) {
  const auto upstream = processed_job();
  const auto awaited = processed_job();
  db_.exec("INSERT INTO conveyor.job (job_type) SELECT 't' FROM generate_series(1, 30000)");
  db_.exec("ANALYZE conveyor.job");
  db_.exec("INSERT INTO conveyor.job (job_type, depends_on) SELECT 't', ARRAY[" + upstream +
           "]::bigint[] FROM generate_series(1, 3000)");
  const auto waiting = db_.query_value("INSERT INTO conveyor.job (job_type, depends_on) VALUES ('t', ARRAY[" + awaited +
                                       "]::bigint[]) RETURNING id");
  db_.exec("UPDATE conveyor.job SET status = 'configured' WHERE status = 'initialized' AND depends_on <> '{}'");
  EXPECT_EQ(db_.query_value("UPDATE conveyor.job SET status = 'done' WHERE id = " + awaited + "; " + kDoneLookUpScans),
            "1 0 0")
      << "scans of job_waiting_on_idx, job_active_idx and the job table";
  EXPECT_EQ(db_.query_value("SELECT string_agg(job_id::text, ',') FROM conveyor.ready_candidate"), waiting);
}

// Configuration takes new jobs through the status index, oldest first,
// whatever the statistics say (migration 20261231000100). 20,000 older jobs
// (canceled) come before 2,000 new ones, and the statistics say so: its
// own "status = 'initialized' ORDER BY id LIMIT n" walked the primary key
// from the first id and passed every older job (12,400 buffers and 15.8 ms
// a batch in psql), its probe the table from its first page.
TEST_F(LifecycleRulesTest, ConfigurationTakesNewJobsThroughTheStatusIndexWhateverTheStatisticsSay) {
  db_.exec("INSERT INTO conveyor.job (job_type) SELECT 't' FROM generate_series(1, 20000)");
  db_.exec("UPDATE conveyor.job SET status = 'canceled'");
  const auto first = db_.query_value(
      "WITH n AS (INSERT INTO conveyor.job (job_type) SELECT 't' FROM generate_series(1, 2000) RETURNING id) "
      "SELECT min(id) FROM n");
  db_.exec("ANALYZE conveyor.job");
  const std::string scans =
      "SELECT pg_stat_get_xact_numscans('conveyor.job_pkey'::regclass) || ' ' || "
      "pg_stat_get_xact_numscans('conveyor.job_active_idx'::regclass) || ' ' || "
      "pg_stat_get_xact_numscans('conveyor.job'::regclass)";
  EXPECT_EQ(
      db_.query_value("SELECT min(id)::text FROM (SELECT conveyor.initialized_jobs(100, true) AS id) b; " + scans),
      "0 1 0")
      << "scans of the primary key, job_active_idx and the job table";
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.initialized_jobs(1, false); " + scans), "0 1 0");
  EXPECT_EQ(db_.query_value("SELECT min(id)::text FROM conveyor.initialized_jobs(100, false) id"), first)
      << "oldest first";
}

// Configuration's ready walk and its probe read the configured jobs through
// the status index, whatever the statistics say (migration
// 20261231000200): 2,000 configured jobs, decided, come after 20,000 older
// ones. The walk ("... ORDER BY j.id LIMIT n") walked the primary key from
// the first id past every older job, and "is any job configured?" the table
// from its first page.
TEST_F(LifecycleRulesTest, TheReadyWalkReadsConfiguredJobsThroughTheStatusIndexWhateverTheStatisticsSay) {
  db_.exec("INSERT INTO conveyor.job (job_type) SELECT 't' FROM generate_series(1, 20000)");
  db_.exec("UPDATE conveyor.job SET status = 'canceled'");
  db_.exec("INSERT INTO conveyor.job (job_type) SELECT 't' FROM generate_series(1, 2000)");
  db_.exec("UPDATE conveyor.job SET status = 'configured' WHERE status = 'initialized'");
  db_.exec("ANALYZE conveyor.job");
  // Index entries read from the primary key (the walk's), scans of the
  // status index, sequential scans of the table.
  const std::string reads =
      "SELECT pg_stat_get_xact_tuples_returned('conveyor.job_pkey'::regclass) || ' ' || "
      "pg_stat_get_xact_numscans('conveyor.job_active_idx'::regclass) || ' ' || "
      "pg_stat_get_xact_numscans('conveyor.job'::regclass)";
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.decided_jobs(100, true); " + reads), "0 1 0")
      << "primary key entries read, status index scans, sequential scans";
  EXPECT_EQ(db_.query_value("SELECT conveyor.jobs_waiting(); " + reads), "0 1 0");
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.decided_jobs(5000, false)"), "2000");
}

// A worker that stops being active leaves the jobs assigned to it to the
// others (migration 20261223000000_left_assignments): its change of status
// wakes every worker, once, when it leaves queued jobs, whoever makes it
// (here the pool's role, which may not read jobs). A worker that leaves
// none, and a heartbeat, wake nobody.
TEST_F(LifecycleRulesTest, AWorkerThatStopsBeingActiveWakesTheOthersForTheJobsItLeaves) {
  const auto a = db_.query_value("INSERT INTO conveyor.worker (name) VALUES ('a') RETURNING id");
  const auto b = db_.query_value("INSERT INTO conveyor.worker (name) VALUES ('b') RETURNING id");
  const auto first = ready_job("t");
  const auto second = ready_job("t");
  db_.exec("UPDATE conveyor.job SET status = 'queued', worker_id = " + a + " WHERE id IN (" + first + ", " + second +
           ")");
  db::Session listener(db_.url());
  listener.listen("conveyor_job_status_queued");
  (void)listener.wait_for_notifications(0ms);
  db_.exec("SELECT conveyor.drain_worker(" + b + ")");
  EXPECT_TRUE(heard(listener).empty()) << "b left no job";
  db_.exec("UPDATE conveyor.worker SET last_heartbeat = now() WHERE id = " + a);
  EXPECT_TRUE(heard(listener).empty()) << "a heartbeat";
  db_.exec("BEGIN; SET LOCAL ROLE conveyor_workerpool; SELECT conveyor.drain_worker(" + a + "); COMMIT;");
  EXPECT_EQ(heard(listener), (std::multiset<std::string>{"conveyor_job_status_queued:queued"}));
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.worker WHERE id = " + a), "draining");
}

// One back-off formula for the worker's retries (base retry_backoff_s, cap an
// hour) and publication's (its base and max): base * 2^(failures - 1), capped.
TEST_F(LifecycleRulesTest, RetryBackoffDoublesPerFailureUpToTheCap) {
  const auto secs = [&](const std::string& args) {
    return db_.query_value("SELECT extract(epoch FROM conveyor.retry_backoff(" + args + "))::float8");
  };
  EXPECT_EQ(secs("30, 1, 3600"), "30") << "first failure: the base";
  EXPECT_EQ(secs("30, 2, 3600"), "60");
  EXPECT_EQ(secs("30, 4, 3600"), "240");
  EXPECT_EQ(secs("30, 10, 3600"), "3600") << "capped";
  EXPECT_EQ(secs("1, 1000000, 60"), "60") << "a huge count neither overflows nor passes the cap";
  EXPECT_EQ(secs("0.5, 3, 60"), "2") << "publication passes milliseconds / 1000";
  EXPECT_EQ(secs("0, 3, 3600"), "0") << "no back-off configured";
  EXPECT_EQ(secs("30, 0, 3600"), "30") << "never below the base";
}

// One drain rule for the pool's scale-down, `conveyor worker drain` and a
// worker's own shutdown.
TEST_F(LifecycleRulesTest, DrainWorkerDrainsOnlyAnActiveWorkerUnlessItDrainsItself) {
  const auto active = db_.query_value(
      "INSERT INTO conveyor.worker (name, status, running) VALUES ('w-active', 'active', 3) RETURNING id");
  const auto lost =
      db_.query_value("INSERT INTO conveyor.worker (name, status) VALUES ('w-lost', 'lost') RETURNING id");
  const auto stopped =
      db_.query_value("INSERT INTO conveyor.worker (name, status) VALUES ('w-stopped', 'stopped') RETURNING id");
  const auto status = [&](const std::string& id) {
    return db_.query_value("SELECT status FROM conveyor.worker WHERE id = " + id);
  };

  EXPECT_EQ(db_.query("SELECT * FROM conveyor.drain_worker(" + active + ")"),
            (std::vector<std::vector<std::string>>{{"3"}}))
      << "returns its running count";
  EXPECT_EQ(status(active), "draining");
  EXPECT_TRUE(db_.query("SELECT * FROM conveyor.drain_worker(" + active + ")").empty()) << "already draining";
  EXPECT_TRUE(db_.query("SELECT * FROM conveyor.drain_worker(" + lost + ")").empty()) << "the pool leaves a lost one";
  EXPECT_EQ(status(lost), "lost");
  EXPECT_TRUE(db_.query("SELECT * FROM conveyor.drain_worker(" + stopped + ", true)").empty());
  EXPECT_EQ(status(stopped), "stopped");
  EXPECT_EQ(db_.query("SELECT * FROM conveyor.drain_worker(" + lost + ", true)").size(), 1u)
      << "a lost worker that is alive drains itself";
  EXPECT_EQ(status(lost), "draining");
}

// Each role calls the rules its service uses (the functions run with the
// caller's grants): admission's rule as execution and the monitor, the drain
// as the pool and the worker, a status change's triggers as every mover.
TEST_F(LifecycleRulesTest, EachServiceRoleMayCallItsRules) {
  ready_job("a", "'{\"pool\": \"gpu\"}'");
  db_.exec("INSERT INTO conveyor.queue_state (kind, name, paused) VALUES ('pool', 'gpu', true)");
  const auto w1 = db_.query_value("INSERT INTO conveyor.worker (name) VALUES ('w1') RETURNING id");
  const auto w2 = db_.query_value("INSERT INTO conveyor.worker (name, status) VALUES ('w2', 'lost') RETURNING id");
  const auto as = [&](const std::string& role, const std::string& sql) {
    return db_.query_value("SET ROLE " + role + "; " + sql);
  };
  const std::string eligible =
      "SELECT count(*) FILTER (WHERE conveyor.job_admission_eligible(j, now(), NULL)) FROM conveyor.job j";
  EXPECT_EQ(as("conveyor_execution", eligible), "0") << "its pool is paused";
  EXPECT_EQ(as("conveyor_monitor", eligible), "0");
  EXPECT_EQ(as("conveyor_workerpool", "SELECT count(*) FROM conveyor.drain_worker(" + w1 + ")"), "1");
  EXPECT_EQ(as("conveyor_worker", "SELECT count(*) FROM conveyor.drain_worker(" + w2 + ", true)"), "1");
  EXPECT_EQ(as("conveyor_execution", "UPDATE conveyor.job SET status = 'queued' RETURNING status"), "queued")
      << "the statement triggers write history and outbox as the mover";
  EXPECT_EQ(db_.query_value("SELECT actor FROM conveyor.job_status_change ORDER BY id DESC LIMIT 1"), "postgres")
      << "session_user, as the row trigger recorded it";
}

// Only the indexes the hot path needs (migration 20261215000100_job_indexes):
// every index is one more write per non-HOT status change (a partial one
// when the new row matches it: job_ready_not_before_idx, migration
// 20261223000200, only ready jobs with a not_before).
TEST_F(LifecycleRulesTest, JobKeepsOnlyTheIndexesItsQueriesUse) {
  std::set<std::string> names;
  for (const auto& r : db_.query("SELECT indexrelid::regclass::text FROM pg_index "
                                 "WHERE indrelid = 'conveyor.job'::regclass")) {
    names.insert(r[0]);
  }
  EXPECT_EQ(names, (std::set<std::string>{"conveyor.job_pkey", "conveyor.job_type_idempotency_key_key",
                                          "conveyor.job_ready_idx", "conveyor.job_queued_idx",
                                          "conveyor.job_active_idx", "conveyor.job_started_worker_idx",
                                          "conveyor.job_restart_requested_idx", "conveyor.job_cancel_pending_idx",
                                          "conveyor.job_ready_not_before_idx", "conveyor.job_finished_updated_idx",
                                          "conveyor.job_depends_on_idx", "conveyor.job_waiting_on_idx"}));
}

// Issue 14 (migration 20261226000000): the passes that scan the job table by
// status walk the status index plainly. Every job below went through each
// status, and only five are in each of queued, started and processed: the
// index entries of the others are dead. The statistics say every job is
// queued, which is where the planner took a bitmap scan (or, with bitmap
// scans off, a sequential one). A plain index scan marks the dead entries it
// visits; so the second call of each function reads a few pages, where a
// bitmap scan reads every page a dead entry points to, again and again.
class StatusScanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_.exec(R"(INSERT INTO conveyor.job_type (name, command) VALUES ('free', '["true"]'))");
    // Each with a sink, so that publication's claim claims them
    // (conveyor.job_delivers_nothing).
    db_.exec(
        "INSERT INTO conveyor.job (job_type, config) "
        "SELECT 'free', '{\"sinks\": [{\"kind\": \"webhook\"}]}' FROM generate_series(1, 3000)");
    for (const char* s : {"configured", "ready", "queued"})
      db_.exec(std::string("UPDATE conveyor.job SET status = '") + s + "'");
    db_.exec("ANALYZE conveyor.job");
    // Five stay queued, five started, five processed; the rest are done.
    db_.exec("UPDATE conveyor.job SET status = 'started' WHERE id % 600 <> 0");
    db_.exec("UPDATE conveyor.job SET status = 'processed' WHERE id % 600 NOT IN (0, 1)");
    db_.exec("UPDATE conveyor.job SET status = 'done' WHERE id % 600 NOT IN (0, 1, 2)");
  }

  struct Plan {
    std::string text;   // the plan auto_explain gave
    long buffers = -1;  // the shared buffers it read
  };

  // The plan of the last statement `inner` (its first words) that `script`
  // ran, in a session of its own, and the shared buffers it read (hit and
  // read).
  Plan plan_of(const std::string& script, const std::string& inner) {
    const auto r = conveyor::testing::psql(
        db_.url(),
        "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on; "
        "SET auto_explain.log_analyze = on; SET auto_explain.log_buffers = on; SET auto_explain.log_timing = off; "
        "SET auto_explain.log_level = notice; SET client_min_messages = notice; " +
            script);
    EXPECT_EQ(r.status, 0) << r.output;
    Plan p;
    const auto at = r.output.rfind(inner);
    if (at == std::string::npos) {
      ADD_FAILURE() << "no plan of " << inner << " in:\n" << r.output;
      return p;
    }
    p.text = r.output.substr(at, r.output.find("Query Text:", at) - at);
    const auto line_at = p.text.find("Buffers: shared ");
    if (line_at == std::string::npos) return p;
    const std::string line = p.text.substr(line_at, p.text.find('\n', line_at) - line_at);
    p.buffers = 0;
    for (const std::string key : {"hit=", "read="}) {
      if (const auto k = line.find(key); k != std::string::npos) p.buffers += std::stol(line.substr(k + key.size()));
    }
    return p;
  }

  // The plan of `inner` inside `call`, the second time `call` runs in a
  // session: the first marked the dead entries it found.
  Plan second_plan(const std::string& call, const std::string& inner) {
    return plan_of(call + "; " + call + ";", inner);
  }

  // What a walk of the status index reads once its dead entries are marked:
  // the index's leaf pages (6,000 dead entries of each status walked) and
  // the live rows' pages, 30-50. A bitmap or sequential scan reads 300 or
  // more.
  static constexpr long kFewPages = 100;

  void expect_plain_walk(const Plan& p, long most_buffers) {
    EXPECT_NE(p.text.find("Index Scan using"), std::string::npos) << p.text;
    EXPECT_EQ(p.text.find("Bitmap"), std::string::npos) << p.text;
    EXPECT_EQ(p.text.find("Seq Scan on job"), std::string::npos) << p.text;
    EXPECT_GE(p.buffers, 0) << p.text;
    EXPECT_LE(p.buffers, most_buffers) << p.text;
  }

  conveyor::testing::TestDatabase db_;
};

TEST_F(StatusScanTest, AdmissionCountsTheJobsInFlightByAPlainWalk) {
  expect_plain_walk(second_plan("SELECT sum(n) FROM conveyor.jobs_in_flight()", "SELECT j.job_type, j.worker_id"),
                    kFewPages);
  EXPECT_EQ(db_.query_value("SELECT sum(n) FROM conveyor.jobs_in_flight()"), "10");
}

TEST_F(StatusScanTest, AWorkerFindsItsClaimableJobsByAPlainWalk) {
  const std::string worker = db_.query_value("INSERT INTO conveyor.worker (name) VALUES ('w') RETURNING id");
  const Plan claim =
      second_plan("SELECT count(*) FROM conveyor.claimable_jobs(" + worker + ", 'default', false, 3, true)",
                  "SELECT j.id FROM conveyor.job j");
  // conveyor.job_claimable_by is inlined, not called (and planned) per row.
  EXPECT_EQ(claim.text.find("job_claimable_by(j.*"), std::string::npos) << claim.text;
  expect_plain_walk(claim, kFewPages);
  // A job another active worker was just assigned is its; once that worker
  // is lost, it is anyone's.
  const std::string other =
      db_.query_value("INSERT INTO conveyor.worker (name, status) VALUES ('other', 'active') RETURNING id");
  // (Left queued an hour from now: not yet 1 s, however slow the machine.)
  db_.exec("UPDATE conveyor.job SET worker_id = " + other +
           ", updated_at = now() + interval '1 hour' WHERE status = 'queued'");
  const std::string mine = "SELECT count(*) FROM conveyor.claimable_jobs(" + worker + ", 'default', false, 9, false)";
  EXPECT_EQ(db_.query_value(mine), "0");
  db_.exec("UPDATE conveyor.worker SET status = 'lost' WHERE id = " + other);
  EXPECT_EQ(db_.query_value(mine), "5");
  // Claim order and room: the first three queued by priority, then id.
  db_.exec(
      "UPDATE conveyor.job SET priority = 5 WHERE id = (SELECT max(id) FROM conveyor.job WHERE status = 'queued')");
  EXPECT_EQ(
      db_.query_value("SELECT string_agg(c::text, ',') FROM conveyor.claimable_jobs(" + worker +
                      ", 'default', false, 3, false) c"),
      db_.query_value("SELECT string_agg(id::text, ',') FROM (SELECT id FROM conveyor.job WHERE status = 'queued' "
                      "ORDER BY priority DESC, id LIMIT 3) q"));
  // Another pool, or a job of a container for a worker without a runtime, is not its.
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.claimable_jobs(" + worker + ", 'gpu', false, 9, false)"),
            "0");
  db_.exec("UPDATE conveyor.job SET config = '{\"image\": \"alpine\"}' WHERE status = 'queued'");
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.claimable_jobs(" + worker + ", 'default', false, 9, false)"),
            "0");
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.claimable_jobs(" + worker + ", 'default', true, 9, false)"),
            "5");
}

TEST_F(StatusScanTest, PublicationClaimsTheOldestProcessedJobsByAPlainWalk) {
  expect_plain_walk(second_plan("SELECT count(*) FROM conveyor.publishable_jobs(3)", "SELECT j.id FROM conveyor.job j"),
                    kFewPages);
  // Oldest first, not by id: the started job of the lowest id, processed
  // last, comes last.
  db_.exec(
      "UPDATE conveyor.job SET status = 'done' WHERE id = (SELECT min(id) FROM conveyor.job WHERE status = 'processed')");
  const std::string latest = db_.query_value(
      "UPDATE conveyor.job SET status = 'processed' WHERE id = (SELECT min(id) FROM conveyor.job WHERE status = 'started') "
      "RETURNING id");
  EXPECT_EQ(latest, "1");
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.publishable_jobs(9)"), "5");
  EXPECT_EQ(db_.query_value("SELECT (array_agg(c))[5] FROM conveyor.publishable_jobs(9) c"), latest);
  // The claim takes the oldest four for its replica, by the primary key;
  // what a replica claimed is not publishable until its claim ends.
  expect_plain_walk(second_plan("SELECT count(*) FROM conveyor.claim_publishable(2, 0, 'p0')", "UPDATE conveyor.job j"),
                    kFewPages);
  EXPECT_EQ(
      db_.query_value("SELECT string_agg(id::text, ',' ORDER BY id) FROM conveyor.claim_publishable(4, 300000, 'p1')"),
      db_.query_value("SELECT string_agg(id::text, ',' ORDER BY id) FROM conveyor.job WHERE status = 'processed' "
                      "AND id <> " +
                      latest));
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job WHERE publication_claimed_by = 'p1' "
                            "AND publication_claimed_until > now() + interval '4 minutes'"),
            "4");
  EXPECT_EQ(db_.query_value("SELECT string_agg(c::text, ',') FROM conveyor.publishable_jobs(9) c"), latest);
}

// A processed job whose config names no sink (none, null or [], or no
// config) has nothing to deliver: the claim moves it to done at once, as
// publication's record of its outcome would (no claim left, the errors of
// an earlier attempt cleared), and returns it done. Any other "sinks",
// a list or a value publication will refuse, is claimed as before.
TEST_F(StatusScanTest, PublicationsClaimMovesTheJobsThatDeliverNothingToDone) {
  db_.exec("UPDATE conveyor.job SET status = 'done' WHERE status = 'processed'");
  db_.exec(
      "UPDATE conveyor.job SET status = 'started' WHERE id = (SELECT min(id) FROM conveyor.job "
      "WHERE status = 'queued')");  // six started
  const std::vector<std::pair<std::string, bool>> configs = {
      {"NULL", true},
      {"'{}'", true},
      {"'{\"sinks\": []}'", true},
      {"'{\"sinks\": null, \"pool\": \"gpu\"}'", true},
      {"'{\"sinks\": [{\"kind\": \"file\", \"dir\": \"c\"}]}'", false},
      {"'{\"sinks\": \"catalog\"}'", false},
  };
  std::vector<std::string> nothing, claimed;
  for (const auto& [config, delivers_nothing] : configs) {
    (delivers_nothing ? nothing : claimed)
        .push_back(db_.query_value("UPDATE conveyor.job SET status = 'processed', config = " + config +
                                   ", error_message = 'an earlier attempt' "
                                   "WHERE id = (SELECT min(id) FROM conveyor.job WHERE status = 'started') "
                                   "RETURNING id"));
  }
  const auto joined = [](const std::vector<std::string>& ids, const std::string& suffix = "") {
    std::string out;
    for (const auto& id : ids) out += (out.empty() ? "" : ",") + id + suffix;
    return out;
  };
  EXPECT_EQ(db_.query_value("SELECT string_agg(id || ':' || status, ',' ORDER BY id) "
                            "FROM conveyor.claim_publishable(9, 300000, 'p1') WHERE status = 'done'"),
            joined(nothing, ":done"));
  EXPECT_EQ(db_.query_value("SELECT string_agg(id::text, ',' ORDER BY id) FROM conveyor.job WHERE status = 'done' "
                            "AND id IN (" +
                            joined(nothing) +
                            ") AND publication_claimed_by IS NULL "
                            "AND publication_claimed_until IS NULL AND error_message IS NULL"),
            joined(nothing));
  EXPECT_EQ(db_.query_value("SELECT string_agg(id::text, ',' ORDER BY id) FROM conveyor.job WHERE status = "
                            "'processed' AND publication_claimed_by = 'p1' AND error_message IS NOT NULL"),
            joined(claimed));
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job_status_change WHERE from_status = 'processed' "
                            "AND to_status = 'done' AND job_id IN (" +
                            joined(nothing) + ")"),
            "4");
}

// The status trigger that claim_publishable's update fires plans its
// statements as any other caller's would: the function's settings (no
// sequential scan, generic plans) do not reach it, and PL/pgSQL would keep
// such plans for the session.
TEST_F(StatusScanTest, TheStatusTriggerPlansAlikeWhateverFiresIt) {
  const std::string check = "WITH moved AS";
  const auto scans = [](const std::string& plan) {
    std::string out;
    std::size_t at = 0;
    while ((at = plan.find("Scan", at)) != std::string::npos) {
      const auto start = plan.rfind('\n', at) + 1;
      const auto end = plan.find('(', at);
      out += plan.substr(start, end - start) + "\n";
      at = plan.find('\n', at);
    }
    return out;
  };
  const std::string finish_one =
      "UPDATE conveyor.job SET status = 'done' WHERE id = (SELECT max(id) FROM conveyor.job WHERE status = 'processed');";
  const Plan after_claim = plan_of("SELECT count(*) FROM conveyor.claim_publishable(1, 0, 'p0'); " + finish_one, check);
  const Plan alone = plan_of(finish_one, check);
  ASSERT_FALSE(scans(alone.text).empty()) << alone.text;
  EXPECT_EQ(scans(after_claim.text), scans(alone.text)) << after_claim.text << "\n---\n" << alone.text;
}

// Issue 14: at a low rate each status change is a statement of its own,
// and the status trigger's cost was per statement it ran more than per
// row: the check, the history and outbox insert, and a PERFORM per kind
// of NOTIFY (five for a job queued). It ran two (20261227000000), the
// check and one that inserts and notifies; now one, which checks too,
// and a second only for a statement that ends a job, for the ready step's
// candidates (20270101000000). auto_explain logs every statement a call
// runs, and would log conveyor.queued_channel's body were it run as a
// function of its own rather than inlined.
TEST_F(StatusScanTest, AStatusChangeRunsOneStatementInTheTrigger) {
  const auto statements = [&](const std::string& change) {
    const auto r = conveyor::testing::psql(
        db_.url(),
        "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on; "
        "SET auto_explain.log_level = notice; SET client_min_messages = notice; " +
            change);
    EXPECT_EQ(r.status, 0) << r.output;
    // The first words of each statement logged, but the change itself (last).
    std::vector<std::string> texts;
    for (std::size_t at = 0; (at = r.output.find("Query Text:", at)) != std::string::npos; ++at) {
      const auto start = r.output.find_first_not_of(" \n", at + 11);
      texts.push_back(r.output.substr(start, 36));
    }
    if (!texts.empty()) texts.pop_back();
    return texts;
  };
  const std::string queued = db_.query_value("SELECT min(id) FROM conveyor.job WHERE status = 'queued'");
  for (const std::string& change : {"UPDATE conveyor.job SET status = 'ready' WHERE id = " + queued,
                                    "UPDATE conveyor.job SET status = 'queued' WHERE id = " + queued}) {
    const auto texts = statements(change);
    ASSERT_EQ(texts.size(), 1u) << change << ":\n" << ::testing::PrintToString(texts);
    EXPECT_EQ(texts[0].rfind("WITH moved AS", 0), 0u) << texts[0];
  }
  const std::string processed = db_.query_value("SELECT min(id) FROM conveyor.job WHERE status = 'processed'");
  // A done also runs the trigger-pending row trigger's check and the
  // look-up of the jobs waiting on it (inside the second statement).
  std::vector<std::string> ended;
  for (const auto& text : statements("UPDATE conveyor.job SET status = 'done' WHERE id = " + processed)) {
    if (text.rfind("WITH ", 0) == 0 || text.rfind("SELECT n.", 0) == 0) ended.push_back(text);
  }
  ASSERT_EQ(ended.size(), 2u) << ::testing::PrintToString(ended);
  EXPECT_EQ(ended[0].rfind("WITH moved AS", 0), 0u) << ended[0];
  EXPECT_EQ(ended[1].rfind("WITH candidates AS", 0), 0u) << ended[1];
  const auto inserted = statements("INSERT INTO conveyor.job (job_type) VALUES ('free')");
  ASSERT_EQ(inserted.size(), 1u) << ::testing::PrintToString(inserted);
  EXPECT_EQ(inserted[0].rfind("WITH inserted AS", 0), 0u) << inserted[0];
}

// Issue 14: configuration's batch was a prepared UPDATE ... FROM unnest()
// with its status as a parameter. A generic plan guesses ten rows of
// unnest and looked dearer than a custom one, so PostgreSQL planned it anew
// at every call (2,862 plans in 2,935 calls in conveyor-bench at 100/s,
// 0.27 ms each); made while the table was small, its plan was a sequential
// scan. conveyor.apply_configuration plans it once per session (the status
// stays a parameter in the plan) and finds the batch by the primary key.
TEST_F(StatusScanTest, ConfigurationsBatchIsPlannedOnceAndFindsItsJobsByThePrimaryKey) {
  const auto ids = db_.query("SELECT id FROM conveyor.job WHERE status = 'queued' ORDER BY id LIMIT 2");
  ASSERT_EQ(ids.size(), 2u);
  const std::string done = db_.query_value("SELECT min(id) FROM conveyor.job WHERE status = 'done'");
  const auto call = [&](const std::string& queued) {
    return "SELECT conveyor.apply_configuration('queued', '{" + queued + "," + done +
           "}', '{ready,ready}', '{\"\",\"\"}', '{0,0}', '{\"\",\"\"}', '{\"\",\"\"}')";
  };
  const Plan p = second_plan(call(ids[0][0]), "UPDATE conveyor.job j SET status = v.to_status");
  EXPECT_NE(p.text.find("Index Scan using job_pkey on job j"), std::string::npos) << p.text;
  EXPECT_EQ(p.text.find("Seq Scan on job "), std::string::npos) << p.text;
  EXPECT_NE(p.text.find("(status = $1)"), std::string::npos) << "not the generic plan:\n" << p.text;
  EXPECT_GE(p.buffers, 0) << p.text;
  EXPECT_LE(p.buffers, 40) << p.text;
  // Only the jobs still in the status given move; the count is returned.
  EXPECT_EQ(db_.query_value(call(ids[1][0])), "1");
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.job WHERE id = " + ids[1][0]), "ready");
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.job WHERE id = " + done), "done");
  EXPECT_EQ(db_.query_value(call(ids[1][0])), "0") << "a job no longer queued moved again";
}

// The same statement on a table PostgreSQL analysed while it was small (a
// new cluster): there a sequential scan looks cheapest, and a plan made
// then was kept as the table grew (190 pages for one job in conveyor-bench).
// Without enable_seqscan = off the generic plan here is "Seq Scan on job j"
// (checked by hand with PREPARE and force_generic_plan).
class SmallJobTableTest : public StatusScanTest {
 protected:
  void SetUp() override {
    db_.exec(R"(INSERT INTO conveyor.job_type (name, command) VALUES ('free', '["true"]'))");
    db_.exec("INSERT INTO conveyor.job (job_type) SELECT 'free' FROM generate_series(1, 3)");
    db_.exec("ANALYZE conveyor.job");
  }
};

TEST_F(SmallJobTableTest, ConfigurationsBatchGoesByThePrimaryKeyOnASmallTable) {
  const std::string id = db_.query_value("SELECT min(id) FROM conveyor.job");
  const Plan p = second_plan("SELECT conveyor.apply_configuration('initialized', '{" + id +
                                 "}', '{configured}', '{\"\"}', '{0}', '{\"\"}', '{\"\"}')",
                             "UPDATE conveyor.job j SET status = v.to_status");
  EXPECT_NE(p.text.find("Index Scan using job_pkey on job j"), std::string::npos) << p.text;
  EXPECT_EQ(p.text.find("Seq Scan on job "), std::string::npos) << p.text;
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.job WHERE id = " + id), "configured");
}

}  // namespace
}  // namespace conveyor
