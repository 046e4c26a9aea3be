-- Two statements of the hot path that cost more at a low rate than their
-- work: the status trigger's, and configuration's batch.
--
-- 1. The status trigger writes history and outbox and sends its NOTIFYs in
-- one statement.
--
-- At a low rate every statement that changes a status changes one or two
-- jobs, and each call of conveyor.record_status_changes cost about 0.6 ms
-- (conveyor-bench at 100 jobs/s: 2.8 of PostgreSQL's 9 ms per job). Much of
-- that is per statement the function runs, whatever the rows: it ran the
-- check, the history and outbox insert, a SELECT of the statuses written,
-- and one PERFORM per kind of NOTIFY (two or three). The insert now ends in
-- the NOTIFYs: the check and one statement per call.
--
-- What is sent is unchanged: conveyor_outbox once, conveyor_job_status_<s>
-- per status written (not queued), and conveyor.queued_channel(worker) per
-- worker with a queued row in the statement when a job became queued.
-- PostgreSQL folds equal notifications of a transaction into one, so the
-- order within the statement does not matter.
CREATE OR REPLACE FUNCTION conveyor.record_status_changes() RETURNS trigger
LANGUAGE plpgsql
-- Its plans are its own whoever fires it (20261226000000_plain_status_scans).
SET enable_seqscan = on
SET enable_bitmapscan = on
SET plan_cache_mode = auto
AS $$
DECLARE
  v_actor    text := conveyor.current_actor();
  v_bad      record;
  v_sent     bigint;
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
      RETURNING payload->>'to_status' AS to_status),
    channels AS (
      SELECT 'conveyor_outbox' AS channel, '' AS payload WHERE EXISTS (SELECT 1 FROM events)
      UNION
      SELECT 'conveyor_job_status_' || e.to_status, e.to_status FROM events e WHERE e.to_status <> 'queued'
      UNION
      SELECT conveyor.queued_channel(q.worker_id), 'queued'
      FROM (SELECT DISTINCT n.worker_id FROM new_rows n WHERE n.status = 'queued') q
      WHERE EXISTS (SELECT 1 FROM events e WHERE e.to_status = 'queued'))
    SELECT count(pg_notify(ch.channel, ch.payload)) FROM channels ch INTO v_sent;
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
      RETURNING payload->>'to_status' AS to_status),
    -- A queued job wakes the worker it is assigned to, or, assigned to
    -- none, every worker (conveyor.queued_channel).
    channels AS (
      SELECT 'conveyor_outbox' AS channel, '' AS payload WHERE EXISTS (SELECT 1 FROM events)
      UNION
      SELECT 'conveyor_job_status_' || e.to_status, e.to_status FROM events e WHERE e.to_status <> 'queued'
      UNION
      SELECT conveyor.queued_channel(q.worker_id), 'queued'
      FROM (SELECT DISTINCT n.worker_id FROM new_rows n WHERE n.status = 'queued') q
      WHERE EXISTS (SELECT 1 FROM events e WHERE e.to_status = 'queued'))
    SELECT count(pg_notify(ch.channel, ch.payload)) FROM channels ch INTO v_sent;
  END IF;
  RETURN NULL;
END
$$;

-- 2. Configuration's batch: what the configure and ready steps write, for
-- the jobs still in the status the batch was claimed in. The service sent
-- it as a prepared UPDATE ... FROM unnest(...) with that status as a
-- parameter. With the arrays as constants PostgreSQL knows a batch's size;
-- a generic plan guesses ten rows. The generic plan looked seven times
-- dearer than a custom one, so PostgreSQL planned the statement anew at
-- every call: 2,862 plans in 2,935 calls, 0.27 ms each, at 100 jobs/s. And
-- while the job table was small (a new cluster), the plan was a sequential
-- scan of it, kept as it grew: 190 pages for one job.
--
-- Here the plan is made once per session (generic), and it looks the
-- batch's ids up by the primary key whatever the statistics say
-- (enable_seqscan off). The status trigger the update fires has settings of
-- its own. Returns the jobs moved.
CREATE FUNCTION conveyor.apply_configuration(from_status text, ids bigint[], to_statuses text[], configs text[],
                                             max_attempts bigint[], subtypes text[], messages text[])
RETURNS bigint
LANGUAGE plpgsql
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_moved bigint;
BEGIN
  UPDATE conveyor.job j SET status = v.to_status,
         config = coalesce(nullif(v.config, '')::jsonb, j.config),
         max_attempts = coalesce(nullif(v.max_attempts, 0)::int, j.max_attempts),
         error_subtype = CASE WHEN v.to_status = 'internal_error' THEN v.subtype ELSE j.error_subtype END,
         error_message = CASE WHEN v.to_status = 'internal_error' THEN v.message ELSE j.error_message END
  FROM unnest(apply_configuration.ids, apply_configuration.to_statuses, apply_configuration.configs,
              apply_configuration.max_attempts, apply_configuration.subtypes, apply_configuration.messages)
       AS v(id, to_status, config, max_attempts, subtype, message)
  WHERE j.id = v.id AND j.status = apply_configuration.from_status;
  GET DIAGNOSTICS v_moved = ROW_COUNT;
  RETURN v_moved;
END
$$;

COMMENT ON FUNCTION conveyor.apply_configuration(text, bigint[], text[], text[], bigint[], text[], text[]) IS
  'Configuration''s batch: per job (arrays in step) its new status, config and max_attempts (empty and 0: keep), '
  'and an internal_error''s subtype and message, for the jobs still in from_status. Returns the jobs moved.';
