#include "registry.hpp"

#include <algorithm>
#include <array>
#include <string_view>

#include "conveyor/http/problem.hpp"
#include "conveyor/http/server.hpp"

namespace conveyor::monitor {
namespace {

// Timestamps leave the database as RFC 3339 text in UTC (CONVEYOR_RFC3339, db.hpp).
// $1 service (NULL: all; "creation" also matches "conveyor-creation"), $2
// live status (NULL: all). live_status is conveyor.service_instance_live's
// one rule (migration 20261210000100_service_health).
constexpr db::Statement kListServices{
    "monitor_list_services",
    "SELECT id, service, host, pid, version, image_tag, live_status, recorded_status, "
    CONVEYOR_RFC3339("started_at") " AS started_at, " CONVEYOR_RFC3339("last_heartbeat") " AS last_heartbeat, "
    "round(extract(epoch FROM (CASE WHEN live_status IN ('up', 'draining') THEN now() ELSE last_heartbeat END)"
    "      - started_at)::numeric, 3)::float8 AS uptime_s, "
    "round(extract(epoch FROM now() - last_heartbeat)::numeric, 3)::float8 AS heartbeat_age_s "
    "FROM conveyor.service_instance_live "
    "WHERE ($1::text IS NULL OR service = $1::text OR service = 'conveyor-' || $1::text) "
    "  AND ($2::text IS NULL OR live_status = $2::text) "
    "ORDER BY service, id"};

// $1 as kListServices'.
constexpr db::Statement kServiceHealth{
    "monitor_service_health",
    "SELECT service, state, live, down, replaced, stopped FROM conveyor.service_health "
    "WHERE $1::text IS NULL OR service = $1::text OR service = 'conveyor-' || $1::text ORDER BY service"};

constexpr db::Statement kListWorkers{
    "monitor_list_workers",
    "SELECT id, name, pool, host, pid, status, running, concurrency, version, "
    CONVEYOR_RFC3339("started_at") " AS started_at, " CONVEYOR_RFC3339("last_heartbeat") " AS last_heartbeat, "
    "round(extract(epoch FROM now() - last_heartbeat)::numeric, 3)::float8 AS heartbeat_age_s "
    "FROM conveyor.worker "
    "WHERE ($1::text IS NULL OR pool = $1::text) AND ($2::text IS NULL OR status = $2::text) "
    "ORDER BY name"};

// Live instances with an address: draining ones still serve /metrics.
constexpr db::Statement kScrapeTargets{
    "monitor_scrape_targets",
    "SELECT id, service, host, version, live_status, http_address FROM conveyor.service_instance_live "
    "WHERE live_status IN ('up', 'draining') AND http_address IS NOT NULL ORDER BY service, id"};

constexpr std::array<std::string_view, 5> kInstanceStatuses = {"up", "draining", "down", "stopped", "replaced"};
constexpr std::array<std::string_view, 4> kWorkerStatuses = {"active", "draining", "stopped", "lost"};

template <std::size_t N>
std::string one_of(const std::array<std::string_view, N>& values) {
  std::string out;
  for (const auto v : values) out += (out.empty() ? "" : ", ") + std::string(v);
  return out;
}

template <std::size_t N>
std::string parse_enum(const std::string& key, const std::string& value,
                       const std::array<std::string_view, N>& values) {
  if (std::find(values.begin(), values.end(), value) == values.end()) {
    throw http::FieldError(key, key + ": unknown status '" + value + "' (one of " + one_of(values) + ")");
  }
  return value;
}

// Names of services and pools: [a-z0-9._-], 1..100 characters.
std::string parse_name(const std::string& key, const std::string& value) {
  const bool ok = !value.empty() && value.size() <= 100 && std::all_of(value.begin(), value.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
  });
  if (!ok) {
    throw http::FieldError(key, key + ": '" + value + "' is not a name (1 to 100 of a-z, 0-9, '.', '_', '-')");
  }
  return value;
}

nlohmann::json text_or_null(const db::Field& f) {
  if (f.is_null()) return nullptr;
  return f.as_string();
}

nlohmann::json int_or_null(const db::Field& f) {
  if (f.is_null()) return nullptr;
  return f.as_int();
}

}  // namespace

ServiceQuery parse_service_query(const std::map<std::string, std::string>& query) {
  ServiceQuery q;
  for (const auto& [key, value] : query) {
    if (value.empty()) continue;
    if (key == "service") {
      q.service = parse_name(key, value);
    } else if (key == "status") {
      q.status = parse_enum(key, value, kInstanceStatuses);
    } else {
      throw http::FieldError(key, key + ": unknown query parameter (expected service, status)");
    }
  }
  return q;
}

