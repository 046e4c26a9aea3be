-- Issue 13, item 9: hold a single job. `conveyor job hold ID` sets held_at;
-- admission (conveyor-execution) skips a held job as it skips a canceled
-- one, until `conveyor job release ID` (or `UPDATE conveyor.job SET held_at =
-- NULL`) clears it. Only admission looks at it: a held job still moves
-- initialized -> configured -> ready and then waits there. A job that is
-- already queued or started is with a worker: holding it would do nothing,
-- so the CLI refuses (cancel it instead).
--
-- * conveyor.job_admissible(j, as_of): the one rule of "admission may take
--   this ready job at as_of": not canceled, not held, its not_before passed.
--   Used by admission and by the monitor (re-emits of stalled ready jobs and
--   the jobs_stuck alert: a held job is waiting, not stalled).
-- * Every change of held_at is recorded in conveyor.job_audit (field 'hold'
--   or 'release', old and new held_at) by conveyor.record_job_audit, and
--   announced as io.conveyor.job.held / released on the jobs topic, so a
--   release by psql wakes admission at once.
--
-- Grants: SELECT on job is granted whole (service_roles), so every service
-- reads held_at. Only the CLI (the database owner) writes it; no service role
-- gets UPDATE (held_at). The audit row is written by the SECURITY DEFINER
-- trigger function; the outbox row by whoever changed held_at (the owner).
-- A nullable column: catalog-only, no rewrite.

ALTER TABLE conveyor.job ADD COLUMN held_at timestamptz;

CREATE FUNCTION conveyor.job_admissible(j conveyor.job, as_of timestamptz DEFAULT now())
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT j.canceled_at IS NULL AND j.held_at IS NULL AND (j.not_before IS NULL OR j.not_before <= as_of)
$$;

COMMENT ON FUNCTION conveyor.job_admissible(conveyor.job, timestamptz) IS
  'whether admission may take this ready job at as_of: not canceled, not held, not_before passed (issue 13)';

-- conveyor.record_job_audit of 20261210000000_job_audit, with held_at added
-- (that migration's blocks unchanged).
CREATE OR REPLACE FUNCTION conveyor.record_job_audit() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NEW.params IS DISTINCT FROM OLD.params THEN
    INSERT INTO conveyor.job_audit (job_id, field, old_value, new_value)
    VALUES (NEW.id, 'params', OLD.params, NEW.params);
  END IF;

  IF OLD.config IS NOT NULL AND NEW.config IS DISTINCT FROM OLD.config THEN
    INSERT INTO conveyor.job_audit (job_id, field, old_value, new_value)
    VALUES (NEW.id, 'config', OLD.config, NEW.config);
  END IF;

  -- hold: held_at set (or moved); release: held_at cleared.
  IF NEW.held_at IS DISTINCT FROM OLD.held_at THEN
    INSERT INTO conveyor.job_audit (job_id, field, old_value, new_value)
    VALUES (NEW.id, CASE WHEN NEW.held_at IS NULL THEN 'release' ELSE 'hold' END,
            to_jsonb(OLD.held_at), to_jsonb(NEW.held_at));
  END IF;

  RETURN NULL;
END
$$;

DROP TRIGGER job_record_audit ON conveyor.job;
CREATE TRIGGER job_record_audit
  AFTER UPDATE OF params, config, held_at ON conveyor.job
  FOR EACH ROW EXECUTE FUNCTION conveyor.record_job_audit();

-- Like record_cancel_request: the event comes from the database, whoever
-- changed the column.
CREATE FUNCTION conveyor.record_hold_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO conveyor.outbox (topic, key, type, subject, payload)
  VALUES ('jobs', NEW.id::text,
          CASE WHEN NEW.held_at IS NULL THEN 'io.conveyor.job.released' ELSE 'io.conveyor.job.held' END,
          NEW.id::text,
          jsonb_build_object(
            'schema_version', 1,
            'job_id', NEW.id,
            'job_type', NEW.job_type,
            'status', NEW.status,
            'held_at', NEW.held_at,
            'previous_held_at', OLD.held_at,
            'at', clock_timestamp(),
            'actor', conveyor.current_actor()));
  PERFORM pg_notify('conveyor_outbox', '');
  RETURN NULL;
END
$$;

CREATE TRIGGER job_record_hold_change
  AFTER UPDATE OF held_at ON conveyor.job
  FOR EACH ROW WHEN (OLD.held_at IS DISTINCT FROM NEW.held_at)
  EXECUTE FUNCTION conveyor.record_hold_change();
