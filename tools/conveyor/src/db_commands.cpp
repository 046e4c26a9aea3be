// `conveyor db ...`: the migration commands of runbook 002, and grant-login
// (a service's own login role, member of its NOLOGIN role).
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>

#include "cli.hpp"
#include "conveyor/db/migrations.hpp"

namespace conveyor::cli {

namespace {

constexpr const char* kDbUsage =
    "usage: conveyor db init         create the migration tables\n"
    "       conveyor db status       pending count, current version, up to date or not\n"
    "       conveyor db pending      list migrations not yet applied\n"
    "       conveyor db applied      list applied migrations with group ids and times\n"
    "       conveyor db create NAME  write an empty up/down migration pair named NAME\n"
    "       conveyor db migrate      apply every pending migration as one group, in one transaction\n"
    "       conveyor db rollback     undo the last group (asks; --yes in scripts; --force while services run)\n"
    "       conveyor db lock         refuse migrate and rollback until unlocked\n"
    "       conveyor db unlock       allow migrate and rollback again\n"
    "       conveyor db grant-login LOGIN --role conveyor_<service> (--password-file FILE | --no-password)\n"
    "                 a service's login role, member of its least-privilege role (run as the owner)\n";

std::filesystem::path migrations_dir(const Context& ctx) {
  std::string dir = ctx.config.get_string("CONVEYOR_MIGRATIONS_DIR");
  return dir.empty() ? db::default_migrations_dir() : std::filesystem::path(dir);
}

// "user@host", recorded by `db lock` so others know whom to ask.
std::string whoami() {
  std::string user = "unknown";
  if (const passwd* pw = getpwuid(geteuid())) user = pw->pw_name;
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  return user + "@" + host;
}

std::string join_names(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

int status(Context& ctx, db::Migrator& m) {
  auto st = m.status();
  if (ctx.json) {
    nlohmann::json j = {{"initialized", st.initialized},
                        {"pending", st.pending},
                        {"group_id", st.group_id ? nlohmann::json(*st.group_id) : nlohmann::json()},
                        {"last_applied", st.last_applied},
                        {"locked", st.locked},
                        {"unknown", st.unknown},
                        {"up_to_date", st.up_to_date()}};
    ctx.out << j.dump() << "\n";
    return kExitOk;
  }
  if (!st.initialized) {
    ctx.out << "database is not initialized: run `conveyor db init`\n";
    ctx.out << "pending migration(s): " << st.pending << "\n";
    return kExitOk;
  }
  ctx.out << "pending migration(s): " << st.pending << "\n";
  if (st.group_id) {
    ctx.out << "database version: group #" << *st.group_id << " (" << st.last_applied << ")\n";
  } else {
    ctx.out << "database version: none (no migration applied)\n";
  }
  if (st.locked) ctx.out << "migrations are locked (conveyor db unlock to allow migrate/rollback)\n";
  if (!st.unknown.empty()) {
    // A newer release migrated it: this folder can neither undo nor redo those.
    ctx.out << "applied migration(s) not in " << m.directory().string() << ": " << st.unknown.size() << " ("
            << join_names(st.unknown)
            << "), from a newer release: roll them back with that release's CLI and migrations folder\n";
    ctx.out << (st.pending == 0 ? "database is ahead of this release\n" : "database is out-of-date\n");
    return kExitOk;
  }
  ctx.out << (st.up_to_date() ? "database is up-to-date\n" : "database is out-of-date\n");
  return kExitOk;
}

int pending(Context& ctx, db::Migrator& m) {
  auto files = m.pending();
  if (ctx.json) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& f : files) j.push_back({{"name", f.name}, {"comment", f.comment}});
    ctx.out << j.dump() << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& f : files) rows.push_back({"N/A", f.name, f.comment, "N/A", "N/A"});
  print_table(ctx.out, {"ID", "NAME", "COMMENT", "GROUP-ID", "MIGRATED-AT"}, rows);
  return kExitOk;
}

int applied(Context& ctx, db::Migrator& m) {
  auto list = m.applied();
  if (ctx.json) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& a : list) {
      j.push_back({{"id", a.id},
                   {"name", a.name},
                   {"comment", a.comment},
                   {"group_id", a.group_id},
                   {"migrated_at", a.migrated_at}});
    }
    ctx.out << j.dump() << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& a : list) {
    rows.push_back({std::to_string(a.id), a.name, a.comment, std::to_string(a.group_id), display_time(a.migrated_at)});
  }
  print_table(ctx.out, {"ID", "NAME", "COMMENT", "GROUP-ID", "MIGRATED-AT"}, rows);
  return kExitOk;
}

