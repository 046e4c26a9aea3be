-- Issue 14: the passes that scan the job table by status walk their index
-- plainly, never through a bitmap.
--
-- Every status change leaves a dead entry in the status indexes (the
-- entry of the job's old status) until vacuum, which runs at most once a
-- minute. A plain index scan that finds an entry's row dead to every
-- transaction marks the entry (LP_DEAD), and the scans after it skip the
-- entry. A bitmap scan never marks one. The planner chose bitmap scans
-- for these passes, so each pass visited every row that had passed
-- through the status since the last vacuum. In a resident burst
-- (conveyor-bench, auto_explain), with 10 rows live:
-- * publication's claim read 4,795 entries and 1,102 heap pages of
--   'processed';
-- * admission's count of the jobs in flight read 5,152 entries and 653
--   pages of 'queued' and 'started';
-- * a worker's claim read 1,167 entries and 387 pages of 'queued'.
--
-- Each of these statements is now a PL/pgSQL function with settings of its
-- own, as conveyor.admission_candidates (20261224000000) has:
-- * no bitmap scan and no sequential scan (enable_bitmapscan,
--   enable_seqscan off), so the plan is a plain walk of the status index;
-- * a generic plan, made once per connection and kept by PL/pgSQL
--   (plan_cache_mode).
-- The settings are the function's (SET clauses). They end with the call,
-- so no other statement of the transaction is planned under them. A
-- trigger fired inside the call would be: conveyor.claim_publishable's
-- update fires the status trigger, and PL/pgSQL keeps the plans it makes
-- for the session. So conveyor.record_status_changes gets settings of its
-- own (at the end of this file): its plans are the same whoever fires it.
-- The statuses walked here hold what is admitted and not yet run or
-- published: bounded by the workers' slots, or by what the sinks have not
-- taken yet.

-- The jobs admitted and not finished, by type and worker: what the workers
-- have or will have (services/job-execution, kAdmissionState).
CREATE FUNCTION conveyor.jobs_in_flight()
RETURNS TABLE (job_type text, worker_id bigint, n bigint)
LANGUAGE plpgsql STABLE
SET enable_bitmapscan = off
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
  RETURN QUERY
  SELECT j.job_type, j.worker_id, count(*)
  FROM conveyor.job j
  WHERE j.status IN ('queued', 'started')
  GROUP BY j.job_type, j.worker_id;
END
$$;

COMMENT ON FUNCTION conveyor.jobs_in_flight() IS
  'queued and started jobs by type and worker, read by a plain walk of the status index (issue 14)';

-- Whether worker `worker_id` may claim queued job j, assigned to a worker
-- whose status is `assignee_status` (NULL: to none, or to one that is
-- gone): the one rule of conveyor.claimable_jobs' two branches. A SQL
-- function without a subquery, so the planner inlines it into each (with
-- the assignee's row read by a subquery here, it was called per row, and
-- its statement planned at every call: 0.25 ms a claim).
CREATE FUNCTION conveyor.job_claimable_by(j conveyor.job, assignee_status text, worker_id bigint, pool text,
                                          containers boolean)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT j.canceled_at IS NULL
     AND conveyor.job_pool(j.config) = pool
     AND (containers OR coalesce(j.config->>'image', '') = '')
     AND (j.worker_id IS NULL OR j.worker_id = job_claimable_by.worker_id
          OR j.updated_at < now() - interval '1 second'
          OR assignee_status IS DISTINCT FROM 'active')
$$;

-- The queued jobs worker `worker_id` may run, in claim order
-- (services/worker, the claim and its probe): of its pool, container jobs
-- only when it has a container runtime (`containers`), and of the jobs
-- assigned to a worker (execution's Assignment) its own, and another's
-- only once that worker is no longer active or has left the job queued for
-- 1 s (it hangs, or was full after all): an assignment only says whom to
-- wake. At most `room`; locked (FOR UPDATE SKIP LOCKED) when `lock_rows`:
-- the probe, run alone, locks nothing.
CREATE FUNCTION conveyor.claimable_jobs(worker_id bigint, pool text, containers boolean, room bigint,
                                        lock_rows boolean)
RETURNS SETOF bigint
LANGUAGE plpgsql
SET enable_bitmapscan = off
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
  IF lock_rows THEN
    RETURN QUERY
    SELECT j.id FROM conveyor.job j LEFT JOIN conveyor.worker a ON a.id = j.worker_id
    WHERE j.status = 'queued'
      AND conveyor.job_claimable_by(j, a.status, claimable_jobs.worker_id, claimable_jobs.pool,
                                    claimable_jobs.containers)
    ORDER BY j.priority DESC, j.id
    LIMIT claimable_jobs.room
    FOR UPDATE OF j SKIP LOCKED;
  ELSE
    RETURN QUERY
    SELECT j.id FROM conveyor.job j LEFT JOIN conveyor.worker a ON a.id = j.worker_id
    WHERE j.status = 'queued'
      AND conveyor.job_claimable_by(j, a.status, claimable_jobs.worker_id, claimable_jobs.pool,
                                    claimable_jobs.containers)
    ORDER BY j.priority DESC, j.id
    LIMIT claimable_jobs.room;
  END IF;
END
$$;

COMMENT ON FUNCTION conveyor.claimable_jobs(bigint, text, boolean, bigint, boolean) IS
  'the queued jobs a worker may claim, in claim order, read by a plain walk of the status index (issue 14)';

-- The processed jobs publication may claim ($1 at most), oldest first,
-- locked: not canceled, and not claimed by a replica whose claim still
-- runs (services/job-publication, kClaimProcessed). Oldest is by
-- updated_at, the order of job_active_idx (status, updated_at): the walk
-- stops at `room` however many jobs wait for a sink that is down. Ties
-- (the jobs one transaction moved share its now()) come in index order:
-- a second key would sort every job of a tie before the limit.
CREATE FUNCTION conveyor.publishable_jobs(room bigint)
RETURNS SETOF bigint
LANGUAGE plpgsql
SET enable_bitmapscan = off
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
  RETURN QUERY
  SELECT j.id FROM conveyor.job j
  WHERE j.status = 'processed' AND j.canceled_at IS NULL
    AND (j.publication_claimed_until IS NULL OR j.publication_claimed_until <= clock_timestamp())
  ORDER BY j.updated_at
  LIMIT publishable_jobs.room
  FOR UPDATE OF j SKIP LOCKED;
END
$$;

COMMENT ON FUNCTION conveyor.publishable_jobs(bigint) IS
  'the processed jobs publication may claim, oldest first, locked, read by a plain walk of the status index (issue 14)';

-- Publication's claim (services/job-publication, kClaimProcessed): the
-- jobs of conveyor.publishable_jobs, claimed for `claim_ms` by replica
-- `claimed_by` (other replicas skip them while they are delivered outside
-- any transaction), whole. The update is here, under the same settings,
-- because the planner, with statistics older than a burst, fetched the
-- claimed ids by a sequential scan of the job table (2,400 buffers a
-- claim).
CREATE FUNCTION conveyor.claim_publishable(room bigint, claim_ms bigint, claimed_by text)
RETURNS SETOF conveyor.job
LANGUAGE plpgsql
SET enable_bitmapscan = off
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
  RETURN QUERY
  UPDATE conveyor.job j
  SET publication_claimed_until = clock_timestamp() + claim_publishable.claim_ms * interval '1 millisecond',
      publication_claimed_by = claim_publishable.claimed_by
  WHERE j.id = ANY(ARRAY(SELECT conveyor.publishable_jobs(claim_publishable.room)))
  RETURNING j.*;
END
$$;

COMMENT ON FUNCTION conveyor.claim_publishable(bigint, bigint, text) IS
  'claims the processed jobs publication delivers next, oldest first (issue 14)';

-- The status trigger plans its statements under the server's settings,
-- whatever the function that fires it set (see the top of this file).
ALTER FUNCTION conveyor.record_status_changes()
  SET enable_seqscan = on
  SET enable_bitmapscan = on
  SET plan_cache_mode = auto;
