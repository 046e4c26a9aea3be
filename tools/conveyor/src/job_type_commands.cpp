// `conveyor job-type apply|list|show`: job types as data (DESIGN §4). `apply`
// works like `terraform apply`: validate the file, show what would change,
// ask, then write every change in one transaction.
#include <algorithm>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>

#include "cli.hpp"
#include "conveyor/db/db.hpp"
#include "conveyor/error/error.hpp"
#include "conveyor/model/job_type.hpp"

namespace conveyor::cli {

namespace {

using nlohmann::json;

constexpr const char* kJobTypeUsage =
    "usage: conveyor job-type apply FILE [--yes] [--dry-run]\n"
    "       conveyor job-type list\n"
    "       conveyor job-type show NAME\n";

struct FieldChange {
  std::string field;
  json old_value;
  json new_value;
};

struct Diff {
  std::vector<model::JobType> added;
  std::vector<std::pair<model::JobType, std::vector<FieldChange>>> changed;
  std::vector<std::string> unchanged;
  std::vector<std::string> not_in_file;
  std::size_t changes() const { return added.size() + changed.size(); }
};

Diff compute_diff(const std::vector<model::JobType>& wanted, const std::vector<model::JobType>& current) {
  std::map<std::string, json> in_db;
  for (const auto& t : current) in_db[t.name] = t.to_json();
  Diff d;
  std::map<std::string, bool> in_file;
  for (const auto& t : wanted) {
    in_file[t.name] = true;
    const auto it = in_db.find(t.name);
    if (it == in_db.end()) {
      d.added.push_back(t);
      continue;
    }
    // Both sides went through parse_job_type and to_json, so equal types
    // give equal JSON field by field.
    const json now = t.to_json();
    std::vector<FieldChange> fields;
    for (const auto& [k, v] : now.items()) {
      const json old_v = it->second.contains(k) ? it->second[k] : json();
      if (old_v != v) fields.push_back({k, old_v, v});
    }
    if (fields.empty()) d.unchanged.push_back(t.name);
    else d.changed.emplace_back(t, std::move(fields));
  }
  for (const auto& t : current) {
    if (!in_file.count(t.name)) d.not_in_file.push_back(t.name);
  }
  return d;
}

json diff_json(const std::string& file, const Diff& d) {
  json added = json::array(), changed = json::array();
  for (const auto& t : d.added) added.push_back(t.name);
  for (const auto& [t, fields] : d.changed) {
    json f = json::object();
    for (const auto& c : fields) f[c.field] = {{"old", c.old_value}, {"new", c.new_value}};
    changed.push_back({{"name", t.name}, {"fields", f}});
  }
  return {{"file", file},       {"changes", d.changes()},   {"added", added},
          {"changed", changed}, {"unchanged", d.unchanged}, {"not_in_file", d.not_in_file}};
}

void print_diff(std::ostream& out, const std::string& file, const Diff& d) {
  out << "job types in " << file << " compared with the database:\n";
  for (const auto& t : d.added) out << "  + " << t.name << " (added)\n";
  for (const auto& [t, fields] : d.changed) {
    out << "  ~ " << t.name << " (changed)\n";
    for (const auto& c : fields)
      out << "      " << c.field << ": " << c.old_value.dump() << " -> " << c.new_value.dump() << "\n";
  }
  for (const auto& n : d.unchanged) out << "  = " << n << " (unchanged)\n";
  for (const auto& n : d.not_in_file) out << "  ? " << n << " (not in file: left alone)\n";
  out << d.changes() << " change(s): " << d.added.size() << " added, " << d.changed.size() << " changed, "
      << d.unchanged.size() << " unchanged\n";
}

// Reads and validates FILE; Error(bad_input) naming the file and the field.
std::vector<model::JobType> read_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(errc::bad_input, path + ": cannot read the file");
  std::stringstream ss;
  ss << in.rdbuf();
  json j;
  try {
    j = json::parse(ss.str());
  } catch (const json::parse_error& e) {
    throw Error(errc::bad_input, path + ": not valid JSON: " + e.what());
  }
  try {
    return model::parse_job_types_file(j);
  } catch (const Error& e) {
    throw Error(e.code(), path + ": " + e.what());
  }
}

int apply(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "job-type apply", {}, {"--yes", "-y", "--dry-run"});
  if (o.positional.size() > 1) throw Error(errc::bad_input, "job-type apply: one FILE only");
  const std::string file = o.positional.empty() ? "" : o.positional[0];
  const bool yes = o.has("--yes") || o.has("-y");
  const bool dry_run = o.has("--dry-run");
  if (file.empty()) throw Error(errc::bad_input, "job-type apply: FILE is required\n" + std::string(kJobTypeUsage));

