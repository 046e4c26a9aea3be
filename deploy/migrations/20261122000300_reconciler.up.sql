-- What the reconciler (conveyor-monitor, services/monitor) needs.
--
-- * conveyor.job.reemitted_at: when the reconciler last re-emitted the job's
--   event because it had not moved for longer than its status's stall
--   threshold (system_parameters.stall_<status>_s). Setting it is not a status
--   change: no history row, updated_at untouched.
-- * system_parameters.service_heartbeat_timeout_s: a service instance whose
--   heartbeat is older than this is shown (and marked) `down`.
-- * Runbook 000's restart-by-SQL: a job that becomes `canceled` always has
--   canceled_at set (a BEFORE trigger fills it in), so `status = 'canceled'
--   AND canceled_at IS NULL` means exactly "an operator set canceled_at back
--   to null: restart it".
--
-- Adding a nullable column, or one with a constant default, is catalog-only
-- (PostgreSQL 11+); the backfill touches only canceled jobs without canceled_at.

ALTER TABLE conveyor.job ADD COLUMN reemitted_at timestamptz;

ALTER TABLE conveyor.system_parameters
  ADD COLUMN service_heartbeat_timeout_s int NOT NULL DEFAULT 30
  CHECK (service_heartbeat_timeout_s > 0);

-- Runs after job_check_status_change (BEFORE triggers fire in name order), so
-- only a valid move to canceled is stamped. A same-status UPDATE (canceled ->
-- canceled) that clears canceled_at is the restart request: left alone.
CREATE FUNCTION conveyor.stamp_canceled_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.canceled_at IS NULL THEN
    IF TG_OP = 'INSERT' THEN
      NEW.canceled_at := now();
    ELSIF OLD.status IS DISTINCT FROM NEW.status THEN
      NEW.canceled_at := now();
    END IF;
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER job_stamp_canceled_at
  BEFORE INSERT OR UPDATE OF status ON conveyor.job
  FOR EACH ROW WHEN (NEW.status = 'canceled')
  EXECUTE FUNCTION conveyor.stamp_canceled_at();

-- Jobs canceled before this migration: without this they would look like
-- restart requests. The cancel-request trigger is off for the backfill (these
-- are not new requests); ADD COLUMN above already holds the table's lock.
ALTER TABLE conveyor.job DISABLE TRIGGER job_record_cancel_request;
UPDATE conveyor.job SET canceled_at = updated_at WHERE status = 'canceled' AND canceled_at IS NULL;
ALTER TABLE conveyor.job ENABLE TRIGGER job_record_cancel_request;

-- Reconciler: canceled jobs whose canceled_at was set back to null (restarts),
-- and cancels still to apply (job_canceled_at_idx also holds every canceled job).
CREATE INDEX job_restart_requested_idx ON conveyor.job (id)
  WHERE status = 'canceled' AND canceled_at IS NULL;
CREATE INDEX job_cancel_pending_idx ON conveyor.job (canceled_at, id)
  WHERE canceled_at IS NOT NULL AND status NOT IN ('done', 'canceled');