// ---------------------------------------------------------------- grant-login

// The NOLOGIN roles of the service-roles migration: a login made here is a
// member of exactly one of them.
constexpr std::array<std::string_view, 8> kServiceRoles = {
    "conveyor_creation",    "conveyor_configuration", "conveyor_execution", "conveyor_worker",
    "conveyor_publication", "conveyor_workerpool",    "conveyor_monitor",   "conveyor_reader"};

bool is_service_role(std::string_view name) {
  return std::find(kServiceRoles.begin(), kServiceRoles.end(), name) != kServiceRoles.end();
}

// A login name we are willing to create: a plain lower-case identifier, so
// it never needs quoting in a URL or pg_hba.conf, and not a reserved pg_ name.
bool valid_login_name(std::string_view name) {
  if (name.empty() || name.size() > 63 || name.starts_with("pg_")) return false;
  if (!(std::islower(static_cast<unsigned char>(name[0])) || name[0] == '_')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '_';
  });
}

// The password in FILE without its trailing newline(s). Printable ASCII only:
// the SCRAM verifier is computed here, and for such passwords SASLprep (what
// the server applies) changes nothing.
std::string read_password_file(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec) || std::filesystem::file_size(file, ec) > 4096 || ec) {
    throw Error(errc::bad_input, "--password-file " + file.string() + ": not a readable file of at most 4 KiB");
  }
  std::ifstream in(file, std::ios::binary);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (!in) throw Error(errc::bad_input, "--password-file " + file.string() + ": cannot read it");
  std::string password = std::move(buffer).str();
  while (!password.empty() && (password.back() == '\n' || password.back() == '\r')) password.pop_back();
  if (password.empty()) throw Error(errc::bad_input, "--password-file " + file.string() + ": the file is empty");
  if (!std::all_of(password.begin(), password.end(), [](char c) { return c >= 0x20 && c < 0x7f; })) {
    throw Error(errc::bad_input, "--password-file " + file.string() +
                                     ": the password must be printable ASCII (e.g. openssl rand -base64 32)");
  }
  return password;
}

