#pragma once
// conveyor::db — PostgreSQL access for every Conveyor executable.
//
// libpqxx stays behind this header: callers see Statement, Param, Result, Tx,
// Pool and Session. SQL is written as named Statement constants next to the
// code that uses them (or in migrations), never assembled from user input;
// values always travel as parameters.
//
// Pool: thread-safe, owned by the service runtime. Session: one dedicated
// connection for session state (advisory locks, LISTEN); not thread-safe,
// owned by the one thread that uses it.
#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "conveyor/error/error.hpp"

// A timestamptz column as RFC 3339 text in UTC ("2026-11-22T10:00:00.000000Z"),
// for SQL written as string literals: every reader sees the same instant
// whatever the session's time zone (the CLI's display_time() shows it as
// "2026-11-22 10:00:00 UTC"). `col` is a string literal: a column name.
#define CONVEYOR_RFC3339(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

namespace conveyor::db {

// A named SQL statement, prepared once per connection on first use.
//
// plan_per_call: planned for each call with its parameter values instead
// (sent as an unnamed statement). For a query whose best plan depends on
// them: after five calls a prepared statement may keep a generic plan,
// which cannot know a LIMIT $n is small, and so sorts every matching row
// where the custom plan walks an index and stops (admission's candidates:
// 9.5 ms against 0.4 ms with 600 ready jobs).
struct Statement {
  std::string_view name;
  std::string_view sql;
  bool plan_per_call = false;
};

// One bound parameter, sent as text (PostgreSQL casts it to the column type).
class Param {
 public:
  Param(std::nullptr_t) {}                              // NOLINT(google-explicit-constructor): SQL NULL
  Param(std::int64_t v) : text_(std::to_string(v)) {}   // NOLINT
  Param(int v) : text_(std::to_string(v)) {}            // NOLINT
  Param(double v);                                      // NOLINT
  Param(bool v) : text_(v ? "true" : "false") {}        // NOLINT
  Param(std::string v) : text_(std::move(v)) {}         // NOLINT
  Param(std::string_view v) : text_(std::string(v)) {}  // NOLINT
  Param(const char* v) : text_(std::string(v)) {}       // NOLINT
  Param(const std::vector<std::int64_t>& v);            // NOLINT: bigint[] literal
  Param(const std::vector<std::string>& v);             // NOLINT: text[] literal
  template <typename T>
  Param(const std::optional<T>& v) {  // NOLINT
    if (v) *this = Param(*v);
  }
  const std::optional<std::string>& text() const noexcept { return text_; }

 private:
  std::optional<std::string> text_;
};

class Field {
 public:
  bool is_null() const;
  std::string_view view() const;  // "" for NULL
  std::string as_string() const;
  std::int64_t as_int() const;
  double as_double() const;
  bool as_bool() const;
  // Parses a bigint[] / int[] value.
  std::vector<std::int64_t> as_int_array() const;

  template <typename T>
  T as() const {
    if constexpr (std::is_same_v<T, std::string>) return as_string();
    else if constexpr (std::is_same_v<T, bool>) return as_bool();
    else if constexpr (std::is_integral_v<T>) return static_cast<T>(as_int());
    else if constexpr (std::is_floating_point_v<T>) return static_cast<T>(as_double());
    else static_assert(sizeof(T) == 0, "unsupported field type");
  }
  template <typename T>
  std::optional<T> opt() const {
    if (is_null()) return std::nullopt;
    return as<T>();
  }

 private:
  friend class Row;
  Field(const void* result, int row, int col) : result_(result), row_(row), col_(col) {}
  const void* result_;
  int row_;
  int col_;
};

class Row {
 public:
  Field operator[](int col) const;
  Field operator[](std::string_view column) const;  // throws Error(internal) for an unknown column
  int size() const;

 private:
  friend class Result;
  Row(const void* result, int row) : result_(result), row_(row) {}
  const void* result_;
  int row_;
};

// The rows a statement returned. Cheap to copy (shared).
class Result {
 public:
  Result();
  int size() const;
  bool empty() const { return size() == 0; }
  Row operator[](int row) const;
  // Rows touched by INSERT/UPDATE/DELETE.
  std::int64_t affected_rows() const;
  std::vector<std::string> columns() const;

