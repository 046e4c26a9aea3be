// The status machine as the database enforces it (migration
// 20261122000000_initial_schema): the SQL table and the C++ table agree, the
// trigger accepts exactly the allowed transitions, and every change leaves one
// history row and one outbox event. Also system_parameters and canceled_at.
#include <gtest/gtest.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "conveyor/db/db.hpp"
#include "conveyor/model/status.hpp"
#include "conveyor/testing/testing.hpp"

namespace conveyor {
namespace {

using model::JobStatus;
using model::kAllStatuses;

constexpr db::Statement kInsertJob{"test_insert_job", "INSERT INTO conveyor.job (job_type) VALUES ($1) RETURNING id"};
constexpr db::Statement kSetStatus{"test_set_status", "UPDATE conveyor.job SET status = $2 WHERE id = $1"};
// Same SQL under another name: used while triggers are off.
constexpr db::Statement kForceStatus{"test_force_status", "UPDATE conveyor.job SET status = $2 WHERE id = $1"};
constexpr db::Statement kHistory{"test_history",
                                 "SELECT id, coalesce(from_status, ''), to_status, actor, coalesce(error_subtype, ''),"
                                 "       coalesce(message, '')"
                                 "  FROM conveyor.job_status_change WHERE job_id = $1 ORDER BY id"};
constexpr db::Statement kOutbox{
    "test_outbox",
    "SELECT id, topic, key, type, coalesce(subject, ''), payload::text, id IN (SELECT id FROM conveyor.outbox_unsent())"
    "  FROM conveyor.outbox WHERE topic = $1 AND key = $2 ORDER BY id"};

struct HistoryRow {
  std::int64_t id;
  std::string from, to, actor, error_subtype, message;
};

struct OutboxRow {
  std::int64_t id;
  std::string topic, key, type, subject;
  nlohmann::json payload;
  bool unsent;
};

class StatusMachineTest : public ::testing::Test {
 protected:
  StatusMachineTest() : pool_(pool_options(db_.url())) {}

  static db::PoolOptions pool_options(const std::string& url) {
    db::PoolOptions o;
    o.url = url;
    o.size = 2;
    return o;
  }

  static db::TxOptions once(std::string actor = {}) {
    db::TxOptions o;
    o.max_attempts = 1;
    o.actor = std::move(actor);
    return o;
  }

  std::int64_t insert_job(const std::string& type = "test_type") {
    return pool_.transact([&](db::Tx& tx) { return tx.exec(kInsertJob, {type})[0][0].as_int(); }, once());
  }

  // Puts the job in `status` with triggers off (no check, no history, no
  // event), as a repair would; the setting is local to this transaction.
  void force_status(db::Tx& tx, std::int64_t id, JobStatus status) {
    tx.exec_script("SET LOCAL session_replication_role = replica");
    tx.exec(kForceStatus, {id, model::to_string(status)});
    tx.exec_script("SET LOCAL session_replication_role = origin");
  }

  std::vector<HistoryRow> history(std::int64_t job_id) {
    return pool_.transact(
        [&](db::Tx& tx) {
          std::vector<HistoryRow> rows;
          for (db::Row r : tx.exec(kHistory, {job_id})) {
            rows.push_back({r[0].as_int(), r[1].as_string(), r[2].as_string(), r[3].as_string(), r[4].as_string(),
                            r[5].as_string()});
          }
          return rows;
        },
        once());
  }

  std::vector<OutboxRow> outbox(const std::string& topic, const std::string& key) {
    return pool_.transact(
        [&](db::Tx& tx) {
          std::vector<OutboxRow> rows;
          for (db::Row r : tx.exec(kOutbox, {topic, key})) {
            rows.push_back({r[0].as_int(), r[1].as_string(), r[2].as_string(), r[3].as_string(), r[4].as_string(),
                            nlohmann::json::parse(r[5].view()), r[6].as_bool()});
          }
          return rows;
        },
        once());
  }

  // Runs `sql` in its own transaction and returns the DbError it raised.
  std::optional<db::DbError> error_of(const std::string& sql) {
    try {
      pool_.transact([&](db::Tx& tx) { tx.exec_script(sql); }, once());
    } catch (const db::DbError& e) {
      return e;
    }
    return std::nullopt;
  }

