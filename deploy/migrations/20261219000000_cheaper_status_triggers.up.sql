-- Issue 14, item 3: the status triggers, cheaper per status change, with the
-- same rules. conveyor-bench --profile-sql on the process workload (durable
-- PostgreSQL, 2 workers) measured, per job and before this migration, 3.4 ms
-- in conveyor.record_status_changes (0.54 ms per statement for about two
-- rows), 0.44 ms in the row trigger check_status_change, 129 WAL records and
-- 17 KB of WAL. Most of it was not the rows the triggers write but the
-- foreign keys they pass through:
--
-- * job.status REFERENCES job_status(name): every status change locked its
--   status row FOR KEY SHARE. All concurrent transactions lock the same few
--   rows ('queued', 'started', ...), so each lock became a MultiXact, with
--   its own WAL record and a dirtied page. The status machine check below
--   already refuses any status that job_status_transition (whose to_status
--   REFERENCES job_status) does not list, so the key adds nothing.
-- * job_status_change.job_id and job_attempt.job_id REFERENCES job(id): each
--   history row (7 per job) and each attempt row locked its job's row FOR KEY
--   SHARE again (a heap lock record per row) through a query per row. Both
--   tables are written only by the status trigger and the worker's claim, in
--   the statement that wrote that job's row, so the check never fails. What
--   the keys also did, deleting a job's history and attempts with the job
--   (ON DELETE CASCADE: retention, `conveyor job purge`), is kept by one
--   statement-level trigger.
-- * The status machine was checked per row (a PL/pgSQL call and a query per
--   changed row, before the write); it is now checked once per statement,
--   in record_status_changes, against all of the statement's changes. An
--   invalid change still fails its statement with CV001 and the same message
--   (the first invalid row by id), so nothing of it is written; updated_at is
--   still stamped on every status change, by a row trigger that runs only
--   when the status changed and does nothing else.
-- * A status change cannot be a HOT update (the claim indexes name status),
--   so it inserts an entry into every index of conveyor.job whose predicate
--   the new row meets. Two of them held every job for the sake of a few:
--   job_depends_on_idx (GIN; most jobs depend on nothing) and the unique
--   (job_type, idempotency_key) (most jobs have no key, and NULL keys never
--   conflict). Both are now partial, over the jobs they serve; their queries
--   name the predicate (`depends_on <> '{}'`, `ON CONFLICT ... WHERE
--   idempotency_key IS NOT NULL`). WAL per job of the 7 status changes
--   (pgbench, one statement per change, 2 clients): 102 records and 10.6 KB
--   before this migration, 82 records and 8.7 KB after.
-- * The stage loops' wake-up: one channel per status,
--   conveyor_job_status_<status>, instead of conveyor_job_status for all. A
--   service listens to its wake_on statuses only, so it is no longer sent
--   (and woken by) the other statuses' notifications: about 7 notifications
--   per job reached each of the six listening services before.
-- * record_job_audit ran for every UPDATE naming config (configuration's
--   batch, once per job) to find nothing to record: a WHEN clause now skips
--   the call unless params, a set config or held_at changed.

-- ------------------------------------------------------------------ keys

ALTER TABLE conveyor.job DROP CONSTRAINT job_status_fkey;
ALTER TABLE conveyor.job_status_change DROP CONSTRAINT job_status_change_job_id_fkey;
ALTER TABLE conveyor.job_attempt DROP CONSTRAINT job_attempt_job_id_fkey;

