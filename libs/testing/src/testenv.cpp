// conveyor::testing TestEnv and TestDatabase: the shared PostgreSQL cluster of
// a test run and one database per test on it.
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>

#include "conveyor/db/db.hpp"
#include "conveyor/db/migrations.hpp"
#include "conveyor/http/client.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/testing/testing.hpp"

#include "conveyor/auth/auth.hpp"
#include "conveyor/db/db.hpp"

namespace fs = std::filesystem;

namespace conveyor::testing {
namespace {

// KEY=VALUE lines, optionally prefixed by `export ` and single/double quoted
// (the sourceable file `conveyor-stack up` writes).
std::map<std::string, std::string> read_env_file(const fs::path& path) {
  std::ifstream in(path);
  if (!in) {
    throw Error(errc::not_found, "CONVEYOR_TESTENV_DIR is set but " + path.string() +
                                     " cannot be read: run `conveyor-stack up --dir " + path.parent_path().string() +
                                     "` first");
  }
  std::map<std::string, std::string> out;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("export ", 0) == 0) line.erase(0, 7);
    if (line.empty() || line[0] == '#') continue;
    auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string value = line.substr(eq + 1);
    if (value.size() >= 2 && (value.front() == '\'' || value.front() == '"') && value.back() == value.front()) {
      value = value.substr(1, value.size() - 2);
    }
    out[line.substr(0, eq)] = value;
  }
  return out;
}

// What TestEnv shares: a URL base and, when this process started it, the cluster.
struct EnvState {
  std::string url_base;  // postgresql://postgres@127.0.0.1:PORT
  std::unique_ptr<PostgresCluster> cluster;
  fs::path temp_dir;
  pid_t owner = ::getpid();

  EnvState() {
    const char* dir = std::getenv("CONVEYOR_TESTENV_DIR");
    if (dir != nullptr && *dir != '\0') {
      auto env = read_env_file(fs::path(dir) / "env");
      if (auto it = env.find("CONVEYOR_PG_URL_BASE"); it != env.end() && !it->second.empty()) {
        url_base = it->second;
      } else if (auto port = env.find("CONVEYOR_TEST_PG_PORT"); port != env.end()) {
        url_base = "postgresql://postgres@127.0.0.1:" + port->second;
      } else {
        throw Error(errc::invalid_config, fs::path(dir).string() +
                                              "/env has neither CONVEYOR_PG_URL_BASE nor "
                                              "CONVEYOR_TEST_PG_PORT");
      }
      return;
    }
    // No shared cluster: start one for this process. Under /tmp so that the
    // postgres user can reach it when we are root.
    std::string tmpl = "/tmp/conveyor-testenv-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) {
      throw Error(errc::unavailable, "mkdtemp " + tmpl + " failed");
    }
    temp_dir = tmpl;
    // mkdtemp makes it 0700; the postgres user must traverse it.
    fs::permissions(temp_dir, fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
    PostgresCluster::Options o;
    o.dir = temp_dir / "pg";
    o.ephemeral = true;
    try {
      cluster = std::make_unique<PostgresCluster>(o);
    } catch (const std::exception&) {
      std::error_code ec;
      fs::remove_all(temp_dir, ec);
      throw;
    }
    url_base = "postgresql://postgres@127.0.0.1:" + std::to_string(cluster->port());
  }

  ~EnvState() {
    // A forked child that exits normally must not stop the parent's cluster.
    if (::getpid() != owner) {
      (void)cluster.release();  // owned by the parent
      return;
    }
    cluster.reset();
    if (!temp_dir.empty()) {
      std::error_code ec;
      fs::remove_all(temp_dir, ec);
    }
  }
};

EnvState& state() {
  static EnvState s;
  return s;
}

std::string quote_ident(const std::string& name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

void admin_sql(const std::string& admin_url, const std::string& sql) {
  auto r = psql(admin_url, sql);
  if (r.status != 0) {
    throw Error(errc::unavailable, "psql `" + sql + "` failed (exit " + std::to_string(r.status) + "): " + r.output);
  }
}

}  // namespace

