// The per-service database roles (issue 12; migration
// 20261204000100_service_roles). For each NOLOGIN role a login role that is a
// member of it connects to the test's own database, runs what its service
// runs, and is refused (SQLSTATE 42501) what it must not do. Then
// conveyor-creation and conveyor-worker run as real processes under their
// roles. Login roles are cluster-wide: each test makes its own and drops them.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "conveyor/auth/auth.hpp"
#include "conveyor/bus/relay.hpp"
#include "conveyor/db/db.hpp"
#include "conveyor/db/migrations.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/http/client.hpp"
#include "conveyor/model/job.hpp"
#include "conveyor/model/job_control.hpp"
#include "conveyor/model/submission.hpp"
#include "conveyor/model/system_parameters.hpp"
#include "conveyor/model/worker.hpp"
#include "conveyor/testing/testing.hpp"
#include "execution.hpp"

namespace conveyor {
namespace {

namespace ct = conveyor::testing;
namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kPermissionDenied = "42501";

const std::vector<std::string> kServiceRoles = {"conveyor_creation", "conveyor_configuration", "conveyor_execution",
                                                "conveyor_worker",   "conveyor_publication",   "conveyor_workerpool",
                                                "conveyor_monitor"};

// `url` (postgresql://user@host:port/db from the test environment) with another user.
std::string with_user(const std::string& url, const std::string& user) {
  const auto scheme = url.find("://");
  const auto at = url.find('@', scheme + 3);
  if (scheme == std::string::npos || at == std::string::npos) {
    throw std::runtime_error("unexpected test database url (no user@): " + url);
  }
  return url.substr(0, scheme + 3) + user + url.substr(at);
}

void admin(const std::string& sql) {
  const auto r = ct::psql(ct::TestEnv::get().admin_url(), sql);
  if (r.status != 0) throw std::runtime_error("admin SQL failed: " + sql + ": " + r.output);
}

// One LOGIN role per NOLOGIN conveyor role, member of it; dropped by the destructor.
class LoginRoles {
 public:
  LoginRoles() : prefix_(ct::unique_name("svc")) {
    for (const std::string role :
         {"conveyor_creation", "conveyor_configuration", "conveyor_execution", "conveyor_worker",
          "conveyor_publication", "conveyor_workerpool", "conveyor_monitor", "conveyor_reader"}) {
      const std::string login = prefix_ + "_" + role.substr(std::string("conveyor_").size());
      admin("CREATE ROLE \"" + login + "\" LOGIN IN ROLE " + role);
      logins_[role] = login;
    }
  }
  ~LoginRoles() {
    for (const auto& [role, login] : logins_) {
      const auto r = ct::psql(ct::TestEnv::get().admin_url(), "DROP ROLE IF EXISTS \"" + login + "\"");
      if (r.status != 0) ADD_FAILURE() << "could not drop login role " << login << ": " << r.output;
    }
  }
  LoginRoles(const LoginRoles&) = delete;
  LoginRoles& operator=(const LoginRoles&) = delete;
  const std::string& login(const std::string& role) const { return logins_.at(role); }

 private:
  std::string prefix_;
  std::map<std::string, std::string> logins_;
};

db::TxOptions once() {
  db::TxOptions o;
  o.max_attempts = 1;
  return o;
}

// A connection as one login role; literal SQL (constants of this test only).
class As {
 public:
  As(std::string url, std::string role) : url_(std::move(url)), role_(std::move(role)), session_(url_, "roles-test") {}
  db::Result run(const std::string& sql) {
    return session_.transact([&](db::Tx& tx) { return tx.exec_script(sql); }, once());
  }
  std::string value(const std::string& sql) {
    const db::Result r = run(sql);
    return r.empty() ? "" : r[0][0].as_string();
  }
  // Runs `sql` in this connection (as the services do); the error's message
  // when it fails.
  void expect_allowed(const std::string& sql) {
    try {
      run(sql);
    } catch (const db::DbError& e) {
      ADD_FAILURE() << role_ << " should be allowed: " << sql << "\n  " << e.what();
    }
  }
  // Runs `sql` as this role through psql, which shows the SQLSTATE (libpqxx
  // 6.4 leaves it out of its insufficient_privilege exception), and expects
  // 42501; one session per statement, so a refusal leaves nothing behind.
  void expect_denied(const std::string& sql) {
    const ct::RunResult r = ct::run(
        {"psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose", "-d", url_, "-c", sql}, {},
        60s);
    const auto at = r.output.find("ERROR:  ");
    const std::string state = r.status == 0             ? "(none: it succeeded)"
                              : at == std::string::npos ? r.output
                                                        : r.output.substr(at + 8, 5);
    EXPECT_EQ(state, kPermissionDenied) << role_ << " should be refused: " << sql << "\n  " << r.output;
  }
  db::Session& session() { return session_; }

 private:
  std::string url_;
  std::string role_;
  db::Session session_;
};

// A request for a job of type plain, with `key` as its idempotency key
// unless empty.
model::SubmitRequest plain_request(const std::string& key = "") {
  model::SubmitRequest r;
  r.job_type = "plain";
  if (!key.empty()) r.idempotency_key = key;
  return r;
}

class ServiceRoles : public ::testing::Test {
 protected:
  void SetUp() override {
    db_.exec(
        "INSERT INTO conveyor.job_type (name, command, triggers) VALUES "
        "('plain', '[\"true\"]', '[]'), "
        "('chained', '[\"true\"]', '[{\"job_type\": \"plain\"}]')");
  }

  std::string url_of(const std::string& role) const { return with_user(db_.url(), roles_.login(role)); }
  std::unique_ptr<As> as(const std::string& role) { return std::make_unique<As>(url_of(role), role); }
  // A pool of one connection as `role`, whose transactions are `actor`'s.
  std::unique_ptr<db::Pool> pool_as(const std::string& role, const std::string& actor = "") {
    db::PoolOptions po;
    po.url = url_of(role);
    po.size = 1;
    po.actor = actor;
    return std::make_unique<db::Pool>(po);
  }

  // A job of `type` walked (as the owner) along `path` from initialized.
  std::string job(const std::vector<std::string>& path, const std::string& type = "plain") {
    const std::string id = db_.query_value("INSERT INTO conveyor.job (job_type) VALUES ('" + type + "') RETURNING id");
    for (const auto& status : path) {
      db_.exec("UPDATE conveyor.job SET status = '" + status + "' WHERE id = " + id);
    }
    return id;
  }
  std::string field(const std::string& id, const std::string& column) {
    return db_.query_value("SELECT " + column + " FROM conveyor.job WHERE id = " + id);
  }
  std::string last_change(const std::string& id) {
    return db_.query_value(
        "SELECT coalesce(from_status, '-') || '>' || to_status || ' by ' || actor "
        "FROM conveyor.job_status_change WHERE job_id = " +
        id + " ORDER BY id DESC LIMIT 1");
  }

