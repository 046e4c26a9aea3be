-- Back to the row trigger of 20261122000000_initial_schema (its function
-- as it was there) and no rule functions.

DROP TRIGGER job_record_status_update ON conveyor.job;
DROP TRIGGER job_record_status_insert ON conveyor.job;
DROP FUNCTION conveyor.record_status_changes();

CREATE FUNCTION conveyor.record_status_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_from      text;
  v_actor     text := conveyor.current_actor();
  v_is_error  boolean;
  v_subtype   text;
  v_message   text;
  v_change_id bigint;
  v_at        timestamptz;
BEGIN
  IF TG_OP = 'UPDATE' THEN
    IF NEW.status IS NOT DISTINCT FROM OLD.status THEN
      RETURN NULL;
    END IF;
    v_from := OLD.status;
  END IF;

  SELECT s.is_error INTO v_is_error FROM conveyor.job_status s WHERE s.name = NEW.status;
  IF coalesce(v_is_error, false) THEN
    v_subtype := NEW.error_subtype;
    v_message := NEW.error_message;
  END IF;

  INSERT INTO conveyor.job_status_change (job_id, from_status, to_status, actor, error_subtype, message)
  VALUES (NEW.id, v_from, NEW.status, v_actor, v_subtype, v_message)
  RETURNING id, at INTO v_change_id, v_at;

  INSERT INTO conveyor.outbox (topic, key, type, subject, payload)
  VALUES ('jobs', NEW.id::text, 'io.conveyor.job.' || NEW.status, NEW.id::text,
          jsonb_build_object(
            'schema_version', 1,
            'job_id', NEW.id,
            'job_type', NEW.job_type,
            'from_status', v_from,
            'to_status', NEW.status,
            'attempt', NEW.attempt,
            'priority', NEW.priority,
            'change_id', v_change_id,
            'at', v_at,
            'actor', v_actor,
            'error_subtype', v_subtype));

  PERFORM pg_notify('conveyor_outbox', '');
  RETURN NULL;
END
$$;

CREATE TRIGGER job_record_status_change
  AFTER INSERT OR UPDATE OF status ON conveyor.job
  FOR EACH ROW EXECUTE FUNCTION conveyor.record_status_change();

DROP FUNCTION conveyor.job_event_payload(bigint, text, text, text, int, int, bigint, timestamptz, text, text);
DROP FUNCTION conveyor.job_admission_eligible(conveyor.job, timestamptz, text[]);
DROP FUNCTION conveyor.queue_paused(text, text);
DROP FUNCTION conveyor.job_pool(jsonb, text);