std::string base64(const unsigned char* data, std::size_t size) {
  std::string out(4 * ((size + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(size));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

// The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677,
// the format of PQencryptPasswordConn): the server receives this, never the
// password, so the password cannot reach its log or an error's context.
std::string scram_sha256_verifier(const std::string& password) {
  constexpr int kIterations = 4096;
  std::array<unsigned char, 16> salt{};
  std::array<unsigned char, SHA256_DIGEST_LENGTH> salted{}, client_key{}, stored_key{}, server_key{};
  unsigned int length = 0;
  const bool ok = RAND_bytes(salt.data(), salt.size()) == 1 &&
                  PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()), salt.data(), salt.size(),
                                    kIterations, EVP_sha256(), salted.size(), salted.data()) == 1 &&
                  HMAC(EVP_sha256(), salted.data(), salted.size(), reinterpret_cast<const unsigned char*>("Client Key"),
                       10, client_key.data(), &length) != nullptr &&
                  SHA256(client_key.data(), client_key.size(), stored_key.data()) != nullptr &&
                  HMAC(EVP_sha256(), salted.data(), salted.size(), reinterpret_cast<const unsigned char*>("Server Key"),
                       10, server_key.data(), &length) != nullptr;
  OPENSSL_cleanse(salted.data(), salted.size());
  if (!ok) throw Error(errc::internal, "cannot compute the SCRAM-SHA-256 verifier (OpenSSL)");
  return "SCRAM-SHA-256$" + std::to_string(kIterations) + ":" + base64(salt.data(), salt.size()) + "$" +
         base64(stored_key.data(), stored_key.size()) + ":" + base64(server_key.data(), server_key.size());
}

// Roles are cluster-wide while advisory locks are per database: the lock
// serialises grant-login runs on one database (two migrate jobs), and the
// exception handler below covers a CREATE ROLE racing from elsewhere.
constexpr db::Statement kGrantLoginLock{"cli_grant_login_lock",
                                        "SELECT pg_advisory_xact_lock(hashtext('conveyor.db.grant-login'))"};
constexpr db::Statement kRoleInfo{
    "cli_grant_login_role_info",
    "SELECT rolcanlogin, rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls AS powerful, "
    "rolname = current_user AS is_me, "
    // A login that owns objects or belongs to roles other than the eight
    // would carry more than its service's grants: refused, not reused.
    "EXISTS (SELECT 1 FROM pg_class WHERE relowner = r.oid) OR "
    "EXISTS (SELECT 1 FROM pg_namespace WHERE nspowner = r.oid) OR "
    "EXISTS (SELECT 1 FROM pg_database WHERE datdba = r.oid) OR "
    "EXISTS (SELECT 1 FROM pg_proc WHERE proowner = r.oid) AS owns, "
    "EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
    "        WHERE m.member = r.oid AND g.rolname NOT IN ('conveyor_creation', 'conveyor_configuration', "
    "          'conveyor_execution', 'conveyor_worker', 'conveyor_publication', 'conveyor_workerpool', "
    "          'conveyor_monitor', 'conveyor_reader')) AS other_member "
    "FROM pg_roles r WHERE rolname = $1"};
// Utility statements take no parameters: the values travel as parameters
// into transaction-local settings, and the DO block quotes them itself
// (format %I for identifiers, %L for the verifier).
constexpr db::Statement kGrantLoginSettings{
    "cli_grant_login_settings",
    "SELECT set_config('conveyor.grant_login', $1, true), set_config('conveyor.grant_role', $2, true), "
    "set_config('conveyor.grant_verifier', $3, true)"};
constexpr db::Statement kGrantLogin{"cli_grant_login", R"sql(
DO $grant$
DECLARE
  login text := current_setting('conveyor.grant_login');
  service text := current_setting('conveyor.grant_role');
  verifier text := nullif(current_setting('conveyor.grant_verifier'), '');
  other text;
BEGIN
  BEGIN
    EXECUTE format('CREATE ROLE %I LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
                   'NOBYPASSRLS PASSWORD %L', login, verifier);
  EXCEPTION WHEN duplicate_object OR unique_violation THEN
    EXECUTE format('ALTER ROLE %I LOGIN INHERIT PASSWORD %L', login, verifier);
  END;
  -- One login, one service: drop a membership of another service's role.
  FOR other IN
    SELECT r.rolname FROM pg_auth_members m
      JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
     WHERE u.rolname = login AND r.rolname <> service
       AND r.rolname IN ('conveyor_creation', 'conveyor_configuration', 'conveyor_execution', 'conveyor_worker',
                         'conveyor_publication', 'conveyor_workerpool', 'conveyor_monitor', 'conveyor_reader')
  LOOP
    EXECUTE format('REVOKE %I FROM %I', other, login);
  END LOOP;
  EXECUTE format('GRANT %I TO %I', service, login);
END
$grant$)sql"};
constexpr db::Statement kIsMember{"cli_grant_login_is_member", "SELECT pg_has_role($1, $2, 'MEMBER')"};

int grant_login(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "db grant-login", {"--role", "--password-file"}, {"--no-password"});
  if (o.positional.size() != 1 || !o.get("--role") ||
      (o.get("--password-file").has_value() == o.has("--no-password"))) {
    ctx.err
        << "usage: conveyor db grant-login LOGIN --role conveyor_<service> (--password-file FILE | --no-password)\n";
    return kExitUsage;
  }
  const std::string login = o.positional[0];
  const std::string role = *o.get("--role");
  if (!is_service_role(role)) {
    std::string roles;
    for (auto r : kServiceRoles) roles += (roles.empty() ? "" : ", ") + std::string(r);
    throw Error(errc::bad_input, "--role '" + role + "': expected one of " + roles);
  }
  if (!valid_login_name(login) || is_service_role(login)) {
    throw Error(errc::bad_input, "login '" + login +
                                     "': expected lower-case letters, digits and '_' (at most 63, not starting "
                                     "with a digit or pg_), and not one of the service roles themselves");
  }
  std::string verifier;  // "": no password (PASSWORD NULL)
  if (const auto file = o.get("--password-file")) verifier = scram_sha256_verifier(read_password_file(*file));

  db::Pool pool(pool_options(ctx));
  const bool created = pool.transact([&](db::Tx& tx) {
    tx.exec(kGrantLoginLock);
    if (tx.exec(kRoleInfo, {role}).empty()) {
      throw Error(errc::not_found, "role " + role + " does not exist: run `conveyor db migrate` first");
    }
    const db::Result existing = tx.exec(kRoleInfo, {login});
    if (!existing.empty() && (existing[0]["powerful"].as_bool() || existing[0]["is_me"].as_bool())) {
      throw Error(errc::conflict, "refusing to change role " + login +
                                      ": it is the role running this command, or it has SUPERUSER, CREATEROLE, "
                                      "CREATEDB, REPLICATION or BYPASSRLS");
    }
    if (!existing.empty() && (existing[0]["owns"].as_bool() || existing[0]["other_member"].as_bool())) {
      throw Error(errc::conflict, "refusing to change role " + login +
                                      ": it owns objects (tables, schemas, databases or functions here) or is a "
                                      "member of a role other than the eight service roles, so it would carry "
                                      "more than " +
                                      role + "'s grants; choose a new login name");
    }
    tx.exec(kGrantLoginSettings, {login, role, verifier});
    tx.exec(kGrantLogin);
    if (!tx.exec(kIsMember, {login, role})[0][0].as_bool()) {
      throw Error(errc::internal, login + " is not a member of " + role + " after GRANT");
    }
    return existing.empty();
  });
  const std::string password = verifier.empty() ? "no password" : "password from " + *o.get("--password-file");
  if (ctx.json) {
    ctx.out << nlohmann::json{{"login", login}, {"role", role}, {"created", created}, {"password", !verifier.empty()}}
                   .dump()
            << "\n";
  } else {
    ctx.out << "login " << login << (created ? " created" : " updated") << ": member of " << role << " only, "
            << password << "\n";
  }
  return kExitOk;
}