  class Iterator {
   public:
    Iterator(const Result* r, int i) : r_(r), i_(i) {}
    Row operator*() const { return (*r_)[i_]; }
    Iterator& operator++() {
      ++i_;
      return *this;
    }
    bool operator!=(const Iterator& o) const { return i_ != o.i_; }

   private:
    const Result* r_;
    int i_;
  };
  Iterator begin() const { return {this, 0}; }
  Iterator end() const { return {this, size()}; }

  struct Impl;
  explicit Result(std::shared_ptr<const Impl> impl);

 private:
  std::shared_ptr<const Impl> impl_;
};

// A failure reported by PostgreSQL or the connection. `retriable` is true for
// lost connections (outside commit), serialization failures and deadlocks.
class DbError : public Error {
 public:
  DbError(errc code, const std::string& message, std::string sqlstate, bool retriable)
      : Error(code, message), sqlstate_(std::move(sqlstate)), retriable_(retriable) {}
  const std::string& sqlstate() const noexcept { return sqlstate_; }
  bool retriable() const noexcept { return retriable_; }

 private:
  std::string sqlstate_;
  bool retriable_;
};

// SQLSTATE raised by conveyor.check_status_change() for a refused transition.
inline constexpr std::string_view kInvalidTransitionState = "CV001";
// SQLSTATE for a refused change on a locked resource (e.g. migration lock).
inline constexpr std::string_view kLockedState = "CV002";

// Whether `e` says the database lacks Conveyor's schema, or part of it: no
// `conveyor db init` and `migrate` yet, or migrations older than the
// program (an undefined schema, table, column or function).
bool not_migrated(const DbError& e) noexcept;

class Connection;

// One open transaction. Valid only inside Pool::transact / Session::transact.
class Tx {
 public:
  Result exec(const Statement& s, std::initializer_list<Param> params = {});
  Result exec(const Statement& s, const std::vector<Param>& params);
  // Runs literal SQL with no parameters (several statements allowed). For
  // migrations and tests only: never pass text built from input.
  Result exec_script(std::string_view sql);
  // Recorded as the actor of every status change in this transaction
  // (SET LOCAL conveyor.actor); the history trigger reads it.
  void set_actor(std::string_view actor);
  // Runs `body` (given this Tx) in a savepoint: if it throws, what it wrote
  // is rolled back, the error is rethrown, and this transaction stays usable
  // (one item of a batch failing leaves the others).
  void savepoint(const std::function<void(Tx&)>& body);

  Tx(const Tx&) = delete;
  Tx& operator=(const Tx&) = delete;

 private:
  friend class Connection;
  Tx(Connection& c, void* work) : conn_(c), work_(work) {}
  Connection& conn_;
  void* work_;  // pqxx::transaction_base
};

enum class Isolation { read_committed, repeatable_read, serializable };

struct TxOptions {
  Isolation isolation = Isolation::read_committed;
  int max_attempts = 5;  // for retriable failures; 1 = no retry
  std::string actor;     // empty: the pool's default actor
};

struct PoolOptions {
  std::string url;  // libpq connection string or URI
  std::size_t size = 4;
  std::chrono::milliseconds acquire_timeout{10000};
  std::string application_name = "conveyor";
  std::string actor;  // default actor for status changes (e.g. "conveyor-worker")
};

// A fixed-size pool of connections; broken connections are replaced on next use.
class Pool {
 public:
  explicit Pool(PoolOptions options);
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // Runs fn inside one transaction and commits when it returns. On a
  // retriable failure the whole fn is run again (so fn must not have side
  // effects outside the transaction), up to options.max_attempts.
  template <typename F>
  auto transact(F&& fn, const TxOptions& options = {}) -> std::invoke_result_t<F, Tx&> {
    using R = std::invoke_result_t<F, Tx&>;
    if constexpr (std::is_void_v<R>) {
      run(options, [&](Tx& tx) { fn(tx); });
    } else {
      std::optional<R> out;
      run(options, [&](Tx& tx) { out.emplace(fn(tx)); });
      return std::move(*out);
    }
  }
  // One statement in an implicit transaction of its own (autocommit): one
  // round trip, where transact costs three (BEGIN, the statement, COMMIT).
  // Only for a statement whose repetition is harmless (a read, or a write
  // that repeats to the same result): a connection lost during it leaves
  // unknown whether it committed, and it is retried like transact, up to
  // max_attempts. Any other write belongs in transact, where a connection
  // lost before COMMIT means nothing was written. The pool's actor applies.
  Result exec_idempotent(const Statement& s, const std::vector<Param>& params = {}, int max_attempts = 5);
  // One statement that is a whole transaction on its own (a claim, a batch
  // of moves written by one statement), in an implicit transaction: one
  // round trip instead of three. A connection lost during it leaves unknown
  // whether it committed, as a lost COMMIT does: it throws what a lost
  // COMMIT throws (SQLSTATE 08007, not retried), so the caller's in-doubt
  // handling (or the reconciler) applies to both. It is retried only where
  // it certainly did not commit (no connection, a deadlock, a
  // serialization failure).
  // The pool's actor applies.
  Result exec_once(const Statement& s, const std::vector<Param>& params = {});
  // True when a connection answers `SELECT 1` within the acquire timeout.
  bool ping() noexcept;
  const PoolOptions& options() const noexcept { return options_; }