  testing::TestDatabase db_;
  db::Pool pool_;
};

// ------------------------------------------------------------ the two tables agree

TEST_F(StatusMachineTest, SqlTransitionTableEqualsTheModel) {
  std::set<std::pair<std::string, std::string>> sql;
  for (const auto& row : db_.query("SELECT coalesce(from_status, ''), to_status FROM conveyor.job_status_transition")) {
    ASSERT_EQ(row.size(), 2u);
    EXPECT_TRUE(sql.emplace(row[0], row[1]).second) << "duplicate " << row[0] << " -> " << row[1];
  }

  std::set<std::pair<std::string, std::string>> cpp;
  for (JobStatus to : kAllStatuses) {
    if (model::is_valid_initial(to)) cpp.emplace("", model::to_string(to));
    for (JobStatus from : kAllStatuses) {
      if (model::is_valid_transition(from, to)) {
        cpp.emplace(model::to_string(from), model::to_string(to));
      }
    }
  }
  EXPECT_EQ(sql, cpp);
  EXPECT_TRUE(sql.count({"", "initialized"}) == 1 && sql.count({"", "canceled"}) == 1);
}

TEST_F(StatusMachineTest, SqlStatusListEqualsTheModel) {
  auto rows = db_.query(
      "SELECT name, is_final::text, is_error::text, notified::text FROM conveyor.job_status ORDER BY position");
  ASSERT_EQ(rows.size(), kAllStatuses.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const JobStatus s = kAllStatuses[i];
    EXPECT_EQ(rows[i][0], model::to_string(s));
    EXPECT_EQ(rows[i][1] == "true", model::is_final(s)) << rows[i][0];
    EXPECT_EQ(rows[i][2] == "true", model::is_error(s)) << rows[i][0];
    EXPECT_EQ(rows[i][3] == "true", model::is_notified(s)) << rows[i][0];
  }
}

// ------------------------------------------------------------ the trigger enforces it

// For every (from, to): put a job in `from` behind the trigger's back, then
// try the UPDATE. One transaction per pair (rather than a savepoint per pair)
// so a refused attempt rolls back cleanly and the next pair starts fresh.
TEST_F(StatusMachineTest, TriggerAcceptsExactlyTheModelTransitions) {
  const std::int64_t id = insert_job();
  int accepted = 0;
  for (JobStatus from : kAllStatuses) {
    for (JobStatus to : kAllStatuses) {
      if (from == to) continue;  // a no-op, tested below
      const auto pair = std::string(model::to_string(from)) + " -> " + std::string(model::to_string(to));
      std::optional<db::DbError> refused;
      try {
        pool_.transact(
            [&](db::Tx& tx) {
              force_status(tx, id, from);
              EXPECT_EQ(tx.exec(kSetStatus, {id, model::to_string(to)}).affected_rows(), 1) << pair;
            },
            once());
      } catch (const db::DbError& e) {
        refused = e;
      }
      if (model::is_valid_transition(from, to) || model::passes_through(from, to)) {
        EXPECT_FALSE(refused.has_value()) << pair << " refused: " << (refused ? refused->what() : "");
        ++accepted;
      } else {
        ASSERT_TRUE(refused.has_value()) << pair << " was accepted";
        EXPECT_EQ(refused->sqlstate(), db::kInvalidTransitionState) << pair << ": " << refused->what();
        EXPECT_EQ(refused->code(), errc::invalid_transition) << pair;
        EXPECT_NE(std::string(refused->what()).find(pair), std::string::npos) << refused->what();
      }
    }
  }
  // The SQL table's rows minus the two insert rows, and the two passages.
  EXPECT_EQ(accepted, 35 - 2 + 2);
}

TEST_F(StatusMachineTest, SqlPassagesEqualTheModelAndEachIsTwoTransitions) {
  std::set<std::tuple<std::string, std::string, std::string>> sql;
  for (const auto& row : db_.query("SELECT from_status, via_status, to_status FROM conveyor.job_status_passage")) {
    ASSERT_EQ(row.size(), 3u);
    sql.emplace(row[0], row[1], row[2]);
  }
  std::set<std::tuple<std::string, std::string, std::string>> cpp;
  for (JobStatus from : kAllStatuses) {
    for (JobStatus to : kAllStatuses) {
      if (const auto via = model::passes_through(from, to)) {
        EXPECT_TRUE(model::is_valid_transition(from, *via) && model::is_valid_transition(*via, to))
            << model::to_string(from) << " -> " << model::to_string(*via) << " -> " << model::to_string(to);
        EXPECT_FALSE(model::is_valid_transition(from, to)) << "a passage that is also a transition";
        cpp.emplace(model::to_string(from), model::to_string(*via), model::to_string(to));
      }
    }
  }
  EXPECT_EQ(sql, cpp);
  EXPECT_EQ(cpp.size(), 2u);
}

// initialized -> ready in one UPDATE (configuration's move of a job with
// nothing to wait for): one row version, two history rows and two events,
// in order, each as a single transition would have written it.
TEST_F(StatusMachineTest, APassageWritesBothChangesInOrderFromOneRowVersion) {
  const std::int64_t id = insert_job("ingest");
  const std::int64_t other = insert_job("ingest");
  const std::string key = std::to_string(id);
  pool_.transact(
      [&](db::Tx& tx) {
        tx.set_actor("conveyor-configuration");
        // Both rows in one statement: the passage and a plain transition.
        EXPECT_EQ(tx.exec_script("UPDATE conveyor.job SET status = CASE id WHEN " + key +
                                 " THEN 'ready' ELSE 'configured' END WHERE id IN (" + key + ", " +
                                 std::to_string(other) + ")")
                      .affected_rows(),
                  2);
        EXPECT_EQ(std::stoll(tx.exec_script("SELECT n_tup_upd FROM pg_stat_xact_user_tables "
                                            "WHERE relid = 'conveyor.job'::regclass")[0][0]
                                 .as_string()),
                  2);  // a row version per job, not per change
      },
      once());
  const auto h = history(id);
  ASSERT_EQ(h.size(), 3u);
  EXPECT_EQ(h[1].from, "initialized");
  EXPECT_EQ(h[1].to, "configured");
  EXPECT_EQ(h[2].from, "configured");
  EXPECT_EQ(h[2].to, "ready");
  EXPECT_EQ(h[2].actor, "conveyor-configuration");
  EXPECT_LT(h[1].id, h[2].id);
  const auto events = outbox("jobs", key);
  ASSERT_EQ(events.size(), 3u);
  for (int i : {1, 2}) {
    EXPECT_EQ(events[i].type, "io.conveyor.job." + h[i].to);
    EXPECT_EQ(events[i].payload.at("from_status"), h[i].from);
    EXPECT_EQ(events[i].payload.at("to_status"), h[i].to);
    EXPECT_EQ(events[i].payload.at("change_id"), h[i].id);
    EXPECT_EQ(events[i].payload.at("job_type"), "ingest");
    EXPECT_TRUE(events[i].unsent);
  }
  EXPECT_LT(events[1].id, events[2].id);
  const auto plain = history(other);
  ASSERT_EQ(plain.size(), 2u);
  EXPECT_EQ(plain[1].to, "configured");
  EXPECT_EQ(outbox("jobs", std::to_string(other)).size(), 2u);
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.job WHERE id = " + key), "ready");

  // Any other skip is refused: configured -> queued is not a passage.
  auto err = error_of("UPDATE conveyor.job SET status = 'queued' WHERE id = " + std::to_string(other));
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->sqlstate(), "CV001");
}

TEST_F(StatusMachineTest, InsertAcceptsOnlyInitializedOrCanceled) {
  for (JobStatus s : kAllStatuses) {
    auto err = error_of("INSERT INTO conveyor.job (job_type, status) VALUES ('t', '" +
                        std::string(model::to_string(s)) + "')");
    if (model::is_valid_initial(s)) {
      EXPECT_FALSE(err.has_value()) << model::to_string(s) << ": " << (err ? err->what() : "");
    } else {
      ASSERT_TRUE(err.has_value()) << model::to_string(s);
      EXPECT_EQ(err->sqlstate(), "CV001");
      EXPECT_NE(std::string(err->what()).find("invalid initial status"), std::string::npos) << err->what();
    }
  }
}

TEST_F(StatusMachineTest, InitializedToDoneIsRefusedInRawSql) {
  const std::int64_t id = insert_job();
  auto err = error_of("UPDATE conveyor.job SET status = 'done' WHERE id = " + std::to_string(id));
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->sqlstate(), "CV001");
  const std::string msg = err->what();
  EXPECT_NE(msg.find("initialized"), std::string::npos) << msg;
  EXPECT_NE(msg.find("done"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(id)), std::string::npos) << msg;
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.job WHERE id = " + std::to_string(id)), "initialized");
  EXPECT_EQ(history(id).size(), 1u);  // only the insert
}

