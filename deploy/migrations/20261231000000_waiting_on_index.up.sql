-- Issue 14: the look-up of the configured jobs that wait on the jobs a
-- statement ends has one plan, whatever the statistics say.
--
-- conveyor.configured_jobs_wait_on (20261229000000) and
-- conveyor.configured_jobs_waiting_on (20261230000100) ask "which configured
-- jobs with dependencies overlap these ids" through
-- job_configured_depends_on_idx, a GIN index whose predicate is status =
-- 'configured' AND depends_on <> '{}'. But a query that says status =
-- 'configured' can also be served by job_active_idx (status, updated_at),
-- and the planner took that index whenever the statistics said few jobs
-- were configured and few had dependencies: statistics taken before a
-- DAG's burst (30,000 jobs without dependencies analyzed, then 3,000 with
-- one configured). A done then read every configured job's row, live or
-- dead (in psql, 3,000 dead entries: 6.5 ms and 273 buffers a look-up,
-- against 0.01 ms and 2 buffers through the GIN index); with 20,000
-- waiting, every end of a job cost that much.
--
-- The index's predicate is now one expression, (...) IS TRUE, which the
-- look-ups state word for word: the planner matches a partial index by
-- proving its predicate from the query's conditions, and it cannot see
-- through IS TRUE, so no other index's predicate (job_active_idx's status
-- list, job_depends_on_idx's depends_on <> '{}') follows from the query
-- and no index can use its status test. The GIN index is the only path
-- besides a sequential scan, which the functions turn off.
CREATE INDEX job_waiting_on_idx ON conveyor.job USING gin (depends_on) WITH (fastupdate = off)
  WHERE (status = 'configured' AND depends_on <> '{}') IS TRUE;
DROP INDEX conveyor.job_configured_depends_on_idx;

-- Whether a configured job waits on any of `ids` (the done check of
-- conveyor.record_status_changes).
CREATE OR REPLACE FUNCTION conveyor.configured_jobs_wait_on(ids bigint[]) RETURNS boolean
LANGUAGE plpgsql STABLE
SET enable_seqscan = off
SET enable_indexscan = off
SET enable_bitmapscan = on
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
  RETURN EXISTS (SELECT 1 FROM conveyor.job w
                 WHERE (w.status = 'configured' AND w.depends_on <> '{}') IS TRUE
                   AND w.depends_on && configured_jobs_wait_on.ids);
END
$$;

-- The configured jobs that wait on any of `ids` (the ready step's
-- candidates).
CREATE OR REPLACE FUNCTION conveyor.configured_jobs_waiting_on(ids bigint[]) RETURNS SETOF bigint
LANGUAGE plpgsql STABLE ROWS 10
SET enable_seqscan = off
SET enable_indexscan = off
SET enable_bitmapscan = on
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
  RETURN QUERY SELECT w.id FROM conveyor.job w
               WHERE (w.status = 'configured' AND w.depends_on <> '{}') IS TRUE
                 AND w.depends_on && configured_jobs_waiting_on.ids;
END
$$;
