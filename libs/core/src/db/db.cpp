// conveyor::db implementation: the only file (with migrations.cpp) that sees libpqxx.
#include "conveyor/db/db.hpp"

#include <charconv>
#include <condition_variable>
#include <mutex>
#include <libpq-fe.h>
#include <poll.h>

#include <pqxx/pqxx>
#include <set>
#include <thread>

namespace conveyor::db {

// ------------------------------------------------------------------- Param

Param::Param(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  text_ = std::string(buf, end);
}

Param::Param(const std::vector<std::int64_t>& v) {
  std::string s = "{";
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(v[i]);
  }
  text_ = s + "}";
}

Param::Param(const std::vector<std::string>& v) {
  std::string s = "{";
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i) s += ',';
    s += '"';
    for (char c : v[i]) {
      if (c == '"' || c == '\\') s += '\\';
      s += c;
    }
    s += '"';
  }
  text_ = s + "}";
}

struct Result::Impl {
  pqxx::result r;
};

// ------------------------------------------------------------------- errors

namespace {

// The first line of a server message, without libpq's "ERROR:  " prefix.
std::string server_message(const char* what) {
  std::string_view m(what);
  if (m.starts_with("ERROR:  ")) m.remove_prefix(8);
  if (auto nl = m.find('\n'); nl != std::string_view::npos) m = m.substr(0, nl);
  return std::string(m);
}

// The one place SQLSTATEs become conveyor error codes.
DbError translate_sql_error(const pqxx::sql_error& e) {
  std::string state = e.sqlstate();
  // libpqxx 6.4 throws insufficient_privilege without its SQLSTATE. A
  // service role missing a grant is a deployment error: internal, with
  // the server's message ("permission denied for table job") in the log.
  if (state.empty() && dynamic_cast<const pqxx::insufficient_privilege*>(&e) != nullptr) state = "42501";
  std::string msg = server_message(e.what());
  if (state == kInvalidTransitionState) return {errc::invalid_transition, msg, state, false};
  if (state == kLockedState) return {errc::locked, msg, state, false};
  if (state == "40001" || state == "40P01") return {errc::conflict, msg, state, true};
  if (state == "23505") return {errc::conflict, msg, state, false};
  if (state.starts_with("23") || state.starts_with("22")) return {errc::bad_input, msg, state, false};
  // Class 54, program limit exceeded: a value too deep or too large for
  // PostgreSQL (e.g. 54001 for deeply nested jsonb) is the input's fault.
  if (state.starts_with("54")) {
    return {errc::bad_input, "input exceeds a database limit: " + msg, state, false};
  }
  if (state.starts_with("08") || state == "57P01" || state == "57P02" || state == "57P03")
    return {errc::unavailable, msg, state, true};
  if (state == "57014") return {errc::timeout, msg, state, false};
  return {errc::internal, msg, state, false};
}

// Runs f, turning libpqxx exceptions into DbError.
template <typename F>
auto translating(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const pqxx::in_doubt_error& e) {
    throw DbError(errc::unavailable,
                  std::string("database: connection lost during commit, outcome unknown: ") + e.what(), "08007", false);
  } catch (const pqxx::broken_connection& e) {
    throw DbError(errc::unavailable, std::string("database: connection lost: ") + server_message(e.what()), "08006",
                  true);
  } catch (const pqxx::sql_error& e) {
    throw translate_sql_error(e);
  } catch (const pqxx::statement_completion_unknown& e) {
    throw DbError(errc::unavailable, std::string("database: statement outcome unknown: ") + server_message(e.what()),
                  "40003", false);
  } catch (const pqxx::serialization_failure& e) {
    throw DbError(errc::conflict, server_message(e.what()), "40001", true);
  } catch (const pqxx::deadlock_detected& e) {
    throw DbError(errc::conflict, server_message(e.what()), "40P01", true);
  } catch (const pqxx::transaction_rollback& e) {
    throw DbError(errc::conflict, server_message(e.what()), "40000", true);
  } catch (const pqxx::usage_error& e) {
    throw DbError(errc::internal, std::string("database: usage error: ") + e.what(), "", false);
  } catch (const pqxx::conversion_error& e) {
    throw DbError(errc::internal, std::string("database: conversion error: ") + e.what(), "", false);
  } catch (const pqxx::failure& e) {
    throw DbError(errc::internal, "database: " + server_message(e.what()), "", false);
  }
}