// The migration verbs take no argument (create: NAME); each parses its
// options first, so help and completion never touch the database.
std::filesystem::path no_arguments(Context& ctx, const std::vector<std::string>& args, const std::string& verb) {
  const Options o = parse_options(args, "db " + verb, {});
  if (!o.positional.empty()) {
    throw FieldError(o.positional[0], "db " + verb + ": unexpected argument '" + o.positional[0] + "'");
  }
  return migrations_dir(ctx);
}

int init_cmd(Context& ctx, const std::vector<std::string>& args) {
  const auto dir = no_arguments(ctx, args, "init");
  db::Migrator m(ctx.database_url(), dir);
  m.init();
  ctx.out << "migration tables ready (conveyor.schema_migrations, conveyor.schema_migration_lock)\n";
  return kExitOk;
}

int status_cmd(Context& ctx, const std::vector<std::string>& args) {
  const auto dir = no_arguments(ctx, args, "status");
  db::Migrator m(ctx.database_url(), dir);
  return status(ctx, m);
}

int pending_cmd(Context& ctx, const std::vector<std::string>& args) {
  const auto dir = no_arguments(ctx, args, "pending");
  db::Migrator m(ctx.database_url(), dir);
  return pending(ctx, m);
}

int applied_cmd(Context& ctx, const std::vector<std::string>& args) {
  const auto dir = no_arguments(ctx, args, "applied");
  db::Migrator m(ctx.database_url(), dir);
  return applied(ctx, m);
}