  ct::TestDatabase db_;
  LoginRoles roles_;
};

const std::vector<std::string> kToQueued = {"configured", "ready", "queued"};
const std::vector<std::string> kToProcessed = {"configured", "ready", "queued", "started", "processed"};

TEST_F(ServiceRoles, EveryRoleExistsAndCannotLogInItself) {
  const auto rows = db_.query(
      "SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolbypassrls FROM pg_roles "
      "WHERE rolname IN ('conveyor_creation', 'conveyor_configuration', 'conveyor_execution', "
      "'conveyor_worker', 'conveyor_publication', 'conveyor_workerpool', 'conveyor_monitor', "
      "'conveyor_reader') ORDER BY rolname");
  ASSERT_EQ(rows.size(), 8u);
  for (const auto& r : rows) {
    EXPECT_EQ(r[1], "f") << r[0] << " must be NOLOGIN";
    EXPECT_EQ(r[2], "f") << r[0];
    EXPECT_EQ(r[3], "f") << r[0];
    EXPECT_EQ(r[4], "f") << r[0];
  }
  // No role may create objects in the schema.
  for (const auto& role : kServiceRoles) {
    EXPECT_EQ(db_.query_value("SELECT has_schema_privilege('" + role + "', 'conveyor', 'CREATE')"), "f");
  }
  auto creation = as("conveyor_creation");
  creation->expect_denied("CREATE TABLE conveyor.evil (id int)");
}

// What libs/core does in every service: heartbeats, parameters, the auth
// guard's token check, and the outbox relay (read, save its place, purge).
TEST_F(ServiceRoles, EveryServiceRoleRunsTheRuntimeTheRelayAndTheAuthGuard) {
  ct::Broker broker;
  const std::string token = ct::create_api_token(db_.url(), "roles-reader", "reader");
  for (const auto& role : kServiceRoles) {
    SCOPED_TRACE(role);
    auto s = as(role);
    s->expect_allowed(
        "INSERT INTO conveyor.service_instance (id, service, host, pid, version, image_tag, started_at, "
        "last_heartbeat, status) VALUES ('" +
        role + "-1', '" + role +
        "', 'h', 1, 'v', 't', now(), now(), 'up') "
        "ON CONFLICT (id) DO UPDATE SET service = EXCLUDED.service, host = EXCLUDED.host, pid = EXCLUDED.pid, "
        "version = EXCLUDED.version, image_tag = EXCLUDED.image_tag, started_at = now(), "
        "last_heartbeat = now(), status = EXCLUDED.status");
    s->expect_allowed(
        "UPDATE conveyor.service_instance SET last_heartbeat = now(), broker = 'up', "
        "status = CASE WHEN status = 'down' THEN 'up' ELSE status END WHERE id = '" +
        role + "-1'");
    EXPECT_NO_THROW(s->session().transact([](db::Tx& tx) { return model::load_system_parameters(tx); }));

    // The guard: an active reader token passes and its last_used_at is refreshed.
    db_.exec("UPDATE conveyor.api_token SET last_used_at = NULL WHERE name = 'roles-reader'");
    {
      db::PoolOptions po;
      po.url = url_of(role);
      po.size = 1;
      db::Pool pool(po);
      auth::Identity who;
      const auto refused = auth::authenticate(pool, token, auth::Role::reader, "GET /v1/jobs", false, &who);
      EXPECT_FALSE(refused.has_value()) << (refused ? refused->body : "");
      EXPECT_EQ(who.name, "roles-reader");
    }
    EXPECT_EQ(db_.query_value("SELECT last_used_at IS NOT NULL FROM conveyor.api_token WHERE name = 'roles-reader'"),
              "t");
    // A token is not something a service writes.
    s->expect_denied("UPDATE conveyor.api_token SET revoked_at = NULL");
    s->expect_denied(
        "INSERT INTO conveyor.api_token (name, token_sha256, role) VALUES ('x', repeat('a', 64), 'operator')");

    // The relay: two unsent events are published and the relay saves its
    // place; the one past the retention, now sent, is purged.
    db_.exec(
        "INSERT INTO conveyor.outbox (topic, key, type, payload) VALUES ('jobs', '1', 'io.conveyor.test', '{}');"
        "INSERT INTO conveyor.outbox (topic, key, type, payload, created_at) "
        "VALUES ('jobs', '1', 'io.conveyor.old', '{}', now() - interval '30 days')");
    {
      bus::RelayOptions ro;
      ro.database_url = url_of(role);
      ro.brokers = broker.bootstrap();
      ro.topic_prefix = ct::unique_name("roles");
      ro.source = role;
      bus::Relay relay(ro);
      EXPECT_TRUE(ct::wait_until(
          [&] {
            relay.run_once();
            return db_.query_value("SELECT count(*) FROM conveyor.outbox_unsent()") == "0";
          },
          20s))
          << role << " could not publish the outbox";
    }
    EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.outbox WHERE type = 'io.conveyor.old'"), "0")
        << role << " did not purge old sent events";

    // Nobody but the owner and conveyor_creation's PATCH changes parameters.
    if (role != "conveyor_creation") {
      s->expect_denied("UPDATE conveyor.system_parameters SET max_number_of_worker_instances = 9");
    }
    s->expect_denied("UPDATE conveyor.job_type SET enabled = false");
    s->expect_denied("DELETE FROM conveyor.job_status_change");
    s->expect_denied("UPDATE conveyor.job_status_change SET actor = 'someone else'");
    s->expect_denied("UPDATE conveyor.outbox SET payload = '{}'");
    // The fence of migration 20261225000000: a relay of an earlier version,
    // which marked rows sent_at, fails instead of sending them again.
    s->expect_denied("UPDATE conveyor.outbox SET sent_at = now()");
  }
}

TEST_F(ServiceRoles, CreationSubmitsCancelsRetriesAndPatchesButCannotDeleteHistory) {
  const auto owned = pool_as("conveyor_creation", "conveyor-creation");
  db::Pool& pool = *owned;
  // Submit: INSERT of the job, and the history trigger writes as this role.
  const auto submitted = pool.transact([](db::Tx& tx) {
    model::SubmitRequest r;
    r.job_type = "plain";
    r.idempotency_key = "roles-1";
    return model::submit_job(tx, model::load_system_parameters(tx), r);
  });
  ASSERT_TRUE(submitted.created);
  const std::string id = std::to_string(submitted.job.id.value());
  EXPECT_EQ(last_change(id), "->initialized by conveyor-creation");
  EXPECT_EQ(field(id, "submitted_by"), "conveyor-creation");
  // The same key again: the existing job (ON CONFLICT ... DO NOTHING RETURNING).
  EXPECT_FALSE(pool.transact([](db::Tx& tx) {
                     model::SubmitRequest r;
                     r.job_type = "plain";
                     r.idempotency_key = "roles-1";
                     return model::submit_job(tx, model::load_system_parameters(tx), r);
                   })
                   .created);

  // Cancel (canceled_at, then the status), then retry (a restart at initialized).
  EXPECT_TRUE(pool.transact([&](db::Tx& tx) { return model::cancel_job(tx, submitted.job.id); }).completed);
  EXPECT_EQ(field(id, "status"), "canceled");
  pool.transact([&](db::Tx& tx) { model::retry_job(tx, submitted.job.id); });
  EXPECT_EQ(last_change(id), "canceled>initialized by conveyor-creation");
  EXPECT_NO_THROW(pool.transact([&](db::Tx& tx) { return model::load_history(tx, submitted.job.id); }));

  // PATCH /v1/parameters (operator tokens only, checked by the API).
  pool.transact([](db::Tx& tx) { model::patch_system_parameters(tx, json{{"max_number_of_worker_instances", 7}}); });
  EXPECT_EQ(db_.query_value("SELECT max_number_of_worker_instances FROM conveyor.system_parameters"), "7");
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.system_parameters_history"), "1");

  auto s = as("conveyor_creation");
  // The scheduler's state and the triggers' queue.
  s->expect_allowed(
      "INSERT INTO conveyor.schedule_state (job_type, last_slot, catchup_start_applied) "
      "VALUES ('plain', now(), NULL) ON CONFLICT (job_type) DO NOTHING");
  s->expect_allowed("SELECT paused FROM conveyor.schedule_state WHERE job_type = 'plain' FOR UPDATE");
  s->expect_allowed(
      "UPDATE conveyor.schedule_state SET last_slot = now(), next_slot = now(), created_count = created_count + 1, "
      "last_error = NULL, updated_at = now() WHERE job_type = 'plain'");
  db_.exec("INSERT INTO conveyor.trigger_pending (job_id, job_type) VALUES (" + id + ", 'plain')");
  s->expect_allowed("SELECT 1 FROM conveyor.trigger_pending WHERE job_id = " + id + " FOR UPDATE SKIP LOCKED");
  s->expect_allowed("UPDATE conveyor.trigger_pending SET failed_at = now(), last_error = 'x' WHERE job_id = " + id);
  s->expect_allowed("DELETE FROM conveyor.trigger_pending WHERE job_id = " + id);

  // Not: history, deleting jobs, forging who submitted, job types, pauses.
  s->expect_denied("DELETE FROM conveyor.job_status_change WHERE job_id = " + id);
  s->expect_denied("TRUNCATE conveyor.job_status_change");
  s->expect_denied("DELETE FROM conveyor.job WHERE id = " + id);
  s->expect_denied("INSERT INTO conveyor.job (job_type, submitted_by) VALUES ('plain', 'api:someone-else')");
  s->expect_denied("INSERT INTO conveyor.job (job_type, status) VALUES ('plain', 'canceled')");
  s->expect_denied("UPDATE conveyor.job SET submitted_by = 'api:someone-else' WHERE id = " + id);
  s->expect_denied("UPDATE conveyor.job SET params = '{}' WHERE id = " + id);
  s->expect_denied("INSERT INTO conveyor.job_type (name) VALUES ('evil')");
  s->expect_denied("UPDATE conveyor.schedule_state SET paused = false");
  s->expect_denied("DELETE FROM conveyor.system_parameters_history");
  s->expect_denied("SELECT * FROM conveyor.worker");
  // Submit, cancel, retry: three rows, none taken away.
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job_status_change WHERE job_id = " + id), "3");
}

// POST /v1/jobs's one round trip (model::submit_job_at_once), as
// conveyor-creation: the request's actor is the history's and submitted_by,
// and a job type changed since it was read is never used; whatever the
// statement cannot answer is left to submit_job's transaction.
TEST_F(ServiceRoles, CreationSubmitsAJobInOneStatementWhileItsTypeIsTheOneItRead) {
  const auto owned = pool_as("conveyor_creation", "conveyor-creation");
  db::Pool& pool = *owned;
  const auto parameters = pool.transact([](db::Tx& tx) { return model::load_system_parameters(tx); });
  model::JobTypeCache cache;

  const auto first = model::submit_job_at_once(pool, parameters, plain_request(), "api:alice", cache);
  ASSERT_TRUE(first.has_value()) << "the type read, then the job inserted in one statement";
  const std::string id = std::to_string(first->job.id.value());
  EXPECT_TRUE(first->created);
  EXPECT_EQ(first->job.status, model::JobStatus::initialized);
  EXPECT_EQ(last_change(id), "->initialized by api:alice");
  EXPECT_EQ(field(id, "submitted_by"), "api:alice");
  EXPECT_EQ(db_.query_value("SELECT payload->>'actor' FROM conveyor.outbox WHERE subject = '" + id + "'"), "api:alice");
  ASSERT_NE(cache.find("plain"), nullptr);
  EXPECT_EQ(cache.find("plain")->version,
            db_.query_value("SELECT xmin::text FROM conveyor.job_type WHERE name = 'plain'"));

  // The request's actor lasts its statement only: the connection's is the
  // pool's again. No actor of its own: the pool's, as in transact.
  static constexpr db::Statement kActor{"test_actor", "SELECT current_setting('conveyor.actor', true)"};
  EXPECT_EQ(pool.exec_idempotent(kActor)[0][0].as_string(), "conveyor-creation");
  const auto second = model::submit_job_at_once(pool, parameters, plain_request(), "", cache);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(field(std::to_string(second->job.id.value()), "submitted_by"), "conveyor-creation");

  // The type changed after it was read: nothing inserted, the type
  // forgotten; the next submission reads it again and gets its new priority.
  db_.exec("UPDATE conveyor.job_type SET priority = 7 WHERE name = 'plain'");
  const std::string jobs_before = db_.query_value("SELECT count(*) FROM conveyor.job");
  EXPECT_FALSE(model::submit_job_at_once(pool, parameters, plain_request(), "api:alice", cache).has_value());
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job"), jobs_before);
  EXPECT_EQ(cache.find("plain"), nullptr);
  const auto third = model::submit_job_at_once(pool, parameters, plain_request(), "api:alice", cache);
  ASSERT_TRUE(third.has_value());
  EXPECT_EQ(third->job.priority, 7);

  // Disabled after it was read: not inserted; submit_job names the reason.
  db_.exec("UPDATE conveyor.job_type SET enabled = false WHERE name = 'plain'");
  EXPECT_FALSE(model::submit_job_at_once(pool, parameters, plain_request(), "api:alice", cache).has_value());
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job"), std::to_string(std::stoi(jobs_before) + 1));
  EXPECT_THROW(pool.transact([&](db::Tx& tx) { return model::submit_job(tx, parameters, plain_request()); }),
               UnprocessableError);
  db_.exec("UPDATE conveyor.job_type SET enabled = true WHERE name = 'plain'");

  // A key that exists: not answered here; submit_job returns its job.
  const auto keyed = model::submit_job_at_once(pool, parameters, plain_request("once-1"), "api:alice", cache);
  ASSERT_TRUE(keyed.has_value());
  EXPECT_FALSE(model::submit_job_at_once(pool, parameters, plain_request("once-1"), "api:alice", cache).has_value());
  EXPECT_NE(cache.find("plain"), nullptr) << "the type is unchanged: kept";
  const auto again =
      pool.transact([&](db::Tx& tx) { return model::submit_job(tx, parameters, plain_request("once-1")); });
  EXPECT_FALSE(again.created);
  EXPECT_EQ(again.job.id, keyed->job.id);

  // depends_on and not_before at once; a dependency that does not exist, a
  // date PostgreSQL refuses and params the type refuses go to submit_job,
  // which names them.
  auto depends = plain_request();
  depends.depends_on = {first->job.id.value()};
  depends.not_before = "2030-01-01T00:00:00Z";
  const auto dependent = model::submit_job_at_once(pool, parameters, depends, "api:alice", cache);
  ASSERT_TRUE(dependent.has_value());
  const std::string dependent_id = std::to_string(dependent->job.id.value());
  EXPECT_EQ(field(dependent_id, "depends_on::text"), "{" + id + "}");
  EXPECT_EQ(field(dependent_id, "not_before = '2030-01-01T00:00:00Z'"), "t");
  depends.depends_on = {first->job.id.value(), 999999};
  EXPECT_FALSE(model::submit_job_at_once(pool, parameters, depends, "api:alice", cache).has_value());
  EXPECT_NE(cache.find("plain"), nullptr) << "the type is unchanged: kept";
  EXPECT_THROW(pool.transact([&](db::Tx& tx) { return model::submit_job(tx, parameters, depends); }),
               UnprocessableError);
  auto later = plain_request();
  later.not_before = "2026-13-45";
  EXPECT_FALSE(model::submit_job_at_once(pool, parameters, later, "api:alice", cache).has_value());
  EXPECT_THROW(pool.transact([&](db::Tx& tx) { return model::submit_job(tx, parameters, later); }), FieldError);
  db_.exec(
      "UPDATE conveyor.job_type SET params_schema = "
      "'{\"properties\": {\"n\": {\"type\": \"integer\"}}, \"additionalProperties\": false}' "
      "WHERE name = 'plain'");
  auto extra = plain_request();
  extra.params = json{{"m", 1}};
  EXPECT_FALSE(model::submit_job_at_once(pool, parameters, extra, "api:alice", cache).has_value())
      << "the schema changed: the type is read again";
  EXPECT_FALSE(model::submit_job_at_once(pool, parameters, extra, "api:alice", cache).has_value())
      << "the schema refuses the params";
  EXPECT_EQ(cache.find("plain"), nullptr);
  EXPECT_THROW(pool.transact([&](db::Tx& tx) { return model::submit_job(tx, parameters, extra); }), UnprocessableError);
  auto unknown = plain_request();
  unknown.job_type = "nonesuch";
  EXPECT_FALSE(model::submit_job_at_once(pool, parameters, unknown, "api:alice", cache).has_value());
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job"), std::to_string(std::stoi(jobs_before) + 3));
}

// POST /v1/jobs's group commit (model::insert_at_once, model::SubmitGroup):
// the requests that come while another group is written go in one
// statement per actor, and each is answered as submit_job_at_once answers
// it alone.
TEST_F(ServiceRoles, CreationInsertsAGroupOfSubmissionsInOneStatementEachAnsweredAsAlone) {
  const auto owned = pool_as("conveyor_creation", "conveyor-creation");
  db::Pool& pool = *owned;
  const auto parameters = pool.transact([](db::Tx& tx) { return model::load_system_parameters(tx); });
  model::JobTypeCache cache;
  auto prepared = [&](const model::SubmitRequest& r) {
    auto p = model::prepare_at_once(pool, parameters, r, cache);
    EXPECT_TRUE(p.has_value()) << "the checks before the statement pass";
    return p.value_or(model::PreparedSubmit{});
  };
  const auto upstream = model::submit_job_at_once(pool, parameters, plain_request(), "api:alice", cache);
  ASSERT_TRUE(upstream.has_value());
  const std::int64_t upstream_id = upstream->job.id.value();

  auto missing = plain_request();
  missing.depends_on = {999999};
  auto dependent = plain_request();
  dependent.depends_on = {upstream_id};
  auto missing_keyed = missing;
  missing_keyed.idempotency_key = "g-2";
  const model::PreparedSubmit group[] = {
      prepared(plain_request()), prepared(plain_request("g-1")), prepared(plain_request("g-1")), prepared(missing),
      prepared(dependent),       prepared(missing_keyed),        prepared(plain_request("g-2"))};
  const auto results = model::insert_at_once(
      pool, {&group[0], &group[1], &group[2], &group[3], &group[4], &group[5], &group[6]}, "api:bob", cache);
  ASSERT_EQ(results.size(), 7u);
  EXPECT_FALSE(results[5].has_value()) << "a job of depends_on does not exist";
  ASSERT_TRUE(results[6].has_value()) << "the key's first request inserted nothing: the second's job";
  EXPECT_EQ(results[6]->job.idempotency_key, std::optional<std::string>("g-2"));
  ASSERT_TRUE(results[0].has_value());
  ASSERT_TRUE(results[1].has_value());
  EXPECT_FALSE(results[2].has_value()) << "the key the group's second request took: submit_job answers";
  EXPECT_FALSE(results[3].has_value()) << "a job of depends_on does not exist: submit_job names it";
  ASSERT_TRUE(results[4].has_value());
  EXPECT_EQ(results[1]->job.idempotency_key, std::optional<std::string>("g-1"));
  EXPECT_EQ(results[4]->job.depends_on, std::vector<std::int64_t>{upstream_id});
  EXPECT_LT(results[0]->job.id, results[1]->job.id) << "ids ascend with the requests";
  EXPECT_LT(results[1]->job.id, results[4]->job.id);
  const std::string ids = std::to_string(results[0]->job.id.value()) + "," +
                          std::to_string(results[1]->job.id.value()) + "," + std::to_string(results[4]->job.id.value());
  EXPECT_EQ(db_.query_value("SELECT count(DISTINCT xmin::text) FROM conveyor.job WHERE id IN (" + ids + ")"), "1")
      << "one statement, one transaction";
  for (const auto& r : {results[0], results[1], results[4]}) {
    const std::string id = std::to_string(r->job.id.value());
    EXPECT_EQ(last_change(id), "->initialized by api:bob");
    EXPECT_EQ(field(id, "submitted_by"), "api:bob");
  }
  const auto again = pool.transact([&](db::Tx& tx) { return model::submit_job(tx, parameters, plain_request("g-1")); });
  EXPECT_FALSE(again.created);
  EXPECT_EQ(again.job.id, results[1]->job.id);

  // A value PostgreSQL refuses fails the group's statement: nothing of it
  // inserted, every request left to submit_job, which names the culprit.
  auto later = plain_request();
  later.not_before = "2026-13-45";
  const std::string jobs_before = db_.query_value("SELECT count(*) FROM conveyor.job");
  const model::PreparedSubmit refused[] = {prepared(plain_request()), prepared(later)};
  const auto none = model::insert_at_once(pool, {&refused[0], &refused[1]}, "api:bob", cache);
  EXPECT_FALSE(none[0].has_value());
  EXPECT_FALSE(none[1].has_value());
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job"), jobs_before);

  // Threads of two actors through SubmitGroup, keyed and not: every
  // request answered with a job of its own, its actor's and with its params,
  // whatever the groups.
  model::SubmitGroup submissions(pool);
  constexpr int kThreads = 8;
  constexpr int kEach = 6;
  std::vector<std::string> made(kThreads * kEach);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < kEach; ++k) {
        const int n = t * kEach + k;
        const std::string actor = t % 2 == 0 ? "api:even" : "api:odd";
        auto r = plain_request(k % 2 == 0 ? "" : "t-" + std::to_string(n));
        r.params = json{{"n", n}};
        const auto answer = submissions.submit(parameters, r, actor);
        made[static_cast<std::size_t>(n)] = answer ? std::to_string(answer->job.id.value()) : "none";
      }
    });
  }
  for (auto& th : threads) th.join();
  std::set<std::string> distinct;
  for (std::size_t n = 0; n < made.size(); ++n) {
    ASSERT_NE(made[n], "none") << n;
    const std::string& id = made[n];
    distinct.insert(id);
    const std::string actor = (n / kEach) % 2 == 0 ? "api:even" : "api:odd";
    EXPECT_EQ(field(id, "params->>'n'"), std::to_string(n)) << "request " << n << " got another's job";
    EXPECT_EQ(field(id, "submitted_by"), actor) << n;
    EXPECT_EQ(last_change(id), "->initialized by " + actor) << n;
  }
  EXPECT_EQ(distinct.size(), made.size()) << "no job answered twice";
}