const pqxx::result& res(const void* p) { return static_cast<const Result::Impl*>(p)->r; }

}  // namespace

// ------------------------------------------------------------------- Result

Result::Result() : impl_(std::make_shared<Impl>()) {}
Result::Result(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
int Result::size() const { return static_cast<int>(impl_->r.size()); }
Row Result::operator[](int row) const { return Row(impl_.get(), row); }
std::int64_t Result::affected_rows() const { return static_cast<std::int64_t>(impl_->r.affected_rows()); }
std::vector<std::string> Result::columns() const {
  std::vector<std::string> out;
  for (pqxx::row::size_type i = 0; i < impl_->r.columns(); ++i) out.emplace_back(impl_->r.column_name(i));
  return out;
}

Field Row::operator[](int col) const { return Field(result_, row_, col); }
Field Row::operator[](std::string_view column) const {
  const auto& r = res(result_);
  try {
    return Field(result_, row_, static_cast<int>(r.column_number(std::string(column))));
  } catch (const pqxx::argument_error&) {
    throw Error(errc::internal, "database: no column '" + std::string(column) + "' in result");
  }
}
int Row::size() const { return static_cast<int>(res(result_).columns()); }

namespace {
pqxx::field field_of(const void* r, int row, int col) { return res(r)[row][col]; }
}  // namespace

bool Field::is_null() const { return field_of(result_, row_, col_).is_null(); }
std::string_view Field::view() const {
  auto f = field_of(result_, row_, col_);
  return std::string_view(f.c_str(), f.size());
}
std::string Field::as_string() const { return std::string(view()); }
std::int64_t Field::as_int() const {
  auto f = field_of(result_, row_, col_);
  if (f.is_null()) throw Error(errc::internal, "database: NULL where an integer was expected");
  return translating([&] { return f.as<long long>(); });
}
double Field::as_double() const {
  auto f = field_of(result_, row_, col_);
  if (f.is_null()) throw Error(errc::internal, "database: NULL where a number was expected");
  return translating([&] { return f.as<double>(); });
}
bool Field::as_bool() const {
  auto f = field_of(result_, row_, col_);
  if (f.is_null()) throw Error(errc::internal, "database: NULL where a boolean was expected");
  return translating([&] { return f.as<bool>(); });
}
std::vector<std::int64_t> Field::as_int_array() const {
  std::vector<std::int64_t> out;
  std::string_view v = view();
  if (v.size() < 2 || v.front() != '{' || v.back() != '}') return out;
  v = v.substr(1, v.size() - 2);
  while (!v.empty()) {
    auto comma = v.find(',');
    auto item = v.substr(0, comma);
    std::int64_t n = 0;
    auto [p, ec] = std::from_chars(item.data(), item.data() + item.size(), n);
    if (ec != std::errc()) throw Error(errc::internal, "database: not an integer array: " + as_string());
    out.push_back(n);
    if (comma == std::string_view::npos) break;
    v.remove_prefix(comma + 1);
  }
  return out;
}

// ------------------------------------------------------------------- Connection

namespace {
class Receiver final : public pqxx::notification_receiver {
 public:
  Receiver(pqxx::connection_base& c, const std::string& channel, std::vector<Notification>& received)
      : pqxx::notification_receiver(c, channel), received_(received) {}
  void operator()(const std::string& payload, int) override { received_.push_back({channel(), payload}); }

 private:
  std::vector<Notification>& received_;
};
}  // namespace

// One libpq connection plus the statements prepared on it. Owned by a Pool
// or a Session; used by one thread at a time.
class Connection {
 public:
  // session_actor: the actor of every transaction on this connection that
  // names no other, set once for the session (a transaction naming another
  // sets it locally), so a transaction costs no set_config round trip.
  Connection(const std::string& url, const std::string& application_name, const std::string& session_actor = "")
      : session_actor_(session_actor) {
    try {
      conn_ = std::make_unique<pqxx::connection>(url);
    } catch (const pqxx::broken_connection& e) {
      // Never connected: nothing was lost (08001, unable to connect).
      throw DbError(errc::unavailable, "database: cannot connect: " + server_message(e.what()), "08001", true);
    }
    translating([&] {
      // No JIT: Conveyor's statements are short, and a plan whose estimate
      // passes jit_above_cost was compiled at every run. Publication's claim
      // (its estimate grows with the history) took 8-32 ms a call, 5-30 of
      // them compiling, while 20,000 jobs waited (conveyor-bench --waiting).
      pqxx::nontransaction n(*conn_);
      n.exec_params(
          "SELECT set_config('jit', 'off', false), "
          "CASE WHEN $1 <> '' THEN set_config('application_name', $1, false) END, "
          "CASE WHEN $2 <> '' THEN set_config('conveyor.actor', $2, false) END",
          application_name, session_actor);
    });
  }
  ~Connection() {
    receivers_.clear();  // before the connection they point at
  }

  bool is_open() const noexcept { return conn_ && conn_->is_open(); }
  // Whether the server has said or closed anything on this idle connection
  // (no LISTEN, nothing sent): after a restart, pg_terminate_backend or an
  // idle timeout it has, and the connection is dead. One poll, no wait.
  bool heard_while_idle() const noexcept {
    if (!is_open()) return true;
    pollfd p{conn_->sock(), POLLIN, 0};
    return ::poll(&p, 1, 0) != 0;
  }
  pqxx::connection& raw() { return *conn_; }

  void prepare_once(const Statement& s) {
    std::string name(s.name);
    if (prepared_.count(name)) return;
    conn_->prepare(name, std::string(s.sql));
    prepared_.insert(std::move(name));
  }

  void run(const TxOptions& options, const std::string& default_actor, const std::function<void(Tx&)>& fn) {
    translating([&] {
      switch (options.isolation) {
        case Isolation::read_committed: {
          pqxx::transaction<pqxx::read_committed> w(*conn_);
          body(w, options, default_actor, fn);
          break;
        }
        case Isolation::repeatable_read: {
          pqxx::transaction<pqxx::repeatable_read> w(*conn_);
          body(w, options, default_actor, fn);
          break;
        }
        case Isolation::serializable: {
          pqxx::transaction<pqxx::serializable> w(*conn_);
          body(w, options, default_actor, fn);
          break;
        }
      }
    });
  }

  // One statement outside any transaction block: PostgreSQL runs it in an
  // implicit transaction of its own.
  Result run_alone(const Statement& s, const std::vector<Param>& params) {
    return translating([&] {
      pqxx::nontransaction n(*conn_);
      Tx tx(*this, static_cast<pqxx::transaction_base*>(&n));
      return tx.exec(s, params);
    });
  }

  void listen(const std::string& channel) {
    if (receivers_.count(channel)) return;
    translating([&] { receivers_[channel] = std::make_unique<Receiver>(*conn_, channel, received_); });
  }

  // The receiver's end UNLISTENs (it is the channel's only one).
  void unlisten(const std::string& channel) {
    translating([&] { receivers_.erase(channel); });
  }

  std::vector<Notification> wait_for_notifications(std::chrono::milliseconds timeout) {
    return translating([&] {
      // libpqxx hands the receivers what arrives during any statement (a
      // LISTEN, an UNLISTEN): those are returned at once, not dropped.
      if (received_.empty()) {
        long us = static_cast<long>(std::chrono::duration_cast<std::chrono::microseconds>(timeout).count());
        conn_->await_notification(us / 1000000, us % 1000000);
      }
      // Drain whatever else is already queued, without waiting.
      while (conn_->get_notifs() > 0) {
      }
      std::vector<Notification> out;
      out.swap(received_);
      return out;
    });
  }

 private:
  template <typename W>
  void body(W& w, const TxOptions& options, const std::string& default_actor, const std::function<void(Tx&)>& fn) {
    Tx tx(*this, static_cast<pqxx::transaction_base*>(&w));
    const std::string& actor = options.actor.empty() ? default_actor : options.actor;
    if (!actor.empty() && actor != session_actor_) tx.set_actor(actor);
    fn(tx);
    w.commit();
  }

  std::string session_actor_;
  std::unique_ptr<pqxx::connection> conn_;
  std::set<std::string> prepared_;
  std::map<std::string, std::unique_ptr<Receiver>> receivers_;
  std::vector<Notification> received_;  // filled by the receivers during a wait
};

// ------------------------------------------------------------------- Tx

namespace {
pqxx::transaction_base& work(void* p) { return *static_cast<pqxx::transaction_base*>(p); }
}  // namespace

Result Tx::exec(const Statement& s, std::initializer_list<Param> params) { return exec(s, std::vector<Param>(params)); }

Result Tx::exec(const Statement& s, const std::vector<Param>& params) {
  return translating([&] {
    if (!s.plan_per_call) conn_.prepare_once(s);
    std::vector<const char*> values;
    values.reserve(params.size());
    for (const auto& p : params) {
      // libpq sends C strings: a NUL would silently cut the value short
      // ("sleep\0x" stored as "sleep"). Refuse it, whoever passes it.
      if (p.text() && p.text()->find('\0') != std::string::npos) {
        throw DbError(errc::bad_input, "a value contains a NUL character, which PostgreSQL cannot store", "22021",
                      false);
      }
      values.push_back(p.text() ? p.text()->c_str() : nullptr);
    }
    auto impl = std::make_shared<Result::Impl>();
    impl->r = s.plan_per_call
                  ? work(work_).exec_params(std::string(s.sql), pqxx::prepare::make_dynamic_params(values))
                  : work(work_).exec_prepared(std::string(s.name), pqxx::prepare::make_dynamic_params(values));
    return Result(std::move(impl));
  });
}

Result Tx::exec_script(std::string_view sql) {
  return translating([&] {
    auto impl = std::make_shared<Result::Impl>();
    impl->r = work(work_).exec(std::string(sql));
    return Result(std::move(impl));
  });
}

// Plain SAVEPOINT statements, not pqxx::subtransaction: libpqxx 6.4 does not
// begin a subtransaction for exec_prepared, so nothing would be rolled back.
// PostgreSQL rolls back to (and releases) the newest savepoint of a name, so
// nested calls work.
void Tx::savepoint(const std::function<void(Tx&)>& body) {
  translating([&] { work(work_).exec("SAVEPOINT conveyor_savepoint"); });
  try {
    body(*this);
  } catch (...) {
    translating([&] { work(work_).exec("ROLLBACK TO SAVEPOINT conveyor_savepoint"); });
    throw;
  }
  translating([&] { work(work_).exec("RELEASE SAVEPOINT conveyor_savepoint"); });
}

void Tx::set_actor(std::string_view actor) {
  // Prepared once per connection: creation sets the actor of every request
  // (api:<token>); unnamed, it was parsed and planned each time.
  static constexpr Statement kSetActor{"conveyor_set_actor", "SELECT set_config('conveyor.actor', $1, true)"};
  exec(kSetActor, {std::string(actor)});
}

// ------------------------------------------------------------------- retry

namespace {

// Runs one attempt per call of `attempt`; retries retriable failures with a
// short exponential back-off. The one retry policy for database work.
void with_retries(int max_attempts, const std::function<void()>& attempt) {
  std::chrono::milliseconds backoff{20};
  for (int i = 1;; ++i) {
    try {
      attempt();
      return;
    } catch (const DbError& e) {
      if (!e.retriable() || i >= std::max(1, max_attempts)) throw;
    }
    std::this_thread::sleep_for(backoff);  // back-off between attempts, not synchronisation
    backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
  }
}

}  // namespace

// ------------------------------------------------------------------- Pool

struct Pool::State {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::unique_ptr<Connection>> idle;
  std::size_t total = 0;  // idle + lent out
};

Pool::Pool(PoolOptions options) : options_(std::move(options)), state_(std::make_unique<State>()) {
  if (options_.size == 0) options_.size = 1;
}

Pool::~Pool() = default;

namespace {

// Lends one connection for the scope; a broken one is dropped on return.
class Lease {
 public:
  Lease(Pool::State& st, const PoolOptions& o) : st_(st) {
    std::unique_lock lock(st_.mu);
    auto deadline = std::chrono::steady_clock::now() + o.acquire_timeout;
    while (st_.idle.empty() && st_.total >= o.size) {
      if (st_.cv.wait_until(lock, deadline) == std::cv_status::timeout && st_.idle.empty() && st_.total >= o.size) {
        throw DbError(errc::timeout, "database: no connection free in the pool within the acquire timeout", "", false);
      }
    }
    // An idle connection the server has closed is dropped here, before a
    // statement is sent on it: exec_once could not tell its loss from one
    // during the statement (outcome unknown), where this one certainly
    // sent nothing.
    bool dropped = false;
    while (!st_.idle.empty()) {
      auto conn = std::move(st_.idle.back());
      st_.idle.pop_back();
      if (!conn->heard_while_idle()) {
        conn_ = std::move(conn);
        return;
      }
      --st_.total;
      dropped = true;
    }
    if (dropped) st_.cv.notify_all();  // their places are free for others waiting
    ++st_.total;
    lock.unlock();
    try {
      conn_ = std::make_unique<Connection>(o.url, o.application_name, o.actor);
    } catch (...) {
      std::lock_guard g(st_.mu);
      --st_.total;
      st_.cv.notify_one();
      throw;  // rethrown, not swallowed: the caller sees why connecting failed
    }
  }
  ~Lease() {
    std::lock_guard g(st_.mu);
    if (conn_ && conn_->is_open()) {
      st_.idle.push_back(std::move(conn_));
    } else {
      --st_.total;
    }
    st_.cv.notify_one();
  }
  Connection& operator*() { return *conn_; }
  Connection* operator->() { return conn_.get(); }

 private:
  Pool::State& st_;
  std::unique_ptr<Connection> conn_;
};

}  // namespace

void Pool::run(const TxOptions& options, const std::function<void(Tx&)>& fn) {
  with_retries(options.max_attempts, [&] {
    Lease lease(*state_, options_);
    lease->run(options, options_.actor, fn);
  });
}

Result Pool::exec_idempotent(const Statement& s, const std::vector<Param>& params, int max_attempts) {
  std::optional<Result> out;
  with_retries(max_attempts, [&] {
    Lease lease(*state_, options_);
    out.emplace(lease->run_alone(s, params));
  });
  return std::move(*out);
}

Result Pool::exec_once(const Statement& s, const std::vector<Param>& params) {
  std::optional<Result> out;
  // Retried only where it certainly did not commit: failing to connect, a
  // deadlock or a serialization failure.
  with_retries(5, [&] {
    Lease lease(*state_, options_);
    try {
      out.emplace(lease->run_alone(s, params));
    } catch (const DbError& e) {
      if (e.sqlstate() != "08006") throw;
      throw DbError(
          errc::unavailable,
          "database: connection lost during a statement committed alone, outcome unknown: " + std::string(e.what()),
          "08007", false);
    }
  });
  return std::move(*out);
}

bool Pool::ping() noexcept {
  try {
    static constexpr Statement kPing{"conveyor_ping", "SELECT 1"};
    TxOptions o;
    o.max_attempts = 1;
    run(o, [](Tx& tx) { tx.exec(kPing); });
    return true;
  } catch (const std::exception&) {
    return false;  // ping answers a question; the reason is not needed
  }
}

// ------------------------------------------------------------------- Session

Session::Session(std::string url, std::string application_name)
    : url_(std::move(url)), application_name_(std::move(application_name)) {}

Session::~Session() = default;

namespace {
Connection& ensure(std::unique_ptr<Connection>& c, const std::string& url, const std::string& app) {
  if (!c || !c->is_open()) {
    c.reset();
    c = std::make_unique<Connection>(url, app);
  }
  return *c;
}
}  // namespace

void Session::run(const TxOptions& options, const std::function<void(Tx&)>& fn) {
  with_retries(options.max_attempts, [&] {
    auto& c = ensure(conn_, url_, application_name_);
    try {
      c.run(options, "", fn);
    } catch (const DbError&) {
      if (!c.is_open()) conn_.reset();
      throw;
    }
  });
}

Result Session::exec_alone(const Statement& s, const std::vector<Param>& params) {
  auto& c = ensure(conn_, url_, application_name_);
  try {
    return c.run_alone(s, params);
  } catch (const DbError&) {
    if (!c.is_open()) conn_.reset();
    throw;
  }
}

bool Session::try_advisory_lock(std::int64_t key) {
  auto& c = ensure(conn_, url_, application_name_);
  return translating([&] {
    pqxx::nontransaction n(c.raw());
    return n.exec_params("SELECT pg_try_advisory_lock($1)", key)[0][0].as<bool>();
  });
}

void Session::advisory_unlock(std::int64_t key) {
  if (!is_open()) return;
  translating([&] {
    pqxx::nontransaction n(conn_->raw());
    n.exec_params("SELECT pg_advisory_unlock($1)", key);
  });
}

void Session::listen(std::string_view channel) { ensure(conn_, url_, application_name_).listen(std::string(channel)); }

void Session::unlisten(std::string_view channel) {
  if (conn_) conn_->unlisten(std::string(channel));
}

bool Session::wait_for_notification(std::chrono::milliseconds timeout) {
  return !wait_for_notifications(timeout).empty();
}

std::vector<Notification> Session::wait_for_notifications(std::chrono::milliseconds timeout) {
  // Never a new connection here: it would LISTEN to nothing, and its waits
  // would hear nothing, silently. The caller LISTENs again.
  if (!is_open()) {
    conn_.reset();
    throw DbError(errc::unavailable, "the listening connection is closed", "08003", true);
  }
  try {
    return conn_->wait_for_notifications(timeout);
  } catch (const DbError&) {
    conn_.reset();
    throw;
  }
}

bool Session::is_open() const noexcept { return conn_ && conn_->is_open(); }

void Session::reset() noexcept { conn_.reset(); }

std::map<std::string, std::string> libpq_environment(const std::string& url) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(url.c_str(), &error);
  if (options == nullptr) {
    if (error != nullptr) PQfreemem(error);
    throw Error(errc::invalid_config, "CONVEYOR_DATABASE_URL: not a libpq connection string or URI");
  }
  std::map<std::string, std::string> env;
  for (const PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (o->val != nullptr && o->envvar != nullptr && o->val[0] != '\0') env[o->envvar] = o->val;
  }
  PQconninfoFree(options);
  return env;
}

bool not_migrated(const DbError& e) noexcept {
  const std::string& state = e.sqlstate();
  return state == "3F000" /* invalid_schema_name */ || state == "42P01" /* undefined_table */ ||
         state == "42703" /* undefined_column */ || state == "42883" /* undefined_function */;
}

}  // namespace conveyor::db
