-- Issue 14: a worker that stops being active (drained by the pool, by an
-- operator or by itself, marked lost, stopped) leaves the queued jobs
-- admission assigned to it (20261222000000_assigned_queue). Any other
-- worker may claim them at once (CONVEYOR_CLAIMABLE_JOBS in services/worker:
-- their worker is no longer active), but nothing woke one: they waited for
-- another worker's poll. Now the worker's change of status notifies the
-- channel every worker hears (conveyor.queued_channel(NULL)) when it leaves
-- queued jobs (PostgreSQL sends it once per transaction).
--
-- SECURITY DEFINER: whoever changes a worker's status (the pool, the
-- monitor, the worker itself, an operator) need not read jobs to wake the
-- others; it reads nothing else and writes nothing.
CREATE FUNCTION conveyor.wake_for_left_jobs() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM conveyor.job WHERE status = 'queued' AND worker_id = NEW.id) THEN
    PERFORM pg_notify(conveyor.queued_channel(NULL), 'queued');
  END IF;
  RETURN NULL;
END
$$;

COMMENT ON FUNCTION conveyor.wake_for_left_jobs() IS
  'wakes every worker when a worker that stops being active leaves queued jobs assigned to it (issue 14)';

-- Only a change away from active calls it: a heartbeat costs nothing more.
CREATE TRIGGER worker_wake_for_left_jobs
  AFTER UPDATE OF status ON conveyor.worker
  FOR EACH ROW WHEN (OLD.status = 'active' AND NEW.status <> 'active')
  EXECUTE FUNCTION conveyor.wake_for_left_jobs();
