#include "alert_history.hpp"

#include <nlohmann/json.hpp>

namespace conveyor::monitor {
namespace {

// $1: the alerts firing now, as a JSON array of {name, severity, summary}.
constexpr db::Statement kRecordAlerts{
    "monitor_record_alerts",
    "WITH now_firing AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS f(name text, severity text, summary text)),"
    " resolved AS (UPDATE conveyor.alert_event e SET resolved_at = now()"
    "   WHERE e.resolved_at IS NULL AND NOT EXISTS (SELECT 1 FROM now_firing f WHERE f.name = e.name)"
    "   RETURNING e.name, e.severity, e.summary),"
    " still AS (UPDATE conveyor.alert_event e SET summary = f.summary, severity = f.severity"
    "   FROM now_firing f WHERE e.resolved_at IS NULL AND e.name = f.name"
    "     AND (e.summary, e.severity) IS DISTINCT FROM (f.summary, f.severity)),"
    " purged AS (DELETE FROM conveyor.alert_event"
    "   WHERE resolved_at < now() - make_interval(days => $2::int)),"
    " fired AS (INSERT INTO conveyor.alert_event (name, severity, summary)"
    "   SELECT f.name, f.severity, f.summary FROM now_firing f"
    "   WHERE NOT EXISTS (SELECT 1 FROM conveyor.alert_event e WHERE e.name = f.name AND e.resolved_at IS NULL)"
    "   ON CONFLICT (name) WHERE resolved_at IS NULL DO NOTHING"
    "   RETURNING name, severity, summary)"
    " SELECT true AS fired, name, severity, summary FROM fired"
    " UNION ALL SELECT false, name, severity, summary FROM resolved"};

constexpr db::Statement kOpenAlerts{"monitor_open_alerts",
                                    "SELECT name FROM conveyor.alert_event WHERE resolved_at IS NULL ORDER BY name"};

constexpr db::Statement kRecentAlerts{
    "monitor_recent_alerts",
    "SELECT name, severity, summary, " CONVEYOR_RFC3339("fired_at") " AS fired_at, "
    "  coalesce(" CONVEYOR_RFC3339("resolved_at") ", '') AS resolved_at "
    "FROM conveyor.alert_event "
    "WHERE resolved_at IS NULL OR resolved_at >= now() - make_interval(hours => $1::int) "
    "ORDER BY fired_at DESC, id DESC LIMIT $2"};

}  // namespace

AlertChanges record_alert_history(db::Tx& tx, const std::vector<Alert>& firing, int keep_days) {
  nlohmann::json rows = nlohmann::json::array();
  for (const Alert& a : firing) rows.push_back(a.to_json());
  AlertChanges changes;
  for (const auto row : tx.exec(kRecordAlerts, {rows.dump(), keep_days})) {
    Alert a{row["name"].as_string(), row["severity"].as_string(), row["summary"].as_string()};
    (row["fired"].as_bool() ? changes.fired : changes.resolved).push_back(std::move(a));
  }
  return changes;
}

std::vector<std::string> open_alerts(db::Tx& tx) {
  std::vector<std::string> names;
  for (const auto row : tx.exec(kOpenAlerts)) names.push_back(row[0].as_string());
  return names;
}

std::vector<PastAlert> recent_alerts(db::Tx& tx, int hours, int limit) {
  std::vector<PastAlert> out;
  for (const auto row : tx.exec(kRecentAlerts, {hours, limit})) {
    out.push_back({row["name"].as_string(), row["severity"].as_string(), row["summary"].as_string(),
                   row["fired_at"].as_string(), row["resolved_at"].as_string()});
  }
  return out;
}

}  // namespace conveyor::monitor
