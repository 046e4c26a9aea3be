-- Issue 13, item 7: one rule for whether a service instance is live, and
-- for the health of each service, read by `conveyor system status`, the
-- monitor's GET /v1/services, its conveyor_service_instances gauge and its
-- alerts (service_down, service_missing). Before, each wrote its own copy.
--
-- live_status of an instance:
--   up, draining  its recorded status, with a heartbeat younger than
--                 system_parameters.service_heartbeat_timeout_s
--   stopped       it deregistered (a clean stop)
--   replaced      a conveyor-worker instance whose conveyor.worker row
--                 (same name) is lost or stopped, whatever its heartbeat
--                 (the pool saw it die, or drained it), or a dead one whose
--                 row retention already removed: history, not a fault
--   down          anything else: stale heartbeat, or marked down by the
--                 reconciler
--
-- The views run with their owner's rights (no security_invoker), so a
-- reader needs SELECT on the views only.

CREATE VIEW conveyor.service_instance_live AS
SELECT i.id, i.service, i.host, i.pid, i.version, i.image_tag, i.started_at, i.last_heartbeat,
       i.broker, i.status AS recorded_status,
       CASE
         -- First: the pool marks a worker it saw die lost at once, while the
         -- instance's last heartbeat is still fresh.
         WHEN w.status IN ('lost', 'stopped') THEN 'replaced'
         WHEN i.status IN ('up', 'draining')
              AND i.last_heartbeat >= now() - make_interval(secs => p.service_heartbeat_timeout_s::float8)
           THEN i.status
         WHEN i.status = 'stopped' THEN 'stopped'
         -- Retention purged its worker row (24 h after its last heartbeat)
         -- before this instance row: still history, not a fault.
         WHEN i.service = 'conveyor-worker' AND w.id IS NULL THEN 'replaced'
         ELSE 'down'
       END AS live_status
FROM conveyor.service_instance i
CROSS JOIN conveyor.system_parameters p
-- A join, not a subquery per use: service_health repeats live_status in
-- each count, and as many subplans made the plan costly enough for JIT
-- (over a second for a handful of rows). worker.name is unique.
LEFT JOIN conveyor.worker w ON i.service = 'conveyor-worker' AND w.name = i.id;

-- One row per service that has instance rows. state:
--   up        live instances, none down
--   degraded  live instances and down ones
--   down      no live instance (a stopped service too), except:
--   idle      conveyor-worker with no live and no down instance: workers
--             come and go with the pool (min_number_of_worker_instances may
--             be 0); replaced and stopped ones are history
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

-- The monitor (registry, alerts, metrics) and read-only users. The CLI runs
-- as the database owner.
GRANT SELECT ON conveyor.service_instance_live, conveyor.service_health TO conveyor_monitor, conveyor_reader;
