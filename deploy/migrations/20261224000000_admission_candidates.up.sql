-- Issue 14: admission's candidates (services/job-execution, kCandidates)
-- were planned on every pass, 0.45-0.95 ms of planning per pass that
-- pg_stat_statements does not show: PostgreSQL 15's generic plan of the
-- statement estimates LIMIT $3 as a fraction of the ready jobs and sorts
-- all of them (21-28 ms at 20,000 ready jobs). This function runs the same
-- statement under two settings of its own: a sort is weighed as the last
-- resort (enable_sort off), and the plan is the generic one
-- (plan_cache_mode), made once per connection and kept by PL/pgSQL. That
-- plan walks job_ready_idx in admission order and stops at `room`. The
-- settings are the function's (SET clauses): they end with the call, so no
-- other statement of the transaction, and none of the triggers it fires, is
-- planned under them. The filter is conveyor.job_admission_eligible, the
-- one rule; full_types are the types at their concurrency limit.
CREATE FUNCTION conveyor.admission_candidates(job_types text[], full_types text[], room bigint)
RETURNS TABLE (id bigint, job_type text, pool text, container boolean)
LANGUAGE plpgsql
SET enable_sort = off
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
  RETURN QUERY
  SELECT j.id, j.job_type, conveyor.job_pool(j.config), coalesce(j.config->>'image', '') <> ''
  FROM conveyor.job j
  WHERE j.status = 'ready'
    AND conveyor.job_admission_eligible(j, now(), admission_candidates.job_types, (SELECT conveyor.paused_queues()))
    AND j.job_type <> ALL(admission_candidates.full_types)
  ORDER BY j.priority DESC, j.created_at, j.id
  LIMIT admission_candidates.room
  FOR UPDATE OF j SKIP LOCKED;
END
$$;

COMMENT ON FUNCTION conveyor.admission_candidates(text[], text[], bigint) IS
  'the next ready jobs admission may queue, in admission order, locked (issue 14)';
