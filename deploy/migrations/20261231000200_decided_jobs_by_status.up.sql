-- Issue 14: configuration's ready walk and its "is any job waiting?" read
-- the configured jobs through the status index, whatever the statistics
-- say; and the rule of a decided job is written once, here.
--
-- The walk ("configured, not canceled, every dependency ended ... ORDER BY
-- j.id LIMIT n") and the probe's "EXISTS (... status = 'configured' ...)"
-- were configuration's own statements. With 2,000 configured jobs after
-- 20,000 older ones (psql, statistics that say so), the walk's generic plan
-- walked the primary key past every older job (20,000 rows removed by its
-- filter, 10.6 ms) and the probe scanned the table from its first page
-- (20,000 rows, 2.7 ms); both grow with every finished job kept.
--
-- A decided job: configured, no cancel asked, and no dependency that has
-- not ended (done, failed, canceled, internal_error; a missing one counts as
-- decided, and the ready step fails the job). A view, so that each statement
-- that asks it (the walk, the ready step's candidates, the jobs a configure
-- batch readies at once) is planned with it inline. It runs with the
-- caller's rights and row policies (security_invoker).
CREATE VIEW conveyor.decided_job WITH (security_invoker = true) AS
  SELECT j.id, j.params, j.config, j.depends_on, j.attempt, j.updated_at
  FROM conveyor.job j
  WHERE j.status = 'configured' AND j.canceled_at IS NULL
    AND NOT EXISTS (SELECT 1 FROM conveyor.job u
                    WHERE u.id = ANY (j.depends_on)
                      AND u.status NOT IN ('done', 'failed', 'canceled', 'internal_error'));

COMMENT ON VIEW conveyor.decided_job IS
  'configured jobs whose dependencies have all ended: what configuration''s ready step readies (issue 14)';

-- UPDATE: configuration locks the rows it reads through the view (FOR
-- UPDATE), which asks for it.
GRANT SELECT, UPDATE ON conveyor.decided_job TO conveyor_configuration;
GRANT SELECT ON conveyor.decided_job TO conveyor_reader;

-- The walk: decided jobs, `room` at most, oldest first by updated_at (the
-- order of job_active_idx, so the walk stops at `room`), locked when asked
-- (SKIP LOCKED). The settings of the other stages' passes
-- (20261226000000_plain_status_scans).
CREATE FUNCTION conveyor.decided_jobs(room bigint, lock_rows boolean)
RETURNS SETOF bigint
LANGUAGE plpgsql
SET enable_bitmapscan = off
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
  IF lock_rows THEN
    RETURN QUERY
    SELECT d.id FROM conveyor.decided_job d
    ORDER BY d.updated_at
    LIMIT decided_jobs.room
    FOR UPDATE SKIP LOCKED;
  ELSE
    RETURN QUERY
    SELECT d.id FROM conveyor.decided_job d
    ORDER BY d.updated_at
    LIMIT decided_jobs.room;
  END IF;
END
$$;

COMMENT ON FUNCTION conveyor.decided_jobs(bigint, boolean) IS
  'the decided jobs configuration readies, oldest first, read by a plain walk of the status index (issue 14)';

-- Whether any configured job with no cancel asked waits: the first entry of
-- the status index, not the table's first page.
CREATE FUNCTION conveyor.jobs_waiting()
RETURNS boolean
LANGUAGE plpgsql STABLE
SET enable_bitmapscan = off
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
  RETURN EXISTS (SELECT 1 FROM conveyor.job j WHERE j.status = 'configured' AND j.canceled_at IS NULL);
END
$$;

COMMENT ON FUNCTION conveyor.jobs_waiting() IS
  'whether a configured job waits, read from the status index (issue 14)';
