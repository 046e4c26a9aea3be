-- Issue 14: conveyor-creation woke on every job's done (its NOTIFY, and its
-- Kafka event, which it consumed for nothing else) to read
-- conveyor.trigger_pending, which is empty unless the job's type has
-- triggers: one wake-up, one statement and one event fetched per job. Now
-- the row that makes a trigger pending notifies conveyor_trigger_pending,
-- the channel creation listens on instead, and a done job of a type with no
-- triggers costs creation nothing. Its poll stays the fallback.
CREATE OR REPLACE FUNCTION conveyor.record_trigger_pending() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM conveyor.job_type t
             WHERE t.name = NEW.job_type AND jsonb_array_length(t.triggers) > 0) THEN
    INSERT INTO conveyor.trigger_pending (job_id, job_type) VALUES (NEW.id, NEW.job_type)
    ON CONFLICT (job_id) DO NOTHING;
    IF FOUND THEN
      PERFORM pg_notify('conveyor_trigger_pending', '');
    END IF;
  END IF;
  RETURN NULL;
END
$$;
