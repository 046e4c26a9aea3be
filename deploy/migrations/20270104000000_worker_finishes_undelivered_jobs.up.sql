-- Issue 14: a job whose run succeeded and that has nothing to deliver is
-- done in the worker's finish, through processed.
--
-- Since 20270102000000 publication's claim moved such a job (its config
-- names no sink: conveyor.job_delivers_nothing) from processed to done
-- without claiming it. That still cost the job a second write of its row
-- (neither HOT: the status indexes), with its index entries, WAL and dead
-- row, publication's wake-up, walk and statement, and, in a chain, the hop
-- before its dependents may start.
--
-- Now the worker's finish writes such a job as started -> processed ->
-- done: a passage (20261230000000), recorded as its two changes, two
-- history rows and two events, so a reader of the history or the events
-- cannot tell it from publication's move. A job whose cancel was asked
-- stays processed, as before (publication skips it and the cancel scan
-- ends it canceled). conveyor.status_after_success is the one rule of
-- where a successful run goes; publication's claim keeps its move for the
-- processed jobs that get there otherwise (an operator's resume of
-- error_checked, a job of an older worker).
--
-- Both legs are notified, as two UPDATEs would be: processed is how
-- execution learns that a job left started and freed its place (a done is
-- notified only while a configured job waits on it). Publication wakes at
-- it too, and finds nothing to claim.

INSERT INTO conveyor.job_status_passage (from_status, via_status, to_status) VALUES
  ('started', 'processed', 'done');

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM conveyor.job_status_passage p
             WHERE NOT EXISTS (SELECT 1 FROM conveyor.job_status_transition t
                               WHERE t.from_status = p.from_status AND t.to_status = p.via_status)
                OR NOT EXISTS (SELECT 1 FROM conveyor.job_status_transition t
                               WHERE t.from_status = p.via_status AND t.to_status = p.to_status)) THEN
    RAISE EXCEPTION 'a passage of conveyor.job_status_passage is not two transitions';
  END IF;
END
$$;

CREATE FUNCTION conveyor.status_after_success(canceled_at timestamptz, config jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN canceled_at IS NULL AND conveyor.job_delivers_nothing(config) THEN 'done'
              ELSE 'processed' END
$$;

COMMENT ON FUNCTION conveyor.status_after_success(timestamptz, jsonb) IS
  'where a started job whose run succeeded goes: done through processed when it delivers nothing and '
  'no cancel was asked, else processed (issue 14)';


-- The worker now moves jobs to done, which fires record_trigger_pending
-- (reads job_type, inserts trigger_pending; its ON CONFLICT (job_id) needs
-- SELECT on the arbiter column), as publication's move does
-- (20261204000100_service_roles). Only the two columns it reads: the rest
-- of a job type (its command, its environment) stays out of the worker's
-- reach, as before.
GRANT SELECT (name, triggers) ON conveyor.job_type TO conveyor_worker;
GRANT INSERT, SELECT (job_id) ON conveyor.trigger_pending TO conveyor_worker;
