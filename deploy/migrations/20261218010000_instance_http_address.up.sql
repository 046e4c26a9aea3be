-- Issue 15, item 3: Prometheus finds every live instance through the
-- monitor's GET /v1/sd, which needs the address each instance's admin
-- endpoints (/metrics) answer on. Workers take a free port at start-up
-- (CONVEYOR_HTTP_PORT=0), so the runtime records host:port once it listens.
-- NULL: an instance started before this migration, or not listening yet.
ALTER TABLE conveyor.service_instance ADD COLUMN http_address text;

-- service_instance_live as in 20261210000100_service_health, with the
-- address appended (CREATE OR REPLACE VIEW may only add columns at the end).
CREATE OR REPLACE VIEW conveyor.service_instance_live AS
SELECT i.id, i.service, i.host, i.pid, i.version, i.image_tag, i.started_at, i.last_heartbeat,
       i.broker, i.status AS recorded_status,
       CASE
         WHEN w.status IN ('lost', 'stopped') THEN 'replaced'
         WHEN i.status IN ('up', 'draining')
              AND i.last_heartbeat >= now() - make_interval(secs => p.service_heartbeat_timeout_s::float8)
           THEN i.status
         WHEN i.status = 'stopped' THEN 'stopped'
         WHEN i.service = 'conveyor-worker' AND w.id IS NULL THEN 'replaced'
         ELSE 'down'
       END AS live_status,
       i.http_address
FROM conveyor.service_instance i
CROSS JOIN conveyor.system_parameters p
LEFT JOIN conveyor.worker w ON i.service = 'conveyor-worker' AND w.name = i.id;