// The status trigger writes the changes and checks them in one statement
// (20270101000000): a statement with a refused row among allowed ones
// fails naming its first refused job, and leaves no history, no event and
// no change of any of its jobs.
TEST_F(StatusMachineTest, AStatementWithOneRefusedRowWritesNothing) {
  const std::int64_t first = insert_job();
  const std::int64_t refused = insert_job();
  const std::int64_t last = insert_job();
  db_.exec("UPDATE conveyor.job SET status = 'configured' WHERE id IN (" + std::to_string(first) + ", " +
           std::to_string(last) + ")");
  const std::string events_before = db_.query_value("SELECT count(*) FROM conveyor.outbox");
  // configured -> ready is allowed for two of them; initialized -> ready is
  // a passage; initialized -> queued is refused.
  auto err = error_of("UPDATE conveyor.job SET status = CASE WHEN id = " + std::to_string(refused) +
                      " THEN 'queued' ELSE 'ready' END WHERE id IN (" + std::to_string(first) + ", " +
                      std::to_string(refused) + ", " + std::to_string(last) + ")");
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->sqlstate(), "CV001");
  const std::string msg = err->what();
  EXPECT_NE(msg.find("job " + std::to_string(refused) + ": initialized -> queued"), std::string::npos) << msg;
  EXPECT_EQ(history(first).size(), 2u);  // initialized, configured
  EXPECT_EQ(history(refused).size(), 1u);
  EXPECT_EQ(history(last).size(), 2u);
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.outbox"), events_before);
  EXPECT_EQ(db_.query_value("SELECT string_agg(status, ',' ORDER BY id) FROM conveyor.job WHERE id IN (" +
                            std::to_string(first) + ", " + std::to_string(refused) + ", " + std::to_string(last) + ")"),
            "configured,initialized,configured");
}

