-- Undoes 20261210000200_job_hold.up.sql: held jobs become admissible again
-- (the column goes); their hold/release rows stay in conveyor.job_audit.
DROP TRIGGER job_record_hold_change ON conveyor.job;
DROP FUNCTION conveyor.record_hold_change();

-- conveyor.record_job_audit as 20261210000000_job_audit wrote it.
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

  RETURN NULL;
END
$$;

DROP TRIGGER job_record_audit ON conveyor.job;
CREATE TRIGGER job_record_audit
  AFTER UPDATE OF params, config ON conveyor.job
  FOR EACH ROW EXECUTE FUNCTION conveyor.record_job_audit();

DROP FUNCTION conveyor.job_admissible(conveyor.job, timestamptz);
ALTER TABLE conveyor.job DROP COLUMN held_at;
