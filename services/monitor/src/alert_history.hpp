#pragma once
// When each alert started and stopped firing (conveyor.alert_event), for the
// console's "recent" list: recorded by the monitor's alert pass.
#include <string>
#include <vector>

#include "alerts.hpp"
#include "conveyor/db/db.hpp"

namespace conveyor::monitor {

// What one alert pass changed: the alerts that started firing (a row was
// opened) and those that stopped (their row was closed).
struct AlertChanges {
  std::vector<Alert> fired;
  std::vector<Alert> resolved;
};

// Opens a row for each alert firing now that has none, updates the summary
// of those still firing, and closes the rows of alerts no longer firing.
// Resolved rows older than `keep_days` go. An alert still firing since an
// earlier pass (this monitor's before a restart, or another replica's) is
// neither fired nor resolved: it is announced once.
AlertChanges record_alert_history(db::Tx& tx, const std::vector<Alert>& firing, int keep_days = 30);

// The names of the alerts whose rows are open (firing, as last recorded).
std::vector<std::string> open_alerts(db::Tx& tx);

struct PastAlert {
  std::string name;
  std::string severity;
  std::string summary;
  std::string fired_at;     // RFC 3339, UTC
  std::string resolved_at;  // "" while it fires
};

// The alerts that fired or resolved in the last `hours`, newest first.
std::vector<PastAlert> recent_alerts(db::Tx& tx, int hours = 24, int limit = 200);

}  // namespace conveyor::monitor
