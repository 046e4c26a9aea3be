// `conveyor token create|list|revoke`: the API tokens of conveyor.api_token
// (issue 12), through conveyor::auth. Like every command here it talks to
// PostgreSQL directly and needs no token itself: whoever can reach the
// database as its owner may hand out tokens. `create` prints the token once,
// alone on stdout (so `$(conveyor token create ...)` captures it); only its
// SHA-256 is stored, so it cannot be shown again.
#include <ostream>

#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "conveyor/auth/auth.hpp"
#include "conveyor/error/error.hpp"

namespace conveyor::cli {

namespace {

using nlohmann::json;

constexpr const char* kTokenUsage =
    "usage: conveyor token create NAME --role reader|submitter|operator [--expires 30d]\n"
    "                 prints the new token once on stdout (only its SHA-256 is stored)\n"
    "       conveyor token list      every token: role, state, created, expires, last used\n"
    "       conveyor token revoke NAME   requests with it get 401 from now on\n"
    "roles: reader (every GET), submitter (reader + submit, cancel/retry its own jobs),\n"
    "       operator (everything: parameters, queues, job types, any job)\n"
    "--expires: a number and s, m, h or d (90m, 12h, 30d); without it the token does not expire.\n"
    "NAME: lower-case letters, digits, '.', '_', '-'; never reused, even once revoked.\n";

constexpr const char* kRoles =
    "reader (every GET), submitter (reader + submit, cancel/retry its own jobs) or operator (everything)";

// "2026-12-04T10:11:12.123456Z" -> "2026-12-04T10:11:12Z": seconds are enough in a table.

json nullable(const std::optional<std::string>& v) { return v ? json(*v) : json(); }

json to_json(const auth::TokenInfo& t) {
  return {{"name", t.name},
          {"role", std::string(auth::to_string(t.role))},
          {"state", t.state},
          {"created_at", t.created_at},
          {"created_by", t.created_by},
          {"expires_at", nullable(t.expires_at)},
          {"revoked_at", nullable(t.revoked_at)},
          {"last_used_at", nullable(t.last_used_at)}};
}

std::optional<auth::TokenInfo> find(db::Tx& tx, const std::string& name) {
  for (auto& t : auth::list_tokens(tx)) {
    if (t.name == name) return std::move(t);
  }
  return std::nullopt;
}

std::string one_name(const Options& o, const std::string& command) {
  if (o.positional.size() != 1) {
    throw FieldError("NAME", "token " + command + ": one token NAME is required\n" + std::string(kTokenUsage));
  }
  return o.positional[0];
}

int create(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "token create", {"--role", "--expires"});
  const std::string name = one_name(o, "create");
  const auto role_text = o.get("--role");
  if (!role_text) throw FieldError("--role", "token create: --role is required: " + std::string(kRoles));
  const auto role = auth::parse_role(*role_text);
  if (!role) {
    throw FieldError("--role", "token create: '" + role_text->substr(0, 40) + "' is not a role: use " + kRoles);
  }
  std::optional<std::chrono::seconds> expires_in;
  if (const auto e = o.get("--expires")) {
    try {
      expires_in = auth::parse_expiry(*e);
    } catch (const FieldError& bad) {
      throw FieldError("--expires", std::string("token create: --expires: ") + bad.what());
    }
  }
  db::Pool pool(pool_options(ctx));
  const auto [token, info] = pool.transact([&](db::Tx& tx) {
    std::string secret = auth::create_token(tx, name, *role, expires_in);
    auto row = find(tx, name);
    if (!row) throw Error(errc::internal, "token '" + name + "' was created but cannot be read back");
    return std::pair{std::move(secret), std::move(*row)};
  });
  if (ctx.json) {
    json j = to_json(info);
    j["token"] = token;
    ctx.out << j.dump() << "\n";
  } else {
    ctx.out << token << "\n";
  }
  ctx.out.flush();
  // On stderr, so that `$(conveyor token create ...)` holds the token alone.
  ctx.err << "conveyor: token '" << info.name << "' created (role " << auth::to_string(info.role) << ", "
          << (info.expires_at ? "expires " + display_time(info.expires_at, "") : std::string("does not expire"))
          << "); it is shown only this once: only its SHA-256 is stored\n";
  return kExitOk;
}

int list(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "token list", {});
  if (!o.positional.empty()) {
    throw FieldError(o.positional[0], "token list: unexpected argument '" + o.positional[0] + "'");
  }
  db::Pool pool(pool_options(ctx));
  const auto tokens = pool.transact([](db::Tx& tx) { return auth::list_tokens(tx); });
  if (ctx.json) {
    json j = json::array();
    for (const auto& t : tokens) j.push_back(to_json(t));
    ctx.out << j.dump() << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& t : tokens) {
    rows.push_back({t.name, std::string(auth::to_string(t.role)), t.state, display_time(t.created_at, ""),
                    display_time(t.expires_at, "never"), display_time(t.last_used_at, "never"), t.created_by});
  }
  print_table(ctx.out, {"NAME", "ROLE", "STATE", "CREATED", "EXPIRES", "LAST USED", "CREATED BY"}, rows);
  return kExitOk;
}

int revoke(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "token revoke", {});
  const std::string name = one_name(o, "revoke");
  db::Pool pool(pool_options(ctx));
  const auth::TokenInfo info = pool.transact([&](db::Tx& tx) {
    if (!auth::revoke_token(tx, name)) {
      const auto row = find(tx, name);
      if (!row) throw Error(errc::not_found, "no token named '" + name + "' (see `conveyor token list`)");
      throw Error(errc::conflict, "token '" + name + "' was already revoked at " + display_time(row->revoked_at, "?"));
    }
    return *find(tx, name);
  });
  if (ctx.json) {
    ctx.out << to_json(info).dump() << "\n";
    return kExitOk;
  }
  ctx.out << "token '" << info.name << "' (role " << auth::to_string(info.role) << ") revoked at "
          << display_time(info.revoked_at, "?") << ": requests with it get 401 from now on\n";
  return kExitOk;
}

}  // namespace

int token_command(Context& ctx, const std::vector<std::string>& args) {
  return dispatch(ctx, args, "token", kTokenUsage,
                  {{"create", create}, {"list", list}, {"ls", list}, {"revoke", revoke}});
}

}  // namespace conveyor::cli