WorkerQuery parse_worker_query(const std::map<std::string, std::string>& query) {
  WorkerQuery q;
  for (const auto& [key, value] : query) {
    if (value.empty()) continue;
    if (key == "pool") {
      q.pool = parse_name(key, value);
    } else if (key == "status") {
      q.status = parse_enum(key, value, kWorkerStatuses);
    } else {
      throw http::FieldError(key, key + ": unknown query parameter (expected pool, status)");
    }
  }
  return q;
}

nlohmann::json list_services(db::Tx& tx, const ServiceQuery& query) {
  nlohmann::json services = nlohmann::json::array();
  for (const db::Row r : tx.exec(kListServices, {query.service, query.status})) {
    services.push_back({{"service", r["service"].as_string()},
                        {"instance_id", r["id"].as_string()},
                        {"host", text_or_null(r["host"])},
                        {"pid", int_or_null(r["pid"])},
                        {"version", text_or_null(r["version"])},
                        {"image_tag", text_or_null(r["image_tag"])},
                        {"status", r["live_status"].as_string()},
                        {"recorded_status", r["recorded_status"].as_string()},
                        {"started_at", r["started_at"].as_string()},
                        {"last_heartbeat", r["last_heartbeat"].as_string()},
                        {"uptime_s", r["uptime_s"].as_double()},
                        {"heartbeat_age_s", r["heartbeat_age_s"].as_double()}});
  }
  nlohmann::json health = nlohmann::json::array();
  for (const db::Row r : tx.exec(kServiceHealth, {query.service})) {
    health.push_back({{"service", r["service"].as_string()},
                      {"state", r["state"].as_string()},
                      {"live", r["live"].as_int()},
                      {"down", r["down"].as_int()},
                      {"replaced", r["replaced"].as_int()},
                      {"stopped", r["stopped"].as_int()}});
  }
  return {{"services", services}, {"health", health}};
}

nlohmann::json list_workers(db::Tx& tx, const WorkerQuery& query) {
  nlohmann::json workers = nlohmann::json::array();
  for (const db::Row r : tx.exec(kListWorkers, {query.pool, query.status})) {
    workers.push_back({{"id", r["id"].as_int()},
                       {"name", r["name"].as_string()},
                       {"pool", r["pool"].as_string()},
                       {"host", text_or_null(r["host"])},
                       {"pid", int_or_null(r["pid"])},
                       {"status", r["status"].as_string()},
                       {"running", r["running"].as_int()},
                       {"concurrency", r["concurrency"].as_int()},
                       {"version", text_or_null(r["version"])},
                       {"started_at", r["started_at"].as_string()},
                       {"last_heartbeat", r["last_heartbeat"].as_string()},
                       {"heartbeat_age_s", r["heartbeat_age_s"].as_double()}});
  }
  return {{"workers", workers}};
}

nlohmann::json scrape_targets(db::Tx& tx) {
  nlohmann::json groups = nlohmann::json::array();
  for (const db::Row r : tx.exec(kScrapeTargets)) {
    nlohmann::json labels = {{"service", r["service"].as_string()},
                             {"instance", r["id"].as_string()},
                             {"__meta_conveyor_status", r["live_status"].as_string()}};
    // Prometheus label values are strings: absent ones are left out, not null.
    if (!r["version"].is_null()) labels["__meta_conveyor_version"] = r["version"].as_string();
    if (!r["host"].is_null()) labels["__meta_conveyor_host"] = r["host"].as_string();
    groups.push_back({{"targets", {r["http_address"].as_string()}}, {"labels", std::move(labels)}});
  }
  return groups;
}

void add_routes(runtime::Context& ctx) {
  ctx.http().route("GET", "/v1/sd", [&ctx](const http::Request&) {
    return http::Response::json(ctx.db().transact([](db::Tx& tx) { return scrape_targets(tx); }));
  });
  ctx.http().route("GET", "/v1/services", [&ctx](const http::Request& req) {
    const ServiceQuery query = parse_service_query(req.query);
    return http::Response::json(ctx.db().transact([&](db::Tx& tx) { return list_services(tx, query); }));
  });
  ctx.http().route("GET", "/v1/workers", [&ctx](const http::Request& req) {
    const WorkerQuery query = parse_worker_query(req.query);
    return http::Response::json(ctx.db().transact([&](db::Tx& tx) { return list_workers(tx, query); }));
  });
}

}  // namespace conveyor::monitor
