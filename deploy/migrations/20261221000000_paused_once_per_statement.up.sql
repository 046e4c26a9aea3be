-- Issue 14: admission asked "is this job's type or pool paused?" once per
-- ready job it looked at, a PL/pgSQL call and a query of queue_state each
-- (about 7 us a row): 85% of the candidates query's time, 0.9 ms per job at
-- saturation (conveyor-bench --profile-sql, 1000 jobs at once). A scalar SQL
-- function holding a subquery is never inlined, so the paused set cannot be
-- read once per statement from inside job_admission_eligible.
--
-- Now the caller may hand the paused set in: job_admission_eligible takes a
-- fourth argument, `paused`, the text[] conveyor.paused_queues() returns.
-- Passed as `(SELECT conveyor.paused_queues())` it is an InitPlan, read once
-- per statement, and the whole rule is inlined into the caller's query (the
-- argument is used once in the body, so the planner may substitute it).
-- Left out (NULL, the default), the function reads the set itself on every
-- row, as before: a caller written for the three-argument function (psql, a
-- service of the previous release) gets the same answers.
--
-- The rule is still one: what a paused queue is, conveyor.queue_keys (a
-- job's two queues) against conveyor.paused_queues() (the paused ones);
-- queue_paused(job_type, pool) is that same overlap.

-- The queues a job is in, as paused_queues() names them: kind:name.
CREATE FUNCTION conveyor.queue_keys(job_type text, pool text)
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT ARRAY['job_type:' || job_type, 'pool:' || pool]
$$;

COMMENT ON FUNCTION conveyor.queue_keys(text, text) IS
  'the queues of a job of this type in this pool, as kind:name (issue 14)';

CREATE FUNCTION conveyor.paused_queues()
RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT coalesce(array_agg(qs.kind || ':' || qs.name ORDER BY qs.kind, qs.name), '{}')
  FROM conveyor.queue_state qs WHERE qs.paused
$$;

COMMENT ON FUNCTION conveyor.paused_queues() IS
  'the paused queues, as kind:name (conveyor.queue_state; no row: not paused) (issue 14)';

CREATE OR REPLACE FUNCTION conveyor.queue_paused(job_type text, pool text)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT conveyor.queue_keys(job_type, pool) && conveyor.paused_queues()
$$;

DROP FUNCTION conveyor.job_admission_eligible(conveyor.job, timestamptz, text[]);

CREATE FUNCTION conveyor.job_admission_eligible(j conveyor.job, as_of timestamptz, job_types text[],
                                                paused text[] DEFAULT NULL)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT j.status = 'ready'
     AND conveyor.job_admissible(j, as_of)
     AND (job_types IS NULL OR j.job_type = ANY(job_types))
     AND NOT (conveyor.queue_keys(j.job_type, conveyor.job_pool(j.config))
              && coalesce(paused, conveyor.paused_queues()))
$$;

COMMENT ON FUNCTION conveyor.job_admission_eligible(conveyor.job, timestamptz, text[], text[]) IS
  'whether admission may take this job at as_of: ready, job_admissible, of a type in job_types '
  '(NULL: all), in no paused queue (paused: conveyor.paused_queues(), pass it as a subquery to read '
  'it once per statement; NULL: read per row); per-type limits and capacity are admission''s own (issue 14)';
