-- Issue 15, item 1: the console's Alerts page shows recent alerts, not only
-- those firing now. The monitor records when each alert starts and stops
-- firing (its check_alerts pass, every few seconds): one open row per
-- firing alert, closed (resolved_at) once its cause is gone.
CREATE TABLE conveyor.alert_event (
  id          bigserial PRIMARY KEY,
  name        text NOT NULL,
  severity    text NOT NULL,
  summary     text NOT NULL,          -- the latest while it fires
  fired_at    timestamptz NOT NULL DEFAULT now(),
  resolved_at timestamptz             -- NULL: firing
);
-- At most one open row per alert, also with two monitors.
CREATE UNIQUE INDEX alert_event_open_idx ON conveyor.alert_event (name) WHERE resolved_at IS NULL;
CREATE INDEX alert_event_fired_idx ON conveyor.alert_event (fired_at);

GRANT SELECT ON conveyor.alert_event TO conveyor_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON conveyor.alert_event TO conveyor_monitor;
GRANT USAGE ON SEQUENCE conveyor.alert_event_id_seq TO conveyor_monitor;
