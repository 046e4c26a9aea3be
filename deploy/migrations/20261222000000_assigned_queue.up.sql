-- Issue 14: the worker herd. Every worker of a pool LISTENed on
-- conveyor_job_status_queued, so each job admitted woke all of them, and all
-- but one ran a claim (an UPDATE with its transaction) that found nothing:
-- 1.8 claims per job with 2 workers, N with N (conveyor-bench --profile-sql,
-- 40 jobs/s). Now admission assigns each job it queues to one worker, and
-- only that worker is woken:
--
-- * Admission (services/job-execution, Assignment) sets a queued job's
--   worker_id to an active worker of its pool with a free slot (concurrency
--   less its queued and started jobs) and a heartbeat within two intervals,
--   the most free first, so a batch spreads over the pool. A job that finds no slot (every worker full, none
--   registered yet) and a container job (whether a worker has a container
--   runtime is the worker's to know) are queued assigned to nobody, as
--   before. It reads the workers' pools, room, status and heartbeat, nothing else.
-- * The status trigger notifies a queued job on its worker's channel,
--   conveyor_job_queued_for_<worker id>, and a job assigned to nobody on
--   conveyor_job_status_queued, which every worker still hears
--   (conveyor.queued_channel).
-- * The worker claims its own jobs, jobs assigned to nobody, and any job
--   whose worker is no longer active (drained, stopped, lost) or has left it
--   queued for more than 1 s (a worker that hangs, or was full after all):
--   an assignment is a hint, never a lock, so no job waits on a worker that
--   will not run it (services/worker, CONVEYOR_CLAIMABLE_JOBS).
--
-- worker_id of a queued job is its assigned worker; of a started one, as
-- before, the worker that runs it.

-- The NOTIFY channel of a queued job assigned to `worker_id` (NULL: to none,
-- every worker's channel).
CREATE FUNCTION conveyor.queued_channel(worker_id bigint)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN worker_id IS NULL THEN 'conveyor_job_status_queued'
              ELSE 'conveyor_job_queued_for_' || worker_id END
$$;

COMMENT ON FUNCTION conveyor.queued_channel(bigint) IS
  'the NOTIFY channel of a queued job assigned to this worker (NULL: to none, heard by every worker) (issue 14)';

GRANT UPDATE (worker_id) ON conveyor.job TO conveyor_execution;
GRANT SELECT (id, pool, concurrency, status, last_heartbeat) ON conveyor.worker TO conveyor_execution;

-- record_status_changes of 20261219000000_cheaper_status_triggers, with a
-- queued job notified on its worker's channel.
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
    PERFORM pg_notify('conveyor_job_status_' || s, s) FROM unnest(v_statuses) s WHERE s <> 'queued';
    -- A queued job wakes the worker it is assigned to, or, assigned to
    -- none, every worker (conveyor.queued_channel).
    IF 'queued' = ANY (v_statuses) THEN
      PERFORM pg_notify(conveyor.queued_channel(q.worker_id), 'queued')
      FROM (SELECT DISTINCT n.worker_id FROM new_rows n WHERE n.status = 'queued') q;
    END IF;
  END IF;
  RETURN NULL;
END
$$;
