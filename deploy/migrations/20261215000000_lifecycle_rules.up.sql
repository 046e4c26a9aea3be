-- Issue 14, item 3: each lifecycle rule once, as one SQL function that every
-- caller (services, CLI, the triggers) uses instead of its own copy.
--
-- * conveyor.job_pool(config, type_pool): a job's pool.
-- * conveyor.queue_paused(job_type, pool): the paused-queue rule of
--   conveyor.queue_state.
-- * conveyor.job_admission_eligible(j, as_of, job_types): admission may take
--   this job at as_of: ready, conveyor.job_admissible (not canceled, not held,
--   not_before passed), of a handled type (job_types_list, NULL: all) and of
--   no paused type or pool. Admission, the reconciler's re-emits and the
--   waves' backlog all ask this one question.
-- * conveyor.job_event_payload(...): the CloudEvent data of a job's status
--   event, written by the status trigger and repeated by the reconciler's
--   re-emit.
--
-- History and outbox of status changes are now written by statement-level
-- triggers with transition tables (one INSERT ... SELECT per statement, one
-- NOTIFY per statement) instead of the row trigger job_record_status_change
-- (two INSERTs and a NOTIFY per changed row). The rows are the same: one
-- history row and one outbox event per real status change, the insert
-- included, with the same actor, statuses, error subtype and message.
--
-- Grants: functions are EXECUTE to PUBLIC. They run as the caller: the roles
-- that call queue_paused (execution, monitor, reader, the owner) already read
-- queue_state; the triggers write the tables the row trigger wrote.

CREATE FUNCTION conveyor.job_pool(config jsonb, type_pool text DEFAULT NULL)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT coalesce(config->>'pool', type_pool, 'default')
$$;

COMMENT ON FUNCTION conveyor.job_pool(jsonb, text) IS
  'a job''s pool: its config''s pool, else its type''s (before configuration), else default (issue 14)';

CREATE FUNCTION conveyor.queue_paused(job_type text, pool text)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT EXISTS (SELECT 1 FROM conveyor.queue_state qs
                 WHERE qs.paused
                   AND ((qs.kind = 'job_type' AND qs.name = job_type)
                     OR (qs.kind = 'pool' AND qs.name = pool)))
$$;

COMMENT ON FUNCTION conveyor.queue_paused(text, text) IS
  'whether the job type or the pool is paused (conveyor.queue_state; no row: not paused) (issue 14)';

-- A plain SQL expression, so the planner inlines it into each caller's query
-- (and still matches job_ready_idx through the status test).
CREATE FUNCTION conveyor.job_admission_eligible(j conveyor.job, as_of timestamptz, job_types text[])
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT j.status = 'ready'
     AND conveyor.job_admissible(j, as_of)
     AND (job_types IS NULL OR j.job_type = ANY(job_types))
     AND NOT conveyor.queue_paused(j.job_type, conveyor.job_pool(j.config))
$$;

COMMENT ON FUNCTION conveyor.job_admission_eligible(conveyor.job, timestamptz, text[]) IS
  'whether admission may take this job at as_of: ready, job_admissible, of a type in job_types '
  '(NULL: all), of no paused type or pool; per-type limits and capacity are admission''s own (issue 14)';

CREATE FUNCTION conveyor.job_event_payload(job_id bigint, job_type text, from_status text,
                                           to_status text, attempt int, priority int,
                                           change_id bigint, at timestamptz, actor text,
                                           error_subtype text)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT jsonb_build_object(
           'schema_version', 1,
           'job_id', job_id,
           'job_type', job_type,
           'from_status', from_status,
           'to_status', to_status,
           'attempt', attempt,
           'priority', priority,
           'change_id', change_id,
           'at', at,
           'actor', actor,
           'error_subtype', error_subtype)
$$;

COMMENT ON FUNCTION conveyor.job_event_payload(bigint, text, text, text, int, int, bigint, timestamptz, text, text) IS
  'CloudEvent data of io.conveyor.job.<to_status> (schema_version 1) (issue 14)';

-- ------------------------------------------------------------------ statement-level history

-- One function for both triggers: each names its transition tables new_rows
-- (and old_rows for UPDATE). A trigger with transition tables cannot have an
-- UPDATE OF column list, so the UPDATE one fires for every UPDATE statement
-- on job and keeps only the rows whose status changed.
--
-- The two branches differ only in where the changed rows come from (an
-- INSERT trigger has no old_rows); handing the rows from one to a shared
-- statement through arrays cost about 0.1 ms more per single-row statement,
-- so each branch writes its own INSERT ... SELECT.
--
-- Besides conveyor_outbox (the relay's wake-up, payload ''), it notifies
-- conveyor_job_status once per new status of the statement (payload: the
-- status), so a stage loop can wake only for the status it acts on.
CREATE FUNCTION conveyor.record_status_changes() RETURNS trigger
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

DROP TRIGGER job_record_status_change ON conveyor.job;
DROP FUNCTION conveyor.record_status_change();

CREATE TRIGGER job_record_status_insert
  AFTER INSERT ON conveyor.job
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION conveyor.record_status_changes();

CREATE TRIGGER job_record_status_update
  AFTER UPDATE ON conveyor.job
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION conveyor.record_status_changes();