int create_cmd(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "db create", {});
  if (o.positional.size() != 1) {
    ctx.err << "usage: conveyor db create NAME\n";
    return kExitUsage;
  }
  auto up = db::Migrator::create(migrations_dir(ctx), o.positional[0]);
  auto down = up;
  down.replace_filename(up.filename().string().substr(0, up.filename().string().size() - 7) + ".down.sql");
  ctx.out << "created migration " << up.string() << " and " << down.filename().string() << "\n";
  return kExitOk;
}

int migrate_cmd(Context& ctx, const std::vector<std::string>& args) {
  const auto dir = no_arguments(ctx, args, "migrate");
  db::Migrator m(ctx.database_url(), dir);
  const auto r = [&] {
    Progress progress("db migrate");
    return m.migrate();
  }();
  if (r.names.empty()) {
    ctx.out << "no pending migrations: database is up-to-date\n";
  } else {
    ctx.out << "database migrated to group #" << r.group_id << " (" << join_names(r.names) << ")\n";
  }
  return kExitOk;
}

// Runbook 002's rollback undoes the last group, whose down files drop what
// it made: named first, and asked for (--yes in scripts). The first group
// drops every table, and every job, job type, history row and token with
// them: said so. Refused while services or workers heartbeat (they would
// write to what goes, or fail), unless --force.
int rollback_cmd(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "db rollback", {}, {"--yes", "--force"});
  if (!o.positional.empty()) {
    throw FieldError(o.positional[0], "db rollback: unexpected argument '" + o.positional[0] + "'");
  }
  db::Migrator m(ctx.database_url(), migrations_dir(ctx));
  m.check_unlocked("rollback");
  const auto applied = m.applied();  // newest first
  if (applied.empty()) {
    ctx.out << "nothing to roll back\n";
    return kExitOk;
  }
  const std::int64_t group = applied.front().group_id;
  std::vector<std::string> names;
  for (const auto& a : applied) {
    if (a.group_id == group) names.push_back(a.name + "_" + a.comment);
  }
  std::ostream& talk = ctx.json ? ctx.err : ctx.out;
  talk << "db rollback undoes group #" << group << ": " << names.size() << " migration(s), newest first ("
       << join_names(names) << ")\n";
  if (applied.back().group_id == group) {
    talk << "it is the first group: its down files drop every Conveyor table, and every job, job type, history "
            "row and token in them (`conveyor system backup FILE` keeps them)\n";
  }
  db::Pool pool(pool_options(ctx));
  if (refuse_while_live(ctx, pool, o.has("--force"))) return kExitFailed;
  if (!o.has("--yes") && !confirm(ctx, talk, "roll back group #" + std::to_string(group) + "?")) {
    talk << "not rolled back: nothing changed\n";
    return kExitFailed;
  }
  auto r = m.rollback();
  if (r.names.empty()) {
    ctx.out << "nothing to roll back\n";
  } else {
    ctx.out << "rolled back group #" << r.group_id << " (" << join_names(r.names) << ")\n";
  }
  return kExitOk;
}

int lock_cmd(Context& ctx, const std::vector<std::string>& args) {
  const auto dir = no_arguments(ctx, args, "lock");
  db::Migrator m(ctx.database_url(), dir);
  m.lock(whoami());
  ctx.out << "migrations locked: migrate and rollback refuse until `conveyor db unlock`\n";
  return kExitOk;
}

int unlock_cmd(Context& ctx, const std::vector<std::string>& args) {
  const auto dir = no_arguments(ctx, args, "unlock");
  db::Migrator m(ctx.database_url(), dir);
  m.unlock();
  ctx.out << "migrations unlocked\n";
  return kExitOk;
}

}  // namespace

int db_command(Context& ctx, const std::vector<std::string>& args) {
  return dispatch(ctx, args, "db", kDbUsage,
                  {{"init", init_cmd},
                   {"status", status_cmd},
                   {"pending", pending_cmd},
                   {"applied", applied_cmd},
                   {"create", create_cmd},
                   {"migrate", migrate_cmd},
                   {"rollback", rollback_cmd},
                   {"lock", lock_cmd},
                   {"unlock", unlock_cmd},
                   {"grant-login", grant_login}});
}

}  // namespace conveyor::cli