-- ON DELETE CASCADE of the two keys: a deleted job's history and attempts go
-- with it. SECURITY DEFINER as the cascade was (a key's action runs as the
-- table's owner), so whoever may delete a job need not delete these.
CREATE FUNCTION conveyor.delete_job_records() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  DELETE FROM conveyor.job_status_change c USING old_rows o WHERE c.job_id = o.id;
  DELETE FROM conveyor.job_attempt a USING old_rows o WHERE a.job_id = o.id;
  RETURN NULL;
END
$$;

CREATE TRIGGER job_delete_records
  AFTER DELETE ON conveyor.job
  REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION conveyor.delete_job_records();

-- ------------------------------------------------------------------ indexes

DROP INDEX conveyor.job_depends_on_idx;
CREATE INDEX job_depends_on_idx ON conveyor.job USING gin (depends_on) WHERE depends_on <> '{}'::bigint[];

ALTER TABLE conveyor.job DROP CONSTRAINT job_type_idempotency_key_key;
CREATE UNIQUE INDEX job_type_idempotency_key_key ON conveyor.job (job_type, idempotency_key)
  WHERE idempotency_key IS NOT NULL;

-- ------------------------------------------------------------------ status machine

-- The error of a status change job_status_transition does not list; the
-- messages of the former check_status_change. from_status NULL: an insert.
CREATE FUNCTION conveyor.refuse_status_change(job_id bigint, from_status text, to_status text)
RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
  IF from_status IS NULL THEN
    RAISE EXCEPTION USING
      ERRCODE = 'CV001',
      MESSAGE = format('invalid initial status for job %s: %s', job_id, coalesce(to_status, 'NULL')),
      HINT = 'a job is inserted as initialized or canceled';
  END IF;
  RAISE EXCEPTION USING
    ERRCODE = 'CV001',
    MESSAGE = format('invalid status transition for job %s: %s -> %s', job_id, from_status,
                     coalesce(to_status, 'NULL')),
    DETAIL = format('allowed from %s: %s', from_status,
                    coalesce((SELECT string_agg(t.to_status, ', ' ORDER BY s.position)
                              FROM conveyor.job_status_transition t
                              JOIN conveyor.job_status s ON s.name = t.to_status
                              WHERE t.from_status = refuse_status_change.from_status), 'none'));
END
$$;

COMMENT ON FUNCTION conveyor.refuse_status_change(bigint, text, text) IS
  'raises CV001 for a status change conveyor.job_status_transition does not list (issue 14)';

-- record_status_changes of 20261215000000_lifecycle_rules, with the status
-- machine checked first, over the statement's changed rows, and the
-- notification of each new status on its own channel.
CREATE OR REPLACE FUNCTION conveyor.record_status_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_actor    text := conveyor.current_actor();
  v_statuses text[];
  v_bad      record;
BEGIN
  IF TG_OP = 'INSERT' THEN
    SELECT n.id, n.status INTO v_bad FROM new_rows n
    WHERE NOT EXISTS (SELECT 1 FROM conveyor.job_status_transition t
                      WHERE t.from_status IS NULL AND t.to_status = n.status)
    ORDER BY n.id LIMIT 1;
    IF FOUND THEN
      PERFORM conveyor.refuse_status_change(v_bad.id, NULL, v_bad.status);
    END IF;
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
    -- params patch) stops here, before anything else runs. Otherwise the
    -- first changed row the status machine does not allow fails the
    -- statement.
    SELECT n.id, o.status AS from_status, n.status,
           EXISTS (SELECT 1 FROM conveyor.job_status_transition t
                   WHERE t.from_status = o.status AND t.to_status = n.status) AS allowed
    INTO v_bad
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.status IS DISTINCT FROM o.status
    ORDER BY 4, n.id LIMIT 1;
    IF NOT FOUND THEN
      RETURN NULL;
    END IF;
    IF NOT v_bad.allowed THEN
      PERFORM conveyor.refuse_status_change(v_bad.id, v_bad.from_status, v_bad.status);
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
    PERFORM pg_notify('conveyor_job_status_' || s, s) FROM unnest(v_statuses) s;
  END IF;
  RETURN NULL;
END
$$;

-- updated_at on every status change (inserts take the column's default).
CREATE FUNCTION conveyor.stamp_status_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END
$$;

DROP TRIGGER job_check_status_change ON conveyor.job;
DROP FUNCTION conveyor.check_status_change();

CREATE TRIGGER job_stamp_status_change
  BEFORE UPDATE OF status ON conveyor.job
  FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
  EXECUTE FUNCTION conveyor.stamp_status_change();

-- ------------------------------------------------------------------ audit

DROP TRIGGER job_record_audit ON conveyor.job;
CREATE TRIGGER job_record_audit
  AFTER UPDATE OF params, config, held_at ON conveyor.job
  FOR EACH ROW
  WHEN (OLD.params IS DISTINCT FROM NEW.params
        OR (OLD.config IS NOT NULL AND OLD.config IS DISTINCT FROM NEW.config)
        OR OLD.held_at IS DISTINCT FROM NEW.held_at)
  EXECUTE FUNCTION conveyor.record_job_audit();
