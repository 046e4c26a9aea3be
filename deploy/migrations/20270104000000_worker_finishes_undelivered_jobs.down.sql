-- Undoes 20270104000000_worker_finishes_undelivered_jobs.up.sql: no
-- started -> processed -> done passage, no conveyor.status_after_success.
-- Stop the workers of that version first: their finishes call the function
-- and make the passage.
DELETE FROM conveyor.job_status_passage WHERE from_status = 'started' AND to_status = 'done';
DROP FUNCTION conveyor.status_after_success(timestamptz, jsonb);
REVOKE INSERT, SELECT (job_id) ON conveyor.trigger_pending FROM conveyor_worker;
REVOKE SELECT (name, triggers) ON conveyor.job_type FROM conveyor_worker;
