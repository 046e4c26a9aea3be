-- Issue 14: configuration's claim of new jobs walks the status index, never
-- the job table from its first row.
--
-- Configuration took its batch with "status = 'initialized' ... ORDER BY id
-- LIMIT n" and asked whether there was any with "... LIMIT 1", statements
-- of its own. When the statistics said many jobs were initialized (a burst,
-- once analyzed), the planner walked the primary key from the first id, or
-- the table from its first page, and passed every older job, finished or
-- waiting, before the first new one: with 59,000 older jobs and 5,000
-- initialized (psql), 12,400 buffers and 15.8 ms for the batch, 1,349 and
-- 4.6 ms for the probe. Through job_active_idx (status, updated_at): 283
-- buffers and 2.6 ms, most of it ordering the 5,000 of one transaction.
--
-- Both are now this function, with the settings of the other stages'
-- passes (20261226000000_plain_status_scans): no sequential and no bitmap
-- scan, a generic plan per connection. Oldest first is by updated_at,
-- job_active_idx's order (for an initialized job, its insert's time), so
-- the walk stops at `room`; ties (one transaction's jobs) come in index
-- order, as conveyor.publishable_jobs' do. Canceled jobs are left to the
-- reconciler (DESIGN §3).
CREATE FUNCTION conveyor.initialized_jobs(room bigint, lock_rows boolean)
RETURNS SETOF bigint
LANGUAGE plpgsql
SET enable_bitmapscan = off
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
  IF lock_rows THEN
    RETURN QUERY
    SELECT j.id FROM conveyor.job j
    WHERE j.status = 'initialized' AND j.canceled_at IS NULL
    ORDER BY j.updated_at
    LIMIT initialized_jobs.room
    FOR UPDATE SKIP LOCKED;
  ELSE
    RETURN QUERY
    SELECT j.id FROM conveyor.job j
    WHERE j.status = 'initialized' AND j.canceled_at IS NULL
    ORDER BY j.updated_at
    LIMIT initialized_jobs.room;
  END IF;
END
$$;

COMMENT ON FUNCTION conveyor.initialized_jobs(bigint, boolean) IS
  'the jobs configuration takes, oldest first, read by a plain walk of the status index (issue 14)';