TEST_F(ServiceRoles, ConfigurationConfiguresButCannotTouchParamsOrParameters) {
  const std::string id = job({});
  auto s = as("conveyor_configuration");
  s->expect_allowed("SELECT name, command::text FROM conveyor.job_type");
  s->expect_allowed(
      "SELECT id FROM conveyor.job WHERE status = 'initialized' AND canceled_at IS NULL "
      "ORDER BY id LIMIT 10 FOR UPDATE SKIP LOCKED");
  s->expect_allowed(
      "UPDATE conveyor.job SET status = 'configured', config = '{\"argv\": [\"true\"]}', "
      "max_attempts = 2 WHERE id = " +
      id + " AND status = 'initialized'");
  EXPECT_EQ(field(id, "status"), "configured");
  EXPECT_EQ(last_change(id), "initialized>configured by " + roles_.login("conveyor_configuration"));
  s->expect_allowed("UPDATE conveyor.job SET status = 'ready', config = '{}' WHERE id = " + id);
  // Its batch statement (issue 14), as the service writes it.
  const std::string batch = job({});
  s->expect_allowed("SELECT conveyor.apply_configuration('initialized', ARRAY[" + batch +
                    "]::bigint[], '{configured}', '{\"{\\\"argv\\\": [\\\"true\\\"]}\"}', '{2}', '{\"\"}', "
                    "'{\"\"}')");
  EXPECT_EQ(field(batch, "status"), "configured");
  EXPECT_EQ(field(batch, "max_attempts"), "2");
  EXPECT_EQ(last_change(batch), "initialized>configured by " + roles_.login("conveyor_configuration"));

  s->expect_denied("UPDATE conveyor.job SET params = '{\"x\": 1}' WHERE id = " + id);
  s->expect_denied("UPDATE conveyor.job SET priority = 99 WHERE id = " + id);
  s->expect_denied("INSERT INTO conveyor.job (job_type) VALUES ('plain')");
  s->expect_denied("DELETE FROM conveyor.job WHERE id = " + id);
  s->expect_denied("UPDATE conveyor.job_type SET command = '[\"rm\"]'");
}

