-- The view without the address, as 20261210000100_service_health made it;
-- a view cannot drop a column by CREATE OR REPLACE, and service_health reads it.
DROP VIEW conveyor.service_health;
DROP VIEW conveyor.service_instance_live;
ALTER TABLE conveyor.service_instance DROP COLUMN http_address;

CREATE VIEW conveyor.service_instance_live AS
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
       END AS live_status
FROM conveyor.service_instance i
CROSS JOIN conveyor.system_parameters p
LEFT JOIN conveyor.worker w ON i.service = 'conveyor-worker' AND w.name = i.id;

CREATE VIEW conveyor.service_health AS
SELECT service,
       count(*) FILTER (WHERE live_status IN ('up', 'draining')) AS live,
       count(*) FILTER (WHERE live_status = 'down') AS down,
       count(*) FILTER (WHERE live_status = 'replaced') AS replaced,
       count(*) FILTER (WHERE live_status = 'stopped') AS stopped,
       count(*) FILTER (WHERE live_status IN ('up', 'draining') AND broker = 'up') AS broker_up,
       count(*) FILTER (WHERE live_status IN ('up', 'draining') AND broker = 'down') AS broker_down,
       CASE
         WHEN count(*) FILTER (WHERE live_status IN ('up', 'draining')) > 0
           THEN CASE WHEN count(*) FILTER (WHERE live_status = 'down') = 0 THEN 'up' ELSE 'degraded' END
         WHEN service = 'conveyor-worker' AND count(*) FILTER (WHERE live_status = 'down') = 0 THEN 'idle'
         ELSE 'down'
       END AS state
FROM conveyor.service_instance_live
GROUP BY service;

GRANT SELECT ON conveyor.service_instance_live, conveyor.service_health TO conveyor_monitor, conveyor_reader;
