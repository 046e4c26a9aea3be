-- Undoes 20270101000000_one_statement_status_trigger.up.sql: the status
-- trigger of 20261230000100_ready_candidates.up.sql (the check, then one
-- statement that writes and notifies, the candidates with it), and
-- conveyor.queued_channel of 20261222000000_assigned_queue.up.sql.
CREATE OR REPLACE FUNCTION conveyor.queued_channel(worker_id bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN worker_id IS NULL THEN 'conveyor_job_status_queued'
              ELSE 'conveyor_job_queued_for_' || worker_id END
$$;

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
                   WHERE t.from_status = o.status AND t.to_status = n.status)
           OR EXISTS (SELECT 1 FROM conveyor.job_status_passage p
                      WHERE p.from_status = o.status AND p.to_status = n.status) AS allowed
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
    -- A row moved along a passage (from, via, to) is two changes, from ->
    -- via and via -> to, in that order: a history row and an event each.
    WITH moved AS (
      SELECT n.id, o.status AS from_status, n.status, n.job_type, n.attempt, n.priority,
             n.error_subtype, n.error_message, n.worker_id, p.via_status
      FROM new_rows n JOIN old_rows o ON o.id = n.id
      LEFT JOIN conveyor.job_status_passage p ON p.from_status = o.status AND p.to_status = n.status
      WHERE n.status IS DISTINCT FROM o.status),
    changed AS (
      SELECT m.id, l.leg, l.from_status, l.status, m.job_type, m.attempt, m.priority,
             m.error_subtype, m.error_message, m.worker_id, s.is_error, s.notified
      FROM moved m
      CROSS JOIN LATERAL (VALUES (1, m.from_status, coalesce(m.via_status, m.status)),
                                 (2, m.via_status, m.status)) l (leg, from_status, status)
      JOIN conveyor.job_status s ON s.name = l.status
      WHERE l.leg = 1 OR m.via_status IS NOT NULL),
    history AS (
      INSERT INTO conveyor.job_status_change (job_id, from_status, to_status, actor, error_subtype, message)
      SELECT c.id, c.from_status, c.status, v_actor,
             CASE WHEN c.is_error THEN c.error_subtype END,
             CASE WHEN c.is_error THEN c.error_message END
      FROM changed c
      ORDER BY c.id, c.leg
      RETURNING id, job_id, from_status, to_status, at, error_subtype),
    events AS (
      INSERT INTO conveyor.outbox (topic, key, type, subject, payload)
      SELECT 'jobs', h.job_id::text, 'io.conveyor.job.' || h.to_status, h.job_id::text,
             conveyor.job_event_payload(h.job_id, c.job_type, h.from_status, h.to_status, c.attempt,
                                        c.priority, h.id, h.at, v_actor, h.error_subtype)
      FROM history h JOIN changed c ON c.id = h.job_id AND c.status = h.to_status
      ORDER BY h.id),
    -- Every changed row is written (a WITH that writes runs to the end,
    -- read or not), so the channels are the changed rows': those of the
    -- notified statuses, done only while a configured job waits on one of
    -- the jobs done, and conveyor_outbox with them. A queued job wakes the
    -- worker it is assigned to, or, assigned to none, every worker
    -- (conveyor.queued_channel).
    -- The configured jobs that wait on a job this statement ended become
    -- candidates of configuration's ready step, which looks at them, not at
    -- every waiting job (20261230000100). Looked up only when the
    -- statement ended a job.
    ended AS (
      SELECT ARRAY(SELECT c.id FROM changed c
                   WHERE c.status IN ('done', 'failed', 'canceled', 'internal_error')) AS ids),
    -- So does a job moved to configured other than by configuration (an
    -- operator's error_checked -> configured).
    candidates AS (
      INSERT INTO conveyor.ready_candidate (job_id)
      SELECT w.id FROM ended e CROSS JOIN LATERAL conveyor.configured_jobs_waiting_on(e.ids) w (id)
      WHERE e.ids <> '{}'
      UNION
      SELECT c.id FROM changed c WHERE c.status = 'configured' AND c.from_status <> 'initialized'
      -- A candidate already there is locked until this commits: the ready
      -- step, which takes its candidates FOR UPDATE SKIP LOCKED, cannot
      -- drop it as undecided on a read that does not see this end yet.
      ON CONFLICT (job_id) DO UPDATE SET added_at = excluded.added_at
      RETURNING job_id),
    channels AS (
      -- Each channel's name once per status (and worker), not per row.
      -- done only when it made a candidate: else no one waits on it.
      SELECT CASE WHEN d.status = 'queued' THEN conveyor.queued_channel(d.worker_id)
                  ELSE 'conveyor_job_status_' || d.status END AS channel,
             d.status AS payload
      FROM (SELECT DISTINCT c.status, CASE WHEN c.status = 'queued' THEN c.worker_id END AS worker_id
            FROM changed c
            WHERE c.notified
              AND (c.status <> 'done' OR EXISTS (SELECT 1 FROM candidates))) d)
    SELECT count(pg_notify(ch.channel, ch.payload))
    FROM (SELECT channel, payload FROM channels
          UNION SELECT 'conveyor_outbox', '' WHERE EXISTS (SELECT 1 FROM channels)) ch
    INTO v_sent;
  END IF;
  RETURN NULL;
END
$$;