TEST_F(ServiceRoles, ExecutionAdmitsButCannotPauseOrReprioritise) {
  const std::string id = job({"configured", "ready"});
  auto s = as("conveyor_execution");
  s->expect_allowed("SELECT kind, name FROM conveyor.queue_state WHERE paused");
  s->expect_allowed("SELECT name, concurrency_limit FROM conveyor.job_type WHERE concurrency_limit IS NOT NULL");
  s->expect_allowed(
      "SELECT id FROM conveyor.job WHERE status = 'ready' ORDER BY priority DESC, created_at, id "
      "LIMIT 10 FOR UPDATE SKIP LOCKED");
  s->expect_allowed("UPDATE conveyor.job SET status = 'queued' WHERE id = ANY(ARRAY[" + id +
                    "]::bigint[]) "
                    "AND status = 'ready'");
  EXPECT_EQ(field(id, "status"), "queued");
  // Admission's own pass, as the service runs it: it assigns the job to the
  // registered worker, reading the workers' pools, room and heartbeats (not
  // their hosts).
  const std::string next = job({"configured", "ready"});
  const std::string worker = db_.query_value("INSERT INTO conveyor.worker (name) VALUES ('w-admit') RETURNING id");
  {
    db::PoolOptions po;
    po.url = url_of("conveyor_execution");
    po.size = 1;
    db::Pool pool(po);
    const auto params = pool.transact([](db::Tx& tx) { return model::load_system_parameters(tx); });
    EXPECT_EQ(execution::admit_batch(pool, params, 10), 1);
  }
  EXPECT_EQ(field(next, "status"), "queued");
  EXPECT_EQ(field(next, "worker_id"), worker);
  s->expect_denied("SELECT host FROM conveyor.worker");

  s->expect_denied("UPDATE conveyor.job SET priority = 99 WHERE id = " + id);
  s->expect_denied("UPDATE conveyor.job SET not_before = now() WHERE id = " + id);
  s->expect_denied("INSERT INTO conveyor.queue_state (kind, name, paused) VALUES ('pool', 'default', true)");
  s->expect_denied("SELECT * FROM conveyor.worker");
}