TEST_F(StatusMachineTest, UnknownStatusIsRefusedTheSameWay) {
  const std::int64_t id = insert_job();
  auto err = error_of("UPDATE conveyor.job SET status = 'finished' WHERE id = " + std::to_string(id));
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->sqlstate(), "CV001");
  EXPECT_NE(std::string(err->what()).find("finished"), std::string::npos) << err->what();
}

// ------------------------------------------------------------ history and outbox

TEST_F(StatusMachineTest, InsertWritesHistoryAndEvent) {
  const std::int64_t id =
      pool_.transact([&](db::Tx& tx) { return tx.exec(kInsertJob, {"ingest"})[0][0].as_int(); }, once("creator"));
  auto h = history(id);
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0].from, "");
  EXPECT_EQ(h[0].to, "initialized");
  EXPECT_EQ(h[0].actor, "creator");

  auto events = outbox("jobs", std::to_string(id));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].type, "io.conveyor.job.initialized");
  EXPECT_TRUE(events[0].payload.at("from_status").is_null());
  EXPECT_EQ(events[0].payload.at("to_status"), "initialized");
  EXPECT_EQ(events[0].payload.at("job_type"), "ingest");
}

TEST_F(StatusMachineTest, ValidTransitionWritesOneHistoryRowAndOneEvent) {
  const std::int64_t id = insert_job("ingest");
  const std::string key = std::to_string(id);

  // Actor through Tx::set_actor.
  pool_.transact(
      [&](db::Tx& tx) {
        tx.set_actor("conveyor-configuration");
        EXPECT_EQ(tx.exec(kSetStatus, {id, "configured"}).affected_rows(), 1);
      },
      once());
  auto h = history(id);
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[1].from, "initialized");
  EXPECT_EQ(h[1].to, "configured");
  EXPECT_EQ(h[1].actor, "conveyor-configuration");

  auto events = outbox("jobs", key);
  ASSERT_EQ(events.size(), 2u);
  const OutboxRow& e = events[1];
  EXPECT_EQ(e.topic, "jobs");
  EXPECT_EQ(e.key, key);
  EXPECT_EQ(e.subject, key);
  EXPECT_EQ(e.type, "io.conveyor.job.configured");
  EXPECT_TRUE(e.unsent);
  EXPECT_EQ(e.payload.at("schema_version"), 1);
  EXPECT_EQ(e.payload.at("job_id"), id);
  EXPECT_EQ(e.payload.at("job_type"), "ingest");
  EXPECT_EQ(e.payload.at("from_status"), "initialized");
  EXPECT_EQ(e.payload.at("to_status"), "configured");
  EXPECT_EQ(e.payload.at("attempt"), 0);
  EXPECT_EQ(e.payload.at("priority"), 0);
  EXPECT_EQ(e.payload.at("change_id"), h[1].id);
  EXPECT_EQ(e.payload.at("actor"), "conveyor-configuration");
  EXPECT_TRUE(e.payload.at("error_subtype").is_null());
  EXPECT_TRUE(e.payload.at("at").is_string());

  // Actor through SET LOCAL in raw SQL, as a person in psql would.
  db_.exec("SET LOCAL conveyor.actor = 'alice'; UPDATE conveyor.job SET status = 'ready' WHERE id = " + key);
  h = history(id);
  ASSERT_EQ(h.size(), 3u);
  EXPECT_EQ(h[2].from, "configured");
  EXPECT_EQ(h[2].to, "ready");
  EXPECT_EQ(h[2].actor, "alice");
  events = outbox("jobs", key);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[2].type, "io.conveyor.job.ready");
  EXPECT_EQ(events[2].payload.at("actor"), "alice");

  // Same-status update: not refused, not recorded.
  const std::string updated_before = db_.query_value("SELECT updated_at::text FROM conveyor.job WHERE id = " + key);
  pool_.transact([&](db::Tx& tx) { EXPECT_EQ(tx.exec(kSetStatus, {id, "ready"}).affected_rows(), 1); }, once());
  EXPECT_EQ(history(id).size(), 3u);
  EXPECT_EQ(outbox("jobs", key).size(), 3u);
  EXPECT_EQ(db_.query_value("SELECT updated_at::text FROM conveyor.job WHERE id = " + key), updated_before);
}

