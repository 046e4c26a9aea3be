-- The done check of conveyor.record_status_changes (20261228000100) looks up
-- the jobs that wait on the jobs made done, not every job that waits.
--
-- Its query, "a configured job whose depends_on overlaps the ids made done",
-- was planned as a sequential scan of the job table, or as job_active_idx
-- (status = 'configured') ANDed with job_depends_on_idx: the planner cannot
-- see the ids when it plans, and takes 1% of the rows for an overlap. So a
-- commit that made a job done read every waiting job. With 20,000 jobs
-- configured and waiting, 3.5 ms a commit (sequential scan); with 40,000
-- waiting among 440,000 jobs, 104 buffers and 1.1 ms (BitmapAnd). Through
-- the index below, 8 buffers and 0.07 ms. In conveyor-bench's chain burst
-- (6,000 jobs, three to a chain) publication's done statement took 0.30-0.34
-- ms per job before and 0.13 after.
--
-- job_configured_depends_on_idx holds only configured jobs with
-- dependencies: it matches every condition of the check. It gets an entry
-- when such a job becomes configured (or has another row version that is
-- not HOT while configured); a job of another status adds none. fastupdate
-- off: a lookup never walks a pending list of recent entries, which in
-- job_depends_on_idx can grow to gin_pending_list_limit (4 MB) between
-- vacuums.
CREATE INDEX job_configured_depends_on_idx ON conveyor.job USING gin (depends_on) WITH (fastupdate = off)
  WHERE status = 'configured' AND depends_on <> '{}';

-- Whether a configured job waits on any of `ids`. The plan is fixed, the
-- same whoever calls: a bitmap scan of job_configured_depends_on_idx alone
-- (a GIN index has no other kind of scan). Sequential and plain index scans
-- are off: a plain scan of job_active_idx for status = 'configured',
-- filtered by the overlap, is costed to its first row for an EXISTS and
-- came close on 3,000 waiting jobs (12.1 against 10.5), and it would read
-- every waiting job when none waits on `ids`. Any AND with another index
-- costs more than the one index. plpgsql, so the plan is made once per
-- session.
CREATE FUNCTION conveyor.configured_jobs_wait_on(ids bigint[]) RETURNS boolean
LANGUAGE plpgsql STABLE
SET enable_seqscan = off
SET enable_indexscan = off
SET enable_bitmapscan = on
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
  RETURN EXISTS (SELECT 1 FROM conveyor.job w
                 WHERE w.status = 'configured' AND w.depends_on <> '{}'
                   AND w.depends_on && configured_jobs_wait_on.ids);
END
$$;

-- The function of 20261228000100_done_notified_when_awaited.up.sql, whose
-- done check calls conveyor.configured_jobs_wait_on once per statement (a
-- subquery of no row: an InitPlan).
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
             n.error_subtype, n.error_message, n.worker_id, s.is_error, s.notified
      FROM new_rows n JOIN conveyor.job_status s ON s.name = n.status),
    history AS (
      INSERT INTO conveyor.job_status_change (job_id, from_status, to_status, actor, error_subtype, message)
      SELECT c.id, c.from_status, c.status, v_actor,
             CASE WHEN c.is_error THEN c.error_subtype END,
             CASE WHEN c.is_error THEN c.error_message END
      FROM changed c
      ORDER BY c.id
      RETURNING id, job_id, from_status, to_status, at, error_subtype),
    events AS (
      INSERT INTO conveyor.outbox (topic, key, type, subject, payload)
      SELECT 'jobs', h.job_id::text, 'io.conveyor.job.' || h.to_status, h.job_id::text,
             conveyor.job_event_payload(h.job_id, c.job_type, h.from_status, h.to_status, c.attempt,
                                        c.priority, h.id, h.at, v_actor, h.error_subtype)
      FROM history h JOIN changed c ON c.id = h.job_id
      ORDER BY h.id),
    -- Every changed row is written (a WITH that writes runs to the end,
    -- read or not), so the channels are the changed rows': those of the
    -- notified statuses, done only while a configured job waits on one of
    -- the jobs done, and conveyor_outbox with them. A queued job wakes the
    -- worker it is assigned to, or, assigned to none, every worker
    -- (conveyor.queued_channel).
    channels AS (
      -- Each channel's name once per status (and worker), not per row.
      SELECT CASE WHEN d.status = 'queued' THEN conveyor.queued_channel(d.worker_id)
                  ELSE 'conveyor_job_status_' || d.status END AS channel,
             d.status AS payload
      FROM (SELECT DISTINCT c.status, CASE WHEN c.status = 'queued' THEN c.worker_id END AS worker_id
            FROM changed c
            WHERE c.notified
              AND (c.status <> 'done'
                   OR (SELECT conveyor.configured_jobs_wait_on(
                                ARRAY(SELECT e.id FROM changed e WHERE e.status = 'done'))))) d)
    SELECT count(pg_notify(ch.channel, ch.payload))
    FROM (SELECT channel, payload FROM channels
          UNION SELECT 'conveyor_outbox', '' WHERE EXISTS (SELECT 1 FROM channels)) ch
    INTO v_sent;
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
             n.error_subtype, n.error_message, n.worker_id, s.is_error, s.notified
      FROM new_rows n JOIN old_rows o ON o.id = n.id JOIN conveyor.job_status s ON s.name = n.status
      WHERE n.status IS DISTINCT FROM o.status),
    history AS (
      INSERT INTO conveyor.job_status_change (job_id, from_status, to_status, actor, error_subtype, message)
      SELECT c.id, c.from_status, c.status, v_actor,
             CASE WHEN c.is_error THEN c.error_subtype END,
             CASE WHEN c.is_error THEN c.error_message END
      FROM changed c
      ORDER BY c.id
      RETURNING id, job_id, from_status, to_status, at, error_subtype),
    events AS (
      INSERT INTO conveyor.outbox (topic, key, type, subject, payload)
      SELECT 'jobs', h.job_id::text, 'io.conveyor.job.' || h.to_status, h.job_id::text,
             conveyor.job_event_payload(h.job_id, c.job_type, h.from_status, h.to_status, c.attempt,
                                        c.priority, h.id, h.at, v_actor, h.error_subtype)
      FROM history h JOIN changed c ON c.id = h.job_id
      ORDER BY h.id),
    -- Every changed row is written (a WITH that writes runs to the end,
    -- read or not), so the channels are the changed rows': those of the
    -- notified statuses, done only while a configured job waits on one of
    -- the jobs done, and conveyor_outbox with them. A queued job wakes the
    -- worker it is assigned to, or, assigned to none, every worker
    -- (conveyor.queued_channel).
    channels AS (
      -- Each channel's name once per status (and worker), not per row.
      SELECT CASE WHEN d.status = 'queued' THEN conveyor.queued_channel(d.worker_id)
                  ELSE 'conveyor_job_status_' || d.status END AS channel,
             d.status AS payload
      FROM (SELECT DISTINCT c.status, CASE WHEN c.status = 'queued' THEN c.worker_id END AS worker_id
            FROM changed c
            WHERE c.notified
              AND (c.status <> 'done'
                   OR (SELECT conveyor.configured_jobs_wait_on(
                                ARRAY(SELECT e.id FROM changed e WHERE e.status = 'done'))))) d)
    SELECT count(pg_notify(ch.channel, ch.payload))
    FROM (SELECT channel, payload FROM channels
          UNION SELECT 'conveyor_outbox', '' WHERE EXISTS (SELECT 1 FROM channels)) ch
    INTO v_sent;
  END IF;
  RETURN NULL;
END
$$;