TEST_F(ServiceRoles, WorkerClaimsAndEndsItsJobsButNothingElse) {
  const std::string queued = job(kToQueued);
  const std::string done = job({"configured", "ready", "queued", "started", "processed", "done"});
  auto s = as("conveyor_worker");
  const std::string worker_id = s->value(
      "INSERT INTO conveyor.worker (name, host, pid, pool, concurrency, running, status, started_at, "
      "last_heartbeat, stopped_at, version) VALUES ('w1', 'h', 1, 'default', 2, 0, 'active', now(), now(), NULL, 'v') "
      "ON CONFLICT (name) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, pool = EXCLUDED.pool, "
      "concurrency = EXCLUDED.concurrency, running = 0, status = 'active', started_at = now(), "
      "last_heartbeat = now(), stopped_at = NULL, version = EXCLUDED.version RETURNING id");
  ASSERT_FALSE(worker_id.empty());
  s->expect_allowed("SELECT id FROM conveyor.installation");
  // The claim: queued -> started, and an attempt row.
  EXPECT_EQ(s->value("WITH claimed AS (UPDATE conveyor.job SET status = 'started', worker_id = " + worker_id +
                     " WHERE id = ANY(ARRAY(SELECT conveyor.claimable_jobs(" + worker_id +
                     ", 'default', false, 5, true))) AND status = 'queued' "
                     "RETURNING id, attempt, job_type), "
                     "attempts AS (INSERT INTO conveyor.job_attempt (job_id, attempt, job_type, worker_id, worker, "
                     "image, started_at) SELECT id, attempt, job_type, " +
                     worker_id +
                     ", 'w1', NULL, now() FROM claimed) "
                     "SELECT id FROM claimed"),
            queued);
  EXPECT_EQ(last_change(queued), "queued>started by " + roles_.login("conveyor_worker"));
  s->expect_allowed(
      "UPDATE conveyor.worker SET last_heartbeat = now(), running = 1, concurrency = 2, "
      "running_jobs = ARRAY[" +
      queued + "]::bigint[], running_jobs_at = now() WHERE id = " + worker_id);
  s->expect_allowed(
      "UPDATE conveyor.job_attempt SET ended_at = now(), outcome = 'processed', exit_code = 0, "
      "wall_ms = 1 WHERE job_id = " +
      queued + " AND ended_at IS NULL");
  s->expect_allowed(
      "UPDATE conveyor.job SET status = 'processed', result = '{\"ok\": true}', error_subtype = NULL, "
      "error_message = NULL WHERE id = " +
      queued + " AND status = 'started' AND worker_id = " + worker_id);
  EXPECT_EQ(field(queued, "status"), "processed");

  // Not: parameters, job types, pauses, other columns of a job, jobs that
  // are neither queued nor started (row-level security: 0 rows, unchanged).
  s->expect_denied("UPDATE conveyor.system_parameters SET max_number_of_worker_instances = 100");
  s->expect_denied("UPDATE conveyor.job_type SET command = '[\"sh\", \"-c\", \"curl evil\"]' WHERE name = 'plain'");
  s->expect_denied("INSERT INTO conveyor.job_type (name) VALUES ('evil')");
  s->expect_denied("UPDATE conveyor.queue_state SET paused = false");
  s->expect_denied("UPDATE conveyor.job SET params = '{}' WHERE id = " + queued);
  s->expect_denied("UPDATE conveyor.job SET config = '{}' WHERE id = " + queued);
  s->expect_denied("UPDATE conveyor.job SET canceled_at = NULL WHERE id = " + queued);
  s->expect_denied("UPDATE conveyor.job SET job_type = 'chained' WHERE id = " + queued);
  s->expect_denied("INSERT INTO conveyor.job (job_type) VALUES ('plain')");
  s->expect_denied("DELETE FROM conveyor.job WHERE id = " + done);
  s->expect_denied("DELETE FROM conveyor.worker");
  // A job type's name and triggers only, which its move to done reads
  // (record_trigger_pending, migration 20270104000000): not its command or env.
  s->expect_denied("SELECT * FROM conveyor.job_type");
  s->expect_denied("SELECT env FROM conveyor.job_type");
  s->expect_allowed("SELECT name, triggers FROM conveyor.job_type");
  EXPECT_EQ(s->run("UPDATE conveyor.job SET result = '{\"forged\": true}' WHERE id = " + done).affected_rows(), 0);
  EXPECT_EQ(s->run("UPDATE conveyor.job SET result = '{\"forged\": true}' WHERE id = " + queued).affected_rows(), 0)
      << "a processed job is not the worker's any more";
  EXPECT_EQ(field(done, "result IS NULL"), "t");
  EXPECT_EQ(field(queued, "result::text"), "{\"ok\": true}");
}

