// conveyor::db against a real PostgreSQL: parameters, results, error
// mapping, retries on lost connections and serialization failures, and the
// session features the relay relies on (advisory locks, LISTEN/NOTIFY).
#include <gtest/gtest.h>

#include <thread>

#include "conveyor/db/db.hpp"
#include "conveyor/testing/testing.hpp"

namespace conveyor::db {
namespace {

using conveyor::testing::TestDatabase;
using namespace std::chrono_literals;

PoolOptions opts(const TestDatabase& db, int size = 2) {
  PoolOptions o;
  o.url = db.url();
  o.size = size;
  o.actor = "pool-test";
  return o;
}

// One connection: each statement runs on the one before's.
constexpr int kOneConnection = 1;

TEST(Pool, ParametersAndResultsRoundTrip) {
  TestDatabase db(false);
  Pool pool(opts(db));
  static constexpr Statement kEcho{"echo", "SELECT $1::bigint, $2::text, $3::bool, $4::bigint[], $5::text, $6::float8"};
  auto r = pool.transact([](Tx& tx) {
    return tx.exec(kEcho,
                   {std::int64_t{42}, "it's \"quoted\"", true, std::vector<std::int64_t>{1, 2, 3}, nullptr, 2.5});
  });
  ASSERT_EQ(r.size(), 1);
  EXPECT_EQ(r[0][0].as<std::int64_t>(), 42);
  EXPECT_EQ(r[0][1].as_string(), "it's \"quoted\"");
  EXPECT_TRUE(r[0][2].as_bool());
  EXPECT_EQ(r[0][3].as_int_array(), (std::vector<std::int64_t>{1, 2, 3}));
  EXPECT_TRUE(r[0][4].is_null());
  EXPECT_EQ(r[0][4].opt<std::string>(), std::nullopt);
  EXPECT_DOUBLE_EQ(r[0][5].as_double(), 2.5);
  EXPECT_THROW(r[0]["no_such_column"], Error);
}

// No connection of Conveyor's compiles plans (JIT): a pooled one, a session,
// and one with no application name, whatever the server's default is.
// The JIT compile of publication's claim cost 5-30 ms a call with a backlog.
TEST(Pool, NoConnectionCompilesPlans) {
  TestDatabase db(false);
  static constexpr Statement kJit{"jit", "SELECT current_setting('jit')"};
  Pool pool(opts(db));
  EXPECT_EQ(pool.transact([](Tx& tx) { return tx.exec(kJit)[0][0].as_string(); }), "off");
  PoolOptions anonymous = opts(db);
  anonymous.application_name.clear();
  Pool unnamed(anonymous);
  EXPECT_EQ(unnamed.transact([](Tx& tx) { return tx.exec(kJit)[0][0].as_string(); }), "off");
  Session session(db.url(), "");
  EXPECT_EQ(session.transact([](Tx& tx) { return tx.exec(kJit)[0][0].as_string(); }), "off");
}

// A plan_per_call statement is sent unnamed each time (planned with its
// values: no generic plan can stick to it); a plain one is prepared once.
TEST(Pool, APlanPerCallStatementIsNeverPreparedAndStillTakesParameters) {
  TestDatabase db(false);
  PoolOptions o = opts(db);
  o.size = 1;  // one connection: the prepared statements below are its own
  Pool pool(o);
  static constexpr Statement kPrepared{"pool_test_prepared", "SELECT $1::bigint + 1"};
  static constexpr Statement kPerCall{"pool_test_per_call", "SELECT $1::bigint + 2", true};
  static constexpr Statement kNamed{"pool_test_names", "SELECT name FROM pg_prepared_statements ORDER BY name"};
  const auto names = pool.transact([](Tx& tx) {
    for (int i = 0; i < 7; ++i) {  // past the five calls after which a generic plan may be kept
      EXPECT_EQ(tx.exec(kPrepared, {std::int64_t{i}})[0][0].as_int(), i + 1);
      EXPECT_EQ(tx.exec(kPerCall, {std::int64_t{i}})[0][0].as_int(), i + 2);
    }
    std::vector<std::string> out;
    for (const auto r : tx.exec(kNamed)) out.push_back(r[0].as_string());
    return out;
  });
  EXPECT_EQ(names, (std::vector<std::string>{"pool_test_names", "pool_test_prepared"}));
}

TEST(Pool, SqlErrorsBecomeConveyorErrorsWithTheirSqlstate) {
  TestDatabase db(false);
  Pool pool(opts(db));
  db.exec("CREATE TABLE t (id int PRIMARY KEY, n int CHECK (n > 0))");
  static constexpr Statement kInsert{"insert_t", "INSERT INTO t VALUES ($1, $2)"};
  pool.transact([&](Tx& tx) { tx.exec(kInsert, {1, 1}); });
  try {
    pool.transact([&](Tx& tx) { tx.exec(kInsert, {1, 1}); });
    FAIL();
  } catch (const DbError& e) {
    EXPECT_EQ(e.code(), errc::conflict);
    EXPECT_EQ(e.sqlstate(), "23505");
    EXPECT_FALSE(e.retriable());
  }
  try {
    pool.transact([&](Tx& tx) { tx.exec(kInsert, {2, -1}); });
    FAIL();
  } catch (const DbError& e) {
    EXPECT_EQ(e.code(), errc::bad_input);
    EXPECT_EQ(e.sqlstate(), "23514");
  }
  EXPECT_EQ(db.query_value("SELECT count(*) FROM t"), "1") << "failed transactions rolled back";
}

// Issue 9: a NUL in a value would be cut short by libpq ("sleep\0x" stored
// as "sleep"); every statement refuses it.
TEST(Pool, ValuesWithANulAreRefusedNotTruncated) {
  TestDatabase db(false);
  Pool pool(opts(db));
  static constexpr Statement kEcho{"echo_text", "SELECT $1::text"};
  try {
    pool.transact([&](Tx& tx) { tx.exec(kEcho, {std::string("sleep\0x", 7)}); });
    FAIL() << "a value with a NUL was sent";
  } catch (const DbError& e) {
    EXPECT_EQ(e.code(), errc::bad_input);
    EXPECT_EQ(e.sqlstate(), "22021");
  }
  EXPECT_EQ(pool.transact([&](Tx& tx) { return tx.exec(kEcho, {"sleep"})[0][0].as_string(); }), "sleep");
}

// Issue 9: JSON nested too deep for PostgreSQL (SQLSTATE 54001, stack depth
// limit exceeded) is the input's fault: bad_input (400), not internal (500).
TEST(Pool, ProgramLimitErrorsAreBadInput) {
  TestDatabase db(false);
  Pool pool(opts(db));
  static constexpr Statement kCast{"cast_jsonb", "SELECT $1::jsonb"};
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  try {
    pool.transact([&](Tx& tx) { tx.exec(kCast, {deep}); });
    FAIL() << "PostgreSQL took 200,000 levels of nesting";
  } catch (const DbError& e) {
    EXPECT_EQ(e.sqlstate(), "54001") << e.what();
    EXPECT_EQ(e.code(), errc::bad_input) << e.what();
    EXPECT_NE(std::string(e.what()).find("exceeds a database limit"), std::string::npos) << e.what();
  }
}

TEST(Pool, RetriesASerializationFailureByRunningTheWholeFunctionAgain) {
  TestDatabase db(false);
  Pool pool(opts(db));
  int calls = 0;
  static constexpr Statement kFail{"fail_40001",
                                   "DO $$ BEGIN RAISE EXCEPTION 'simulated conflict' USING ERRCODE = '40001'; END $$"};
  static constexpr Statement kOne{"one", "SELECT 1"};
  int got = pool.transact([&](Tx& tx) {
    if (++calls == 1) tx.exec(kFail);
    return static_cast<int>(tx.exec(kOne)[0][0].as_int());
  });
  EXPECT_EQ(got, 1);
  EXPECT_EQ(calls, 2);

  TxOptions once;
  once.max_attempts = 1;
  calls = 0;
  EXPECT_THROW(pool.transact(
                   [&](Tx& tx) {
                     ++calls;
                     tx.exec(kFail);
                   },
                   once),
               DbError);
  EXPECT_EQ(calls, 1);
}

TEST(Pool, SurvivesALostConnection) {
  TestDatabase db(false);
  Pool pool(opts(db));
  static constexpr Statement kPid{"pid", "SELECT pg_backend_pid()"};
  auto pid = pool.transact([](Tx& tx) { return tx.exec(kPid)[0][0].as_int(); });
  db.exec("SELECT pg_terminate_backend(" + std::to_string(pid) + ")");
  // The next transaction finds the dead connection, drops it and retries on a new one.
  auto pid2 = pool.transact([](Tx& tx) { return tx.exec(kPid)[0][0].as_int(); });
  EXPECT_NE(pid, pid2);
  EXPECT_TRUE(pool.ping());
}

TEST(Pool, RecordsTheActorForTheTransaction) {
  TestDatabase db(false);
  Pool pool(opts(db));
  static constexpr Statement kActor{"actor", "SELECT current_setting('conveyor.actor', true)"};
  EXPECT_EQ(pool.transact([](Tx& tx) { return tx.exec(kActor)[0][0].as_string(); }), "pool-test");
  TxOptions o;
  o.actor = "someone-else";
  EXPECT_EQ(pool.transact([](Tx& tx) { return tx.exec(kActor)[0][0].as_string(); }, o), "someone-else");
  // The pool's actor is its connections' session setting (no set_config per
  // transaction): another actor lasts for its own transaction only.
  EXPECT_EQ(pool.transact([](Tx& tx) { return tx.exec(kActor)[0][0].as_string(); }), "pool-test");
  EXPECT_EQ(pool.exec_idempotent(kActor)[0][0].as_string(), "pool-test");
}

// exec_idempotent: each statement is a transaction of its own, committed
// when it ends, and a failed one leaves its connection usable.
TEST(Pool, AnIdempotentStatementIsATransactionOfItsOwn) {
  TestDatabase db(false);
  Pool pool(opts(db, kOneConnection));
  static constexpr Statement kXid{"xid", "SELECT pg_current_xact_id()::text"};
  const std::string first = pool.exec_idempotent(kXid)[0][0].as_string();
  EXPECT_NE(pool.exec_idempotent(kXid)[0][0].as_string(), first);
  static constexpr Statement kWrite{"write", "CREATE TABLE IF NOT EXISTS alone (n int)"};
  pool.exec_idempotent(kWrite);
  db.exec("INSERT INTO alone VALUES (1)");  // another session sees it: it was committed
  static constexpr Statement kBad{"bad", "SELECT 1 / $1::int"};
  EXPECT_THROW(pool.exec_idempotent(kBad, {0}), DbError);
  EXPECT_EQ(pool.exec_idempotent(kBad, {1})[0][0].as_int(), 1) << "the connection is usable after an error";
}

// exec_once: a statement that is its own transaction, retried only where it
// certainly did not commit; a connection lost under it is in doubt (08007),
// as a lost COMMIT is, and not retried.
TEST(Pool, AStatementCommittedAloneIsRetriedOnlyWhereItCertainlyDidNotCommit) {
  TestDatabase db(false);
  Pool pool(opts(db, kOneConnection));
  static constexpr Statement kXid{"xid", "SELECT pg_current_xact_id()::text"};
  const std::string first = pool.exec_once(kXid)[0][0].as_string();
  EXPECT_NE(pool.exec_once(kXid)[0][0].as_string(), first);

  // A serialization failure rolled it back: run again (the sequence is not
  // rolled back, so the second run passes).
  db.exec(
      "CREATE SEQUENCE once_seq; "
      "CREATE FUNCTION fail_first() RETURNS bigint LANGUAGE plpgsql AS $$ DECLARE n bigint := nextval('once_seq'); "
      "BEGIN IF n = 1 THEN RAISE EXCEPTION 'simulated conflict' USING ERRCODE = '40001'; END IF; RETURN n; END $$");
  static constexpr Statement kFailFirst{"fail_first", "SELECT fail_first()"};
  EXPECT_EQ(pool.exec_once(kFailFirst)[0][0].as_int(), 2);

  // The connection lost during the statement (its backend ends itself):
  // whether the statement committed is unknown.
  static constexpr Statement kPid{"pid", "SELECT pg_backend_pid()"};
  const auto pid = pool.exec_once(kPid)[0][0].as_int();
  db.exec(
      "CREATE FUNCTION die() RETURNS bigint LANGUAGE plpgsql AS $$ DECLARE n bigint := nextval('once_seq'); "
      "BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5); RETURN n; END $$");
  static constexpr Statement kDie{"die", "SELECT die()"};
  try {
    pool.exec_once(kDie);
    ADD_FAILURE() << "a statement whose connection was lost did not throw";
  } catch (const DbError& e) {
    EXPECT_EQ(e.sqlstate(), "08007") << e.what();
    EXPECT_FALSE(e.retriable());
  }
  EXPECT_EQ(db.query_value("SELECT last_value FROM once_seq"), "3") << "it was not run again";
  EXPECT_NE(pool.exec_once(kPid)[0][0].as_int(), pid) << "the next one runs on a new connection";
  // The pool's actor applies.
  static constexpr Statement kActor{"actor", "SELECT current_setting('conveyor.actor', true)"};
  EXPECT_EQ(pool.exec_once(kActor)[0][0].as_string(), "pool-test");
}

// An idle connection the server closed (a restart, pg_terminate_backend,
// an idle timeout) is dropped when it is taken, before anything is sent on
// it: a statement committed alone then runs on a new connection instead of
// failing as in doubt (08007).
TEST(Pool, AnIdleConnectionTheServerClosedIsReplacedBeforeAStatementIsSent) {
  TestDatabase db(false);
  Pool pool(opts(db, kOneConnection));
  static constexpr Statement kPid{"pid", "SELECT pg_backend_pid()"};
  const auto pid = std::to_string(pool.exec_once(kPid)[0][0].as_int());
  db.exec("SELECT pg_terminate_backend(" + pid + ")");
  ASSERT_TRUE(conveyor::testing::wait_until(
      [&] { return db.query_value("SELECT count(*) FROM pg_stat_activity WHERE pid = " + pid) == "0"; }, 10s))
      << "the backend did not end";
  db.exec("CREATE TABLE once_rows (n int)");
  static constexpr Statement kInsert{"insert", "INSERT INTO once_rows VALUES (1) RETURNING pg_backend_pid()"};
  const auto result = pool.exec_once(kInsert);
  EXPECT_NE(std::to_string(result[0][0].as_int()), pid);
  EXPECT_EQ(db.query_value("SELECT count(*) FROM once_rows"), "1");
}

TEST(Pool, WaitsForAFreeConnectionAndTimesOut) {
  TestDatabase db(false);
  PoolOptions o = opts(db);
  o.size = 1;
  o.acquire_timeout = 200ms;
  Pool pool(o);
  std::atomic<bool> holding{false}, release{false};
  std::thread holder([&] {
    pool.transact([&](Tx&) {
      holding = true;
      conveyor::testing::wait_until([&] { return release.load(); }, 10s);
    });
  });
  ASSERT_TRUE(conveyor::testing::wait_until([&] { return holding.load(); }, 10s));
  try {
    pool.transact([](Tx&) {});
    ADD_FAILURE() << "the only connection is lent out";
  } catch (const DbError& e) {
    EXPECT_EQ(e.code(), errc::timeout);
  }
  release = true;
  holder.join();
  EXPECT_TRUE(pool.ping());
}

TEST(Session, AdvisoryLockIsExclusiveAndNotifyWakesAListener) {
  TestDatabase db(false);
  Session a(db.url()), b(db.url());
  EXPECT_TRUE(a.try_advisory_lock(77));
  EXPECT_FALSE(b.try_advisory_lock(77));
  a.reset();  // closing the connection releases the lock, once the server notices
  EXPECT_TRUE(conveyor::testing::wait_until([&] { return b.try_advisory_lock(77); }, 5s));

  Session listener(db.url());
  listener.listen("test_channel");
  EXPECT_FALSE(listener.wait_for_notification(50ms));
  db.exec("SELECT pg_notify('test_channel', 'x')");
  EXPECT_TRUE(conveyor::testing::wait_until([&] { return listener.wait_for_notification(100ms); }, 5s));
}

}  // namespace
}  // namespace conveyor::db
