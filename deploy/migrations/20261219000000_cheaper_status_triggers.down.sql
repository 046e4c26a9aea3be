-- Undoes 20261219000000_cheaper_status_triggers.up.sql: the keys, the row
-- check of the status machine and the audit trigger without WHEN, as before.
-- The keys are validated against the rows present (history and attempts of
-- deleted jobs were deleted with them by job_delete_records).

DROP TRIGGER job_record_audit ON conveyor.job;
CREATE TRIGGER job_record_audit
  AFTER UPDATE OF params, config, held_at ON conveyor.job
  FOR EACH ROW EXECUTE FUNCTION conveyor.record_job_audit();

DROP TRIGGER job_stamp_status_change ON conveyor.job;
DROP FUNCTION conveyor.stamp_status_change();

-- conveyor.check_status_change as 20261122000000_initial_schema wrote it.
CREATE FUNCTION conveyor.check_status_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NOT EXISTS (SELECT 1 FROM conveyor.job_status_transition t
                   WHERE t.from_status IS NULL AND t.to_status = NEW.status) THEN
      RAISE EXCEPTION USING
        ERRCODE = 'CV001',
        MESSAGE = format('invalid initial status for job %s: %s', NEW.id, coalesce(NEW.status, 'NULL')),
        HINT = 'a job is inserted as initialized or canceled';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
  END IF;

  IF NEW.status IS NOT DISTINCT FROM OLD.status THEN
    RETURN NEW;
  END IF;

  IF NOT EXISTS (SELECT 1 FROM conveyor.job_status_transition t
                 WHERE t.from_status = OLD.status AND t.to_status = NEW.status) THEN
    RAISE EXCEPTION USING
      ERRCODE = 'CV001',
      MESSAGE = format('invalid status transition for job %s: %s -> %s',
                       OLD.id, OLD.status, coalesce(NEW.status, 'NULL')),
      DETAIL = format('allowed from %s: %s', OLD.status,
                      coalesce((SELECT string_agg(t.to_status, ', ' ORDER BY s.position)
                                FROM conveyor.job_status_transition t
                                JOIN conveyor.job_status s ON s.name = t.to_status
                                WHERE t.from_status = OLD.status), 'none'));
  END IF;
  NEW.updated_at := now();
  RETURN NEW;
END
$$;

CREATE TRIGGER job_check_status_change
  BEFORE INSERT OR UPDATE OF status ON conveyor.job
  FOR EACH ROW EXECUTE FUNCTION conveyor.check_status_change();

-- conveyor.record_status_changes as 20261215000000_lifecycle_rules wrote it.
CREATE OR REPLACE FUNCTION conveyor.record_status_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_actor    text := conveyor.current_actor();
  v_statuses text[];
BEGIN
  IF TG_OP = 'INSERT' THEN
    WITH changed AS (
      SELECT n.id, NULL::text AS from_status, n.status, n.job_type, n.attempt, n.priority,
             n.error_subtype, n.error_message
      FROM new_rows n),
    history AS (
      INSERT INTO conveyor.job_status_change (job_id, from_status, to_status, actor, error_subtype, message)
      SELECT c.id, c.from_status, c.status, v_actor,
             CASE WHEN s.is_error THEN c.error_subtype END,
             CASE WHEN s.is_error THEN c.error_message END
      FROM changed c JOIN conveyor.job_status s ON s.name = c.status
      ORDER BY c.id
      RETURNING id, job_id, from_status, to_status, at, error_subtype),
    events AS (
      INSERT INTO conveyor.outbox (topic, key, type, subject, payload)
      SELECT 'jobs', h.job_id::text, 'io.conveyor.job.' || h.to_status, h.job_id::text,
             conveyor.job_event_payload(h.job_id, c.job_type, h.from_status, h.to_status, c.attempt,
                                        c.priority, h.id, h.at, v_actor, h.error_subtype)
      FROM history h JOIN changed c ON c.id = h.job_id
      ORDER BY h.id
      RETURNING payload->>'to_status' AS to_status)
    SELECT array_agg(DISTINCT e.to_status) INTO v_statuses FROM events e;
  ELSE
    -- An UPDATE that changes no status (a re-emit, a cancel request, a
    -- params patch) stops here, before the inserts run.
    IF NOT EXISTS (SELECT 1 FROM new_rows n JOIN old_rows o ON o.id = n.id
                   WHERE n.status IS DISTINCT FROM o.status) THEN
      RETURN NULL;
    END IF;
    WITH changed AS (
      SELECT n.id, o.status AS from_status, n.status, n.job_type, n.attempt, n.priority,
             n.error_subtype, n.error_message
      FROM new_rows n JOIN old_rows o ON o.id = n.id
      WHERE n.status IS DISTINCT FROM o.status),
    history AS (
      INSERT INTO conveyor.job_status_change (job_id, from_status, to_status, actor, error_subtype, message)
      SELECT c.id, c.from_status, c.status, v_actor,
             CASE WHEN s.is_error THEN c.error_subtype END,
             CASE WHEN s.is_error THEN c.error_message END
      FROM changed c JOIN conveyor.job_status s ON s.name = c.status
      ORDER BY c.id
      RETURNING id, job_id, from_status, to_status, at, error_subtype),
    events AS (
      INSERT INTO conveyor.outbox (topic, key, type, subject, payload)
      SELECT 'jobs', h.job_id::text, 'io.conveyor.job.' || h.to_status, h.job_id::text,
             conveyor.job_event_payload(h.job_id, c.job_type, h.from_status, h.to_status, c.attempt,
                                        c.priority, h.id, h.at, v_actor, h.error_subtype)
      FROM history h JOIN changed c ON c.id = h.job_id
      ORDER BY h.id
      RETURNING payload->>'to_status' AS to_status)
    SELECT array_agg(DISTINCT e.to_status) INTO v_statuses FROM events e;
  END IF;

  IF v_statuses IS NOT NULL THEN
    PERFORM pg_notify('conveyor_outbox', '');
    PERFORM pg_notify('conveyor_job_status', s) FROM unnest(v_statuses) s;
  END IF;
  RETURN NULL;
END
$$;

DROP FUNCTION conveyor.refuse_status_change(bigint, text, text);

DROP TRIGGER job_delete_records ON conveyor.job;
DROP FUNCTION conveyor.delete_job_records();

DROP INDEX conveyor.job_type_idempotency_key_key;
ALTER TABLE conveyor.job ADD CONSTRAINT job_type_idempotency_key_key UNIQUE (job_type, idempotency_key);

DROP INDEX conveyor.job_depends_on_idx;
CREATE INDEX job_depends_on_idx ON conveyor.job USING gin (depends_on);

ALTER TABLE conveyor.job_attempt ADD CONSTRAINT job_attempt_job_id_fkey
  FOREIGN KEY (job_id) REFERENCES conveyor.job (id) ON DELETE CASCADE;
ALTER TABLE conveyor.job_status_change ADD CONSTRAINT job_status_change_job_id_fkey
  FOREIGN KEY (job_id) REFERENCES conveyor.job (id) ON DELETE CASCADE;
ALTER TABLE conveyor.job ADD CONSTRAINT job_status_fkey
  FOREIGN KEY (status) REFERENCES conveyor.job_status (name);