TEST_F(ServiceRoles, PublicationEndsProcessedJobsAndFiresTriggers) {
  const std::string id = job(kToProcessed, "chained");
  auto s = as("conveyor_publication");
  s->expect_allowed("SELECT id, result::text FROM conveyor.job WHERE id IN (SELECT conveyor.publishable_jobs(10))");
  s->expect_allowed("SELECT count(*) FROM conveyor.job_status_change WHERE job_id = " + id +
                    " AND from_status = 'processed' AND to_status = 'external_error'");
  // The claim that keeps other replicas off a job while it is delivered: the
  // function the service calls, then by hand.
  EXPECT_EQ(s->value("SELECT id FROM conveyor.claim_publishable(10, 300000, 'p1')"), id);
  s->expect_allowed(
      "UPDATE conveyor.job SET publication_claimed_until = now() + interval '5 minutes', "
      "publication_claimed_by = 'p1' WHERE id = " +
      id);
  s->expect_allowed(
      "UPDATE conveyor.job SET status = 'done', error_subtype = NULL, error_message = NULL "
      "WHERE id = " +
      id + " AND status = 'processed'");
  EXPECT_EQ(field(id, "status"), "done");
  // record_trigger_pending ran as this role: the downstream job is queued for creation.
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.trigger_pending WHERE job_id = " + id), "1");

  s->expect_denied("UPDATE conveyor.job SET result = '{}' WHERE id = " + id);
  s->expect_denied("DELETE FROM conveyor.trigger_pending");
  s->expect_denied("SELECT last_error FROM conveyor.trigger_pending");
  s->expect_denied("INSERT INTO conveyor.job (job_type) VALUES ('plain')");
  s->expect_denied("UPDATE conveyor.system_parameters SET publication_endpoint_url = 'http://evil.example'");
  s->expect_denied("UPDATE conveyor.job_type SET sinks = '[]'");
}

TEST_F(ServiceRoles, WorkerPoolReapsAndDrainsButCannotRegisterOrDeleteWorkers) {
  const std::string id = job(kToQueued);
  db_.exec(
      "INSERT INTO conveyor.worker (name, status, last_heartbeat) VALUES ('gone', 'active', now() - interval '1 hour');"
      "INSERT INTO conveyor.worker (name, status) VALUES ('alive', 'active');"
      "UPDATE conveyor.job SET status = 'started', worker_id = (SELECT id FROM conveyor.worker WHERE name = 'gone') "
      "WHERE id = " +
      id +
      ";"
      "INSERT INTO conveyor.job_attempt (job_id, attempt, job_type, worker) VALUES (" +
      id + ", 0, 'plain', 'gone')");
  db::PoolOptions po;
  po.url = url_of("conveyor_workerpool");
  po.size = 1;
  db::Pool pool(po);
  const auto reaped = pool.transact([](db::Tx& tx) { return model::reap_lost_workers(tx, std::chrono::seconds(30)); });
  EXPECT_EQ(reaped.lost_workers, std::vector<std::string>{"gone"});
  EXPECT_EQ(field(id, "status"), "internal_error");  // max_attempts 1
  EXPECT_EQ(db_.query_value("SELECT outcome FROM conveyor.job_attempt WHERE job_id = " + id), "lost");

  auto s = as("conveyor_workerpool");
  s->expect_allowed(
      "SELECT count(*) FROM conveyor.job WHERE status IN ('queued', 'started') "
      "AND coalesce(config->>'pool', 'default') = 'default'");
  s->expect_allowed("UPDATE conveyor.worker SET status = 'draining' WHERE name = 'alive' AND status = 'active'");
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.worker WHERE name = 'alive'"), "draining");

  s->expect_denied("INSERT INTO conveyor.worker (name) VALUES ('fake')");
  s->expect_denied("DELETE FROM conveyor.worker");
  s->expect_denied("UPDATE conveyor.worker SET running_jobs = '{}'");
  s->expect_denied("UPDATE conveyor.job SET config = '{}' WHERE id = " + id);
  s->expect_denied("UPDATE conveyor.system_parameters SET max_number_of_worker_instances = 100");
}