// ---------------------------------------------------------------- TestEnv

TestEnv& TestEnv::get() {
  static TestEnv env;
  state();  // start (or find) the cluster on first use
  return env;
}

std::string TestEnv::admin_url() const { return url("postgres"); }

std::string TestEnv::url(const std::string& database) const { return state().url_base + "/" + database; }

fs::path migrations_dir() {
  if (const char* env = std::getenv("CONVEYOR_MIGRATIONS_DIR"); env != nullptr && *env != '\0') {
    return env;
  }
  return CONVEYOR_MIGRATIONS_DIR;
}

// ---------------------------------------------------------------- TestDatabase

TestDatabase::TestDatabase(bool migrate) : name_(unique_name("test")) {
  auto& env = TestEnv::get();
  admin_url_ = env.admin_url();
  url_ = env.url(name_);
  create(migrate);
}

TestDatabase::TestDatabase(const PostgresCluster& cluster, bool migrate)
    : name_(unique_name("test")), admin_url_(cluster.url("postgres")), url_(cluster.url(name_)) {
  create(migrate);
}

void TestDatabase::create(bool migrate) {
  admin_sql(admin_url_, "CREATE DATABASE " + quote_ident(name_));
  if (!migrate) return;
  try {
    db::Migrator migrator(url_, migrations_dir());
    migrator.init();
    migrator.migrate();
  } catch (const std::exception&) {
    admin_sql(admin_url_, "DROP DATABASE IF EXISTS " + quote_ident(name_) + " WITH (FORCE)");
    throw;
  }
}

TestDatabase::~TestDatabase() {
  try {
    admin_sql(admin_url_, "DROP DATABASE IF EXISTS " + quote_ident(name_) + " WITH (FORCE)");
  } catch (const std::exception& e) {
    std::cerr << "conveyor::testing: dropping database " << name_ << ": " << e.what() << "\n";
  }
}

std::vector<std::vector<std::string>> TestDatabase::query(const std::string& sql) const {
  db::Session session(url_, "conveyor-test");
  return session.transact([&](db::Tx& tx) {
    db::Result r = tx.exec_script(sql);
    std::vector<std::vector<std::string>> rows;
    for (db::Row row : r) {
      std::vector<std::string> fields;
      for (int c = 0; c < row.size(); ++c) fields.push_back(row[c].as_string());
      rows.push_back(std::move(fields));
    }
    return rows;
  });
}

std::string TestDatabase::query_value(const std::string& sql) const {
  auto rows = query(sql);
  if (rows.empty() || rows.front().empty()) return "";
  return rows.front().front();
}

void TestDatabase::exec(const std::string& sql) const {
  db::Session session(url_, "conveyor-test");
  session.transact([&](db::Tx& tx) { tx.exec_script(sql); });
}

std::string create_api_token(const std::string& url, const std::string& name, const std::string& role) {
  const auto r = auth::parse_role(role);
  if (!r) throw std::runtime_error("create_api_token: no role '" + role + "'");
  db::PoolOptions o;
  o.url = url;
  o.size = 1;
  o.application_name = "conveyor-testing";
  db::Pool pool(o);
  return pool.transact([&](db::Tx& tx) { return auth::create_token(tx, name, *r, std::nullopt); });
}

std::map<std::string, std::string> bearer(const std::string& token, bool json_body) {
  std::map<std::string, std::string> h{{"Authorization", "Bearer " + token}};
  if (json_body) h["Content-Type"] = "application/json";
  return h;
}

double metric_sample(const std::string& address, const std::string& name) {
  http::ClientResponse metrics;
  try {
    metrics = http::http_request("GET", "http://" + address + "/metrics");
  } catch (const std::exception&) {
    return -1.0;
  }
  const std::string line = "\n" + name + " ";  // the sample, not # HELP
  const auto at = metrics.body.find(line);
  return at == std::string::npos ? -1.0 : std::stod(metrics.body.substr(at + line.size()));
}

}  // namespace conveyor::testing