TEST_F(StatusMachineTest, ErrorStatusCarriesSubtypeAndMessage) {
  const std::int64_t id = insert_job();
  const std::string key = std::to_string(id);
  db_.exec(
      "UPDATE conveyor.job SET status = 'external_error', error_subtype = 'sink_unreachable',"
      " error_message = 'POST http://sink: connection refused' WHERE id = " +
      key);
  auto h = history(id);
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[1].to, "external_error");
  EXPECT_EQ(h[1].error_subtype, "sink_unreachable");
  EXPECT_EQ(h[1].message, "POST http://sink: connection refused");
  auto events = outbox("jobs", key);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].payload.at("error_subtype"), "sink_unreachable");

  // Leaving the error: the stale error columns are not copied to the history.
  db_.exec("UPDATE conveyor.job SET status = 'error_checked' WHERE id = " + key);
  h = history(id);
  ASSERT_EQ(h.size(), 3u);
  EXPECT_EQ(h[2].error_subtype, "");
  EXPECT_EQ(h[2].message, "");
}

// ------------------------------------------------------------ canceled_at (runbook 000)

TEST_F(StatusMachineTest, CanceledAtChangesEmitCancelAndRestartRequests) {
  const std::int64_t id = insert_job();
  const std::string key = std::to_string(id);

  db_.exec("UPDATE conveyor.job SET canceled_at = now() WHERE id = " + key);
  auto events = outbox("jobs", key);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].type, "io.conveyor.job.cancel_requested");
  EXPECT_EQ(events[1].subject, key);
  EXPECT_EQ(events[1].payload.at("schema_version"), 1);
  EXPECT_EQ(events[1].payload.at("job_id"), id);
  EXPECT_EQ(events[1].payload.at("status"), "initialized");
  EXPECT_TRUE(events[1].payload.at("canceled_at").is_string());
  // Requesting is not changing status: the reaction does that.
  EXPECT_EQ(history(id).size(), 1u);

  // Setting it again to the same value is not a new request.
  db_.exec("UPDATE conveyor.job SET canceled_at = canceled_at WHERE id = " + key);
  EXPECT_EQ(outbox("jobs", key).size(), 2u);

  db_.exec("UPDATE conveyor.job SET canceled_at = null WHERE id = " + key);
  events = outbox("jobs", key);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[2].type, "io.conveyor.job.restart_requested");
  EXPECT_TRUE(events[2].payload.at("canceled_at").is_null());
}