TEST_F(ServiceRoles, MonitorReconcilesAndDeletesWhatItRetainsButNotJobTypesOrParameters) {
  // A cancel to finish, a restart to apply, an old finished job to retain.
  const std::string cancel = job({"configured"});
  db_.exec("UPDATE conveyor.job SET canceled_at = now() WHERE id = " + cancel);
  const std::string restart = job({"canceled"});
  db_.exec("UPDATE conveyor.job SET canceled_at = NULL WHERE id = " + restart);
  const std::string old = job({"canceled"});
  // (Setting only updated_at fires no status trigger.)
  db_.exec(
      "UPDATE conveyor.job SET updated_at = now() - interval '400 days' WHERE id = " + old +
      ";"
      "INSERT INTO conveyor.worker (name, status, last_heartbeat) VALUES ('stopped', 'stopped', now() - interval '30 days');"
      "INSERT INTO conveyor.service_instance (id, service, status, last_heartbeat) "
      "VALUES ('old', 'conveyor-x', 'down', now() - interval '30 days')");
  db::PoolOptions po;
  po.url = url_of("conveyor_monitor");
  po.size = 1;
  db::Pool pool(po);
  EXPECT_TRUE(pool.transact([&](db::Tx& tx) { return model::finish_cancel(tx, model::JobId(std::stoll(cancel))); })
                  .has_value());
  EXPECT_EQ(field(cancel, "status"), "canceled");
  EXPECT_TRUE(
      pool.transact([&](db::Tx& tx) { return model::restart_canceled(tx, model::JobId(std::stoll(restart))); }));
  EXPECT_EQ(field(restart, "status"), "initialized");
  EXPECT_NO_THROW(pool.transact([](db::Tx& tx) { return model::reap_lost_workers(tx, std::chrono::seconds(30)); }));

  auto s = as("conveyor_monitor");
  s->expect_allowed("UPDATE conveyor.job SET reemitted_at = now() WHERE id = " + restart);
  s->expect_allowed("SELECT pg_notify('conveyor_outbox', '')");
  s->expect_allowed("SELECT count(*) FROM conveyor.trigger_pending WHERE failed_at IS NOT NULL");
  s->expect_allowed("SELECT count(*) FROM conveyor.schedule_state WHERE last_error IS NOT NULL");
  s->expect_allowed("SELECT 1 FROM conveyor.queue_state WHERE paused");
  s->expect_allowed(
      "UPDATE conveyor.service_instance SET status = 'down' WHERE status IN ('up', 'draining') "
      "AND last_heartbeat < now() - interval '1 hour'");
  // Retention, as the reconciler's purge: the job goes with its history (cascade).
  EXPECT_EQ(s->value("WITH doomed AS (SELECT j.id FROM conveyor.job j "
                     "WHERE j.status IN ('done', 'canceled', 'failed', 'internal_error') "
                     "AND j.updated_at < now() - interval '90 days' ORDER BY j.updated_at LIMIT 100 "
                     "FOR UPDATE OF j SKIP LOCKED) "
                     "DELETE FROM conveyor.job j USING doomed WHERE j.id = doomed.id RETURNING j.id"),
            old);
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.job_status_change WHERE job_id = " + old), "0");
  s->expect_allowed(
      "DELETE FROM conveyor.worker WHERE status IN ('stopped', 'lost') "
      "AND last_heartbeat < now() - interval '7 days'");
  s->expect_allowed(
      "DELETE FROM conveyor.service_instance WHERE status IN ('stopped', 'down') "
      "AND last_heartbeat < now() - interval '7 days'");
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.worker WHERE name = 'stopped'"), "0");
  EXPECT_EQ(db_.query_value("SELECT count(*) FROM conveyor.service_instance WHERE id = 'old'"), "0");

  s->expect_denied("DELETE FROM conveyor.job_status_change WHERE job_id = " + cancel);
  s->expect_denied("UPDATE conveyor.system_parameters SET job_retention_days = 1");
  s->expect_denied("UPDATE conveyor.job_type SET enabled = false");
  s->expect_denied("INSERT INTO conveyor.job (job_type) VALUES ('plain')");
  s->expect_denied("UPDATE conveyor.job SET params = '{}' WHERE id = " + cancel);
  // The console pauses and resumes queues and schedules (migration
  // 20261218009000_console): their pause columns only.
  s->expect_allowed("UPDATE conveyor.queue_state SET paused = false, reason = NULL");
  s->expect_allowed("UPDATE conveyor.schedule_state SET paused = false, paused_reason = NULL");
  s->expect_denied("UPDATE conveyor.schedule_state SET last_slot = now()");
  s->expect_denied("DELETE FROM conveyor.queue_state");
}

TEST_F(ServiceRoles, ReaderReadsEveryTableAndWritesNone) {
  job({"configured"});
  ct::create_api_token(db_.url(), "roles-op", "operator");
  auto s = as("conveyor_reader");
  const auto tables = db_.query(
      "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
      "WHERE n.nspname = 'conveyor' AND c.relkind = 'r' ORDER BY 1");
  ASSERT_GE(tables.size(), 15u);
  for (const auto& t : tables) {
    const std::string table = "conveyor." + t[0];
    if (t[0] == "api_token") {
      s->expect_allowed("SELECT name, role, created_at, created_by, expires_at, revoked_at, last_used_at FROM " +
                        table);
      s->expect_denied("SELECT token_sha256 FROM " + table);
    } else if (t[0] == "console_session") {
      s->expect_allowed("SELECT token_name, created_at, expires_at FROM " + table);
      s->expect_denied("SELECT session_sha256 FROM " + table);
    } else {
      s->expect_allowed("SELECT * FROM " + table + " LIMIT 1");
    }
    s->expect_denied("INSERT INTO " + table + " DEFAULT VALUES");
    s->expect_denied("DELETE FROM " + table);
    s->expect_denied("TRUNCATE " + table);
  }
  EXPECT_EQ(s->value("SELECT count(*) FROM conveyor.job"), "1");
  s->expect_denied("UPDATE conveyor.system_parameters SET accepting_new_jobs = false");
  s->expect_denied("UPDATE conveyor.job SET canceled_at = now()");
  s->expect_denied("SELECT nextval('conveyor.job_id_seq')");
}

// Issue 13: the pool marks its own exited worker lost at once and recovers
// its job with the grants it already had (UPDATE (status) of worker).
TEST_F(ServiceRoles, WorkerPoolMarksItsExitedWorkerLostAndRecoversItsJob) {
  const std::string id = job(kToQueued);
  db_.exec(
      "INSERT INTO conveyor.worker (name, status) VALUES ('killed', 'active');"
      "UPDATE conveyor.job SET status = 'started', worker_id = (SELECT id FROM conveyor.worker WHERE name = 'killed') "
      "WHERE id = " +
      id +
      ";"
      "INSERT INTO conveyor.job_attempt (job_id, attempt, job_type, worker) VALUES (" +
      id + ", 0, 'plain', 'killed')");
  db::PoolOptions po;
  po.url = url_of("conveyor_workerpool");
  po.size = 1;
  db::Pool pool(po);
  const auto gone =
      pool.transact([](db::Tx& tx) { return model::mark_workers_gone(tx, {"killed"}, std::chrono::seconds(30)); });
  EXPECT_EQ(gone.lost_workers, std::vector<std::string>{"killed"});
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.worker WHERE name = 'killed'"), "lost");
  EXPECT_EQ(field(id, "status"), "internal_error");  // max_attempts 1
  EXPECT_EQ(db_.query_value("SELECT outcome FROM conveyor.job_attempt WHERE job_id = " + id), "lost");
}

// Issue 13: conveyor.service_instance_live and conveyor.service_health are
// read by the monitor (registry, alerts, gauges) and by readers; the other
// services do not read them.
TEST_F(ServiceRoles, TheServiceHealthViewsAreReadByTheMonitorAndTheReader) {
  db_.exec("INSERT INTO conveyor.service_instance (id, service) VALUES ('c1', 'conveyor-creation')");
  for (const char* role : {"conveyor_monitor", "conveyor_reader"}) {
    auto s = as(role);
    EXPECT_EQ(s->value("SELECT state || ' ' || live FROM conveyor.service_health "
                       "WHERE service = 'conveyor-creation'"),
              "up 1")
        << role;
    EXPECT_EQ(s->value("SELECT live_status FROM conveyor.service_instance_live WHERE id = 'c1'"), "up") << role;
  }
  as("conveyor_worker")->expect_denied("SELECT * FROM conveyor.service_health");
}