  struct State;  // implementation detail of db.cpp

 private:
  void run(const TxOptions& options, const std::function<void(Tx&)>& fn);
  PoolOptions options_;
  std::unique_ptr<State> state_;
};

// One NOTIFY as a listener received it.
struct Notification {
  std::string channel;
  std::string payload;
};

// One dedicated connection for session-level state. Single-threaded.
class Session {
 public:
  explicit Session(std::string url, std::string application_name = "conveyor");
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  template <typename F>
  auto transact(F&& fn, const TxOptions& options = {}) -> std::invoke_result_t<F, Tx&> {
    using R = std::invoke_result_t<F, Tx&>;
    if constexpr (std::is_void_v<R>) {
      run(options, [&](Tx& tx) { fn(tx); });
    } else {
      std::optional<R> out;
      run(options, [&](Tx& tx) { out.emplace(fn(tx)); });
      return std::move(*out);
    }
  }
  // One statement in an implicit transaction of its own: one round trip, not
  // retried (a lost connection leaves unknown whether a write committed; the
  // caller decides). Session-level state (locks, LISTENs) is this session's.
  Result exec_alone(const Statement& s, const std::vector<Param>& params = {});
  // Session-level advisory lock (pg_try_advisory_lock); held until unlock or
  // until the connection closes. Reconnecting loses it: check is_open().
  bool try_advisory_lock(std::int64_t key);
  void advisory_unlock(std::int64_t key);
  void listen(std::string_view channel);
  // UNLISTEN: notifications of `channel` no longer reach this session.
  void unlisten(std::string_view channel);
  // Waits up to `timeout` for a notification on a listened channel; true if
  // at least one arrived. All pending notifications are consumed.
  bool wait_for_notification(std::chrono::milliseconds timeout);
  // The same, returning every notification received (channel and payload).
  std::vector<Notification> wait_for_notifications(std::chrono::milliseconds timeout);
  bool is_open() const noexcept;
  // Drops the connection (and with it locks and LISTENs); the next call reconnects.
  void reset() noexcept;

 private:
  void run(const TxOptions& options, const std::function<void(Tx&)>& fn);
  std::string url_;
  std::string application_name_;
  std::unique_ptr<Connection> conn_;
};

// The PG* environment variables (PGHOST, PGPORT, PGDATABASE, PGUSER,
// PGPASSWORD, PGSSLMODE...) that say what `url` (a URI or a key=value
// conninfo) says, for running pg_dump / pg_restore / psql without putting a
// password on a command line, where any user could read it. Throws
// Error(invalid_config) for a string libpq cannot parse (the message never
// repeats the string: it may hold a password).
std::map<std::string, std::string> libpq_environment(const std::string& url);

}  // namespace conveyor::db
