-- Undoes 20270104000000_worker_finishes_undelivered_jobs.up.sql: the status
-- trigger of 20270101000000_one_statement_status_trigger.up.sql, no
-- started -> processed -> done passage, no conveyor.status_after_success.
-- Stop the workers of that version first: their finishes call the function
-- and make the passage.
DELETE FROM conveyor.job_status_passage WHERE from_status = 'started' AND to_status = 'done';
DROP FUNCTION conveyor.status_after_success(timestamptz, jsonb);

CREATE OR REPLACE FUNCTION conveyor.record_status_changes() RETURNS trigger
LANGUAGE plpgsql
-- Its plans are its own whoever fires it (20261226000000_plain_status_scans).
SET enable_seqscan = on
SET enable_bitmapscan = on
SET plan_cache_mode = auto
AS $$
DECLARE
  v_actor    text := conveyor.current_actor();
  v_sent     bigint;
  v_bad_id   bigint;
  v_bad_from text;
  v_bad_to   text;
  v_ended    bigint[];
  v_again    bigint[];
  v_done     boolean;
BEGIN
  IF TG_OP = 'INSERT' THEN
    WITH inserted AS (
      SELECT n.id, n.status, n.job_type, n.attempt, n.priority, n.error_subtype, n.error_message,
             n.worker_id,
             EXISTS (SELECT 1 FROM conveyor.job_status_transition t
                     WHERE t.from_status IS NULL AND t.to_status = n.status) AS allowed
      FROM new_rows n),
    -- Each change's history id and time, taken in job order.
    changed AS (
      SELECT c.*, nextval('conveyor.job_status_change_id_seq') AS change_id, clock_timestamp() AS at
      FROM (SELECT i.id, NULL::text AS from_status, i.status, i.job_type, i.attempt, i.priority,
                   CASE WHEN s.is_error THEN i.error_subtype END AS error_subtype,
                   CASE WHEN s.is_error THEN i.error_message END AS error_message,
                   i.worker_id, s.notified
            FROM inserted i JOIN conveyor.job_status s ON s.name = i.status
            WHERE i.allowed
            ORDER BY i.id) c),
    history AS (
      INSERT INTO conveyor.job_status_change
        (id, job_id, from_status, to_status, at, actor, error_subtype, message)
      SELECT c.change_id, c.id, c.from_status, c.status, c.at, v_actor, c.error_subtype, c.error_message
      FROM changed c),
    events AS (
      INSERT INTO conveyor.outbox (topic, key, type, subject, payload)
      SELECT 'jobs', c.id::text, 'io.conveyor.job.' || c.status, c.id::text,
             conveyor.job_event_payload(c.id, c.job_type, c.from_status, c.status, c.attempt,
                                        c.priority, c.change_id, c.at, v_actor, c.error_subtype)
      FROM changed c
      ORDER BY c.change_id),
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
    SELECT (SELECT count(pg_notify(ch.channel, ch.payload))
            FROM (SELECT channel, payload FROM channels
                  UNION SELECT 'conveyor_outbox', '' WHERE EXISTS (SELECT 1 FROM channels)) ch),
           b.id, b.status
    INTO v_sent, v_bad_id, v_bad_to
    FROM (SELECT 1) one
    LEFT JOIN LATERAL (SELECT i.id, i.status FROM inserted i WHERE NOT i.allowed
                       ORDER BY i.id LIMIT 1) b ON true;
    IF v_bad_id IS NOT NULL THEN
      PERFORM conveyor.refuse_status_change(v_bad_id, NULL, v_bad_to);
    END IF;
    RETURN NULL;
  END IF;

  -- A row moved along a passage (from, via, to) is two changes, from ->
  -- via and via -> to, in that order: a history row and an event each. An
  -- UPDATE that changes no status (a re-emit, a cancel request, a params
  -- patch) moves nothing, and writes and notifies nothing.
  WITH moved AS (
    SELECT n.id, o.status AS from_status, n.status, n.job_type, n.attempt, n.priority,
           n.error_subtype, n.error_message, n.worker_id, p.via_status,
           p.via_status IS NOT NULL
             OR EXISTS (SELECT 1 FROM conveyor.job_status_transition t
                        WHERE t.from_status = o.status AND t.to_status = n.status) AS allowed
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    LEFT JOIN conveyor.job_status_passage p ON p.from_status = o.status AND p.to_status = n.status
    WHERE n.status IS DISTINCT FROM o.status),
  -- Each change's history id and time, taken in (job, leg) order.
  changed AS (
    SELECT c.*, nextval('conveyor.job_status_change_id_seq') AS change_id, clock_timestamp() AS at
    FROM (SELECT m.id, l.leg, l.from_status, l.status, m.job_type, m.attempt, m.priority,
                 CASE WHEN s.is_error THEN m.error_subtype END AS error_subtype,
                 CASE WHEN s.is_error THEN m.error_message END AS error_message,
                 m.worker_id, s.notified
          FROM moved m
          CROSS JOIN LATERAL (VALUES (1, m.from_status, coalesce(m.via_status, m.status)),
                                     (2, m.via_status, m.status)) l (leg, from_status, status)
          JOIN conveyor.job_status s ON s.name = l.status
          WHERE m.allowed AND (l.leg = 1 OR m.via_status IS NOT NULL)
          ORDER BY m.id, l.leg) c),
  history AS (
    INSERT INTO conveyor.job_status_change
      (id, job_id, from_status, to_status, at, actor, error_subtype, message)
    SELECT c.change_id, c.id, c.from_status, c.status, c.at, v_actor, c.error_subtype, c.error_message
    FROM changed c),
  events AS (
    INSERT INTO conveyor.outbox (topic, key, type, subject, payload)
    SELECT 'jobs', c.id::text, 'io.conveyor.job.' || c.status, c.id::text,
           conveyor.job_event_payload(c.id, c.job_type, c.from_status, c.status, c.attempt,
                                      c.priority, c.change_id, c.at, v_actor, c.error_subtype)
    FROM changed c
    ORDER BY c.change_id),
  -- The channels of the notified statuses but done, each once per status
  -- (and worker), and conveyor_outbox with them. A queued job wakes the
  -- worker it is assigned to, or, assigned to none, every worker
  -- (conveyor.queued_channel). done is notified below, only when it made
  -- a candidate: else no one waits on it.
  channels AS (
    SELECT CASE WHEN d.status = 'queued' THEN conveyor.queued_channel(d.worker_id)
                ELSE 'conveyor_job_status_' || d.status END AS channel,
           d.status AS payload
    FROM (SELECT DISTINCT c.status, CASE WHEN c.status = 'queued' THEN c.worker_id END AS worker_id
          FROM changed c
          WHERE c.notified AND c.status <> 'done') d)
  SELECT (SELECT count(pg_notify(ch.channel, ch.payload))
          FROM (SELECT channel, payload FROM channels
                UNION SELECT 'conveyor_outbox', '' WHERE EXISTS (SELECT 1 FROM channels)) ch),
         ARRAY(SELECT c.id FROM changed c WHERE c.status IN ('done', 'failed', 'canceled', 'internal_error')),
         ARRAY(SELECT c.id FROM changed c WHERE c.status = 'configured' AND c.from_status <> 'initialized'),
         EXISTS (SELECT 1 FROM changed c WHERE c.status = 'done' AND c.notified),
         b.id, b.from_status, b.status
  INTO v_sent, v_ended, v_again, v_done, v_bad_id, v_bad_from, v_bad_to
  FROM (SELECT 1) one
  LEFT JOIN LATERAL (SELECT m.id, m.from_status, m.status FROM moved m WHERE NOT m.allowed
                     ORDER BY m.id LIMIT 1) b ON true;
  IF v_bad_id IS NOT NULL THEN
    PERFORM conveyor.refuse_status_change(v_bad_id, v_bad_from, v_bad_to);
  END IF;

  -- The configured jobs that wait on a job this statement ended become
  -- candidates of configuration's ready step (20261230000100), and so does
  -- a job moved to configured other than by configuration (an operator's
  -- error_checked -> configured). A candidate already there is locked
  -- until this commits: the ready step, which takes its candidates FOR
  -- UPDATE SKIP LOCKED, cannot drop it as undecided on a read that does
  -- not see this end yet.
  IF v_ended <> '{}' OR v_again <> '{}' THEN
    WITH candidates AS (
      INSERT INTO conveyor.ready_candidate (job_id)
      SELECT w.id FROM conveyor.configured_jobs_waiting_on(v_ended) w (id) WHERE v_ended <> '{}'
      UNION
      SELECT unnest(v_again)
      ON CONFLICT (job_id) DO UPDATE SET added_at = excluded.added_at
      RETURNING job_id)
    SELECT count(pg_notify(ch.channel, ch.payload))
    FROM (VALUES ('conveyor_job_status_done', 'done'), ('conveyor_outbox', '')) ch (channel, payload)
    WHERE v_done AND EXISTS (SELECT 1 FROM candidates)
    INTO v_sent;
  END IF;
  RETURN NULL;
END
$$;
