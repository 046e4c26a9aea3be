-- Undoes 20261223000100_trigger_pending_wakes.up.sql: record_trigger_pending
-- as 20261201000100_schedules_and_triggers wrote it (no NOTIFY). The
-- previous release's creation wakes on done.
CREATE OR REPLACE FUNCTION conveyor.record_trigger_pending() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM conveyor.job_type t
             WHERE t.name = NEW.job_type AND jsonb_array_length(t.triggers) > 0) THEN
    INSERT INTO conveyor.trigger_pending (job_id, job_type) VALUES (NEW.id, NEW.job_type)
    ON CONFLICT (job_id) DO NOTHING;
  END IF;
  RETURN NULL;
END
$$;