  const auto wanted = read_file(file);  // before touching the database: a bad file writes nothing
  db::Pool pool(pool_options(ctx));
  const auto current = pool.transact([](db::Tx& tx) { return model::load_job_types(tx); });
  const Diff d = compute_diff(wanted, current);
  // Under --json stdout holds only the diff document; prompts and notes go to stderr.
  if (ctx.json) ctx.out << diff_json(file, d).dump() << "\n";
  else print_diff(ctx.out, file, d);

  std::ostream& talk = ctx.json ? ctx.err : ctx.out;
  if (d.changes() == 0) {
    talk << "nothing to apply: the database already matches " << file << "\n";
    return kExitOk;
  }
  if (dry_run) {
    talk << "dry run: nothing written\n";
    return kExitOk;
  }
  if (!yes && !confirm(ctx, talk, "apply " + std::to_string(d.changes()) + " change(s)?")) {
    talk << "not applied: nothing written\n";
    return kExitFailed;
  }
  pool.transact([&](db::Tx& tx) {
    // What is written must be what was shown: someone may have applied in between.
    if (diff_json(file, compute_diff(wanted, model::load_job_types(tx))) != diff_json(file, d)) {
      throw Error(errc::conflict,
                  "job types changed in the database since the diff was shown; nothing written, run "
                  "the apply again");
    }
    // In name order, as the scheduler's pass locks schedule states: two
    // transactions that lock them in the same order cannot deadlock.
    std::vector<const model::JobType*> writes;
    for (const auto& t : d.added) writes.push_back(&t);
    for (const auto& [t, fields] : d.changed) writes.push_back(&t);
    std::sort(writes.begin(), writes.end(), [](const auto* a, const auto* b) { return a->name < b->name; });
    for (const auto* t : writes) model::upsert_job_type(tx, *t);
  });
  talk << "applied " << d.changes() << " change(s) from " << file << "\n";
  return kExitOk;
}

std::vector<model::JobType> load_all(const Context& ctx) {
  db::Pool pool(pool_options(ctx));
  return pool.transact([](db::Tx& tx) { return model::load_job_types(tx); });
}

int list(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "job-type list", {});
  if (!o.positional.empty()) {
    throw FieldError(o.positional[0], "job-type list: unexpected argument '" + o.positional[0] + "'");
  }
  const auto types = load_all(ctx);
  if (ctx.json) {
    json j = json::array();
    for (const auto& t : types) j.push_back(t.to_json());
    ctx.out << j.dump() << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& t : types) {
    std::string sinks;
    for (const auto& s : t.sinks) sinks += (sinks.empty() ? "" : ",") + s.kind;
    rows.push_back({t.name, t.enabled ? "yes" : "no", std::to_string(t.priority), std::to_string(t.timeout_s) + "s",
                    std::to_string(t.max_attempts), t.concurrency_limit ? std::to_string(*t.concurrency_limit) : "-",
                    sinks.empty() ? "-" : sinks});
  }
  print_table(ctx.out, {"NAME", "ENABLED", "PRIORITY", "TIMEOUT", "ATTEMPTS", "LIMIT", "SINKS"}, rows);
  return kExitOk;
}

int show(Context& ctx, const std::vector<std::string>& args) {
  const Options o = parse_options(args, "job-type show", {});
  if (o.positional.size() != 1)
    throw Error(errc::bad_input, "job-type show: NAME is required\n" + std::string(kJobTypeUsage));
  const std::string name = o.positional[0];
  db::Pool pool(pool_options(ctx));
  const auto t = pool.transact([&](db::Tx& tx) { return model::load_job_type(tx, name); });
  if (!t) throw Error(errc::not_found, "job type '" + name + "' does not exist");
  ctx.out << (ctx.json ? t->to_json().dump() : t->to_json().dump(2)) << "\n";
  return kExitOk;
}

}  // namespace

int job_type_command(Context& ctx, const std::vector<std::string>& args) {
  return dispatch(ctx, args, "job-type", kJobTypeUsage,
                  {{"apply", apply}, {"list", list}, {"ls", list}, {"show", show}});
}

}  // namespace conveyor::cli