// ------------------------------------------------------------ system parameters (runbook 001)

TEST_F(StatusMachineTest, SystemParametersUpdateIsRecordedAndAnnounced) {
  ASSERT_EQ(db_.query_value("SELECT count(*) FROM conveyor.system_parameters"), "1");
  ASSERT_EQ(db_.query_value("SELECT max_number_of_worker_instances FROM conveyor.system_parameters"), "4");

  pool_.transact(
      [&](db::Tx& tx) { tx.exec_script("UPDATE conveyor.system_parameters SET max_number_of_worker_instances = 3"); },
      once("ops-alice"));

  auto hist = db_.query(
      "SELECT changed_by, array_to_string(changed_keys, ','),"
      "       old_values->>'max_number_of_worker_instances',"
      "       new_values->>'max_number_of_worker_instances'"
      "  FROM conveyor.system_parameters_history ORDER BY id");
  ASSERT_EQ(hist.size(), 1u);
  EXPECT_EQ(hist[0], (std::vector<std::string>{"ops-alice", "max_number_of_worker_instances", "4", "3"}));
  EXPECT_EQ(db_.query_value("SELECT updated_by FROM conveyor.system_parameters"), "ops-alice");

  auto events = outbox("parameters", "system_parameters");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].type, "io.conveyor.parameters.changed");
  EXPECT_EQ(events[0].payload.at("schema_version"), 1);
  EXPECT_EQ(events[0].payload.at("changed_keys"), nlohmann::json::array({"max_number_of_worker_instances"}));
  EXPECT_EQ(events[0].payload.at("new_values").at("max_number_of_worker_instances"), 3);

  // Runbook 001's waves: the job types the system handles.
  db_.exec("UPDATE conveyor.system_parameters SET job_types_list = ARRAY['fsc_rlie_job', 'rlies1_job']");
  events = outbox("parameters", "system_parameters");
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].payload.at("new_values").at("job_types_list"),
            nlohmann::json::array({"fsc_rlie_job", "rlies1_job"}));

  // An UPDATE that changes nothing records nothing.
  db_.exec("UPDATE conveyor.system_parameters SET max_number_of_worker_instances = 3");
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.system_parameters_history"), "2");
  EXPECT_EQ(outbox("parameters", "system_parameters").size(), 2u);
}

TEST_F(StatusMachineTest, SystemParametersChecksRefuseBadValues) {
  for (const char* bad : {
           "min_number_of_worker_instances = 10",  // > max (4)
           "worker_concurrency = 0",
           "worker_concurrency = 2000",
           "max_number_of_worker_instances = -1",
           "worker_heartbeat_timeout_s = 5",  // not > interval (5)
           "stall_ready_s = 0",
           "publication_max_attempts = 0",
           "image_tags = '[]'",
       }) {
    auto err = error_of(std::string("UPDATE conveyor.system_parameters SET ") + bad);
    ASSERT_TRUE(err.has_value()) << bad;
    EXPECT_EQ(err->sqlstate(), "23514") << bad << ": " << err->what();
    EXPECT_EQ(err->code(), errc::bad_input) << bad;
  }
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.system_parameters_history"), "0");
  EXPECT_EQ(db_.query_value("SELECT worker_concurrency FROM conveyor.system_parameters"), "4");
}

TEST_F(StatusMachineTest, SystemParametersHasExactlyOneRow) {
  auto second = error_of("INSERT INTO conveyor.system_parameters DEFAULT VALUES");
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->sqlstate(), "23505") << second->what();

  auto other = error_of("INSERT INTO conveyor.system_parameters (id) VALUES (false)");
  ASSERT_TRUE(other.has_value());
  EXPECT_EQ(other->sqlstate(), "23514") << other->what();

  auto del = error_of("DELETE FROM conveyor.system_parameters");
  ASSERT_TRUE(del.has_value());
  EXPECT_NE(std::string(del->what()).find("cannot be deleted"), std::string::npos) << del->what();

  auto trunc = error_of("TRUNCATE conveyor.system_parameters");
  ASSERT_TRUE(trunc.has_value());

  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.system_parameters"), "1");
}

}  // namespace
}  // namespace conveyor