// The down migration revokes what the up migration granted here and keeps
// the roles (other databases of the cluster use them); up again restores it.
TEST(ServiceRolesMigration, DownRevokesInThisDatabaseAndKeepsTheRoles) {
  ct::TestDatabase db(false);
  const fs::path dir = fs::temp_directory_path() / ct::unique_name("roles_migrations");
  fs::create_directories(dir);
  const std::string mine = "20261204000100_service_roles";
  for (const auto& e : fs::directory_iterator(ct::migrations_dir())) {
    if (e.path().filename().string().rfind(mine, 0) != 0) fs::copy_file(e.path(), dir / e.path().filename());
  }
  db::Migrator m(db.url(), dir);
  m.init();
  m.migrate();
  for (const char* ext : {".up.sql", ".down.sql"}) {
    fs::copy_file(ct::migrations_dir() / (mine + ext), dir / (mine + ext));
  }
  ASSERT_EQ(m.migrate().names, std::vector<std::string>{mine});

  const std::string probe =
      "SELECT has_schema_privilege('conveyor_reader', 'conveyor', 'USAGE')::text || "
      "has_table_privilege('conveyor_monitor', 'conveyor.job', 'DELETE')::text || "
      "has_column_privilege('conveyor_worker', 'conveyor.job', 'status', 'UPDATE')::text || "
      "has_sequence_privilege('conveyor_creation', 'conveyor.job_id_seq', 'USAGE')::text || "
      "(SELECT relrowsecurity FROM pg_class WHERE oid = 'conveyor.job'::regclass)::text";
  EXPECT_EQ(db.query_value(probe), "truetruetruetruetrue");

  ASSERT_EQ(m.rollback().names, std::vector<std::string>{mine});
  EXPECT_EQ(db.query_value(probe), "falsefalsefalsefalsefalse");
  EXPECT_EQ(db.query_value("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'conveyor\\_%' AND rolname IN "
                           "('conveyor_creation', 'conveyor_configuration', 'conveyor_execution', 'conveyor_worker', "
                           "'conveyor_publication', 'conveyor_workerpool', 'conveyor_monitor', 'conveyor_reader')"),
            "8");
  EXPECT_EQ(db.query_value("SELECT count(*) FROM information_schema.column_privileges "
                           "WHERE grantee LIKE 'conveyor\\_%' AND table_schema = 'conveyor'"),
            "0");
  EXPECT_EQ(db.query_value("SELECT count(*) FROM pg_policy WHERE polrelid = 'conveyor.job'::regclass"), "0");

  // Again: roles that exist already are taken as they are.
  EXPECT_EQ(m.migrate().names, std::vector<std::string>{mine});
  EXPECT_EQ(db.query_value(probe), "truetruetruetruetrue");
  std::error_code ec;
  fs::remove_all(dir, ec);
}

// ------------------------------------------------------------------ real services

// conveyor-creation and conveyor-worker as processes, each connecting as a
// login member of its role: a submit over HTTP, and the worker running it.
class ServicesUnderTheirRoles : public ServiceRoles {
 protected:
  void TearDown() override {
    for (auto* p : {&creation_, &worker_}) {
      if (*p) (*p)->stop(10s);
    }
    if (HasFailure()) {
      std::cerr << "conveyor-creation log:\n"
                << ct::read_text(dir_ / "creation.log") << "\nconveyor-worker log:\n"
                << ct::read_text(dir_ / "worker.log");
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::map<std::string, std::string> env_for(const std::string& role) {
    return {{"CONVEYOR_DATABASE_URL", url_of(role)}, {"CONVEYOR_KAFKA_BROKERS", broker_.bootstrap()},
            {"CONVEYOR_TOPIC_PREFIX", prefix_},      {"CONVEYOR_DATA_DIR", (dir_ / "data").string()},
            {"CONVEYOR_POLL_INTERVAL_MS", "200"},    {"CONVEYOR_LOG_LEVEL", "debug"}};
  }

  ct::Broker broker_;
  std::string prefix_ = ct::unique_name("roles");
  fs::path dir_ = fs::temp_directory_path() / ct::unique_name("roles_services");
  std::unique_ptr<ct::ChildProcess> creation_, worker_;
};

TEST_F(ServicesUnderTheirRoles, CreationServesASubmitAndTheWorkerRunsTheJob) {
  fs::create_directories(dir_ / "data");
  const int port = ct::free_port();
  auto env = env_for("conveyor_creation");
  env["CONVEYOR_HTTP_PORT"] = std::to_string(port);
  creation_ = std::make_unique<ct::ChildProcess>(ct::ChildProcess::Options{.argv = {CONVEYOR_CREATION_PATH},
                                                                           .env = env,
                                                                           .stdout_file = dir_ / "creation.log",
                                                                           .stderr_file = {},
                                                                           .detach = false});
  const std::string base = "http://127.0.0.1:" + std::to_string(port);
  ASSERT_TRUE(ct::wait_until(
      [&] {
        try {
          return http::http_request("GET", base + "/readyz", "", {}, 2s).status == 200;
        } catch (const Error&) {
          return false;
        }
      },
      30s))
      << "conveyor-creation (as " << roles_.login("conveyor_creation") << ") did not get ready";

  const std::string token = ct::create_api_token(db_.url(), "roles-submitter", "submitter");
  auto headers = ct::bearer(token, true);
  headers["Idempotency-Key"] = "roles-e2e";
  const auto submitted = http::http_request("POST", base + "/v1/jobs", R"({"job_type": "plain"})", headers, 10s);
  ASSERT_EQ(submitted.status, 201) << submitted.body;
  const std::string id = std::to_string(json::parse(submitted.body).at("id").get<std::int64_t>());
  EXPECT_EQ(field(id, "submitted_by"), "api:roles-submitter");
  const auto got = http::http_request("GET", base + "/v1/jobs/" + id, "", ct::bearer(token), 10s);
  ASSERT_EQ(got.status, 200) << got.body;
  EXPECT_EQ(json::parse(got.body).at("history").size(), 1u);
  // Its heartbeat row, written as its role.
  EXPECT_TRUE(ct::wait_until(
      [&] {
        return db_.query_value(
                   "SELECT count(*) FROM conveyor.service_instance WHERE service = 'conveyor-creation' "
                   "AND status = 'up'") == "1";
      },
      10s));

  // The stages before the worker, as the owner; the worker claims and runs it.
  db_.exec("UPDATE conveyor.job SET status = 'configured', config = '{\"argv\": [\"true\"]}' WHERE id = " + id +
           ";"
           "UPDATE conveyor.job SET status = 'ready' WHERE id = " +
           id +
           ";"
           "UPDATE conveyor.job SET status = 'queued' WHERE id = " +
           id);
  auto wenv = env_for("conveyor_worker");
  wenv["CONVEYOR_HTTP_PORT"] = std::to_string(ct::free_port());
  wenv["CONVEYOR_WORKER_NAME"] = ct::unique_name("w");
  if (const char* path = std::getenv("PATH")) wenv["PATH"] = path;
  worker_ = std::make_unique<ct::ChildProcess>(ct::ChildProcess::Options{.argv = {CONVEYOR_WORKER_BIN},
                                                                         .env = wenv,
                                                                         .stdout_file = dir_ / "worker.log",
                                                                         .stderr_file = {},
                                                                         .detach = false});
  // It delivers nothing: done through processed in the worker's finish.
  EXPECT_TRUE(ct::wait_until([&] { return field(id, "status") == "done"; }, 30s))
      << "job " << id << " is " << field(id, "status");
  EXPECT_EQ(last_change(id), "processed>done by conveyor-worker");
  EXPECT_EQ(db_.query_value("SELECT outcome FROM conveyor.job_attempt WHERE job_id = " + id), "done");
  EXPECT_TRUE(
      ct::wait_until([&] { return db_.query_value("SELECT count(*) FROM conveyor.outbox_unsent()") == "0"; }, 20s))
      << "the relay (whichever service leads) publishes as its role";

  EXPECT_EQ(worker_->stop(10s), 0) << "conveyor-worker did not drain cleanly";
  EXPECT_EQ(db_.query_value("SELECT status FROM conveyor.worker WHERE name = '" + wenv["CONVEYOR_WORKER_NAME"] + "'"),
            "stopped");
  EXPECT_EQ(creation_->stop(10s), 0);
  worker_.reset();
  creation_.reset();
}

}  // namespace
}  // namespace conveyor
