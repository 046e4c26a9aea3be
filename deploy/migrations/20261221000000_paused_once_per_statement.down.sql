-- Undoes 20261221000000_paused_once_per_statement.up.sql: the three-argument
-- job_admission_eligible and the PL/pgSQL queue_paused of
-- 20261220000000_inlined_functions.

DROP FUNCTION conveyor.job_admission_eligible(conveyor.job, timestamptz, text[], text[]);

CREATE OR REPLACE FUNCTION conveyor.queue_paused(job_type text, pool text)
RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
  RETURN EXISTS (SELECT 1 FROM conveyor.queue_state qs
                 WHERE qs.paused
                   AND ((qs.kind = 'job_type' AND qs.name = queue_paused.job_type)
                     OR (qs.kind = 'pool' AND qs.name = queue_paused.pool)));
END
$$;

CREATE FUNCTION conveyor.job_admission_eligible(j conveyor.job, as_of timestamptz, job_types text[])
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT j.status = 'ready'
     AND conveyor.job_admissible(j, as_of)
     AND (job_types IS NULL OR j.job_type = ANY(job_types))
     AND NOT conveyor.queue_paused(j.job_type, conveyor.job_pool(j.config))
$$;

COMMENT ON FUNCTION conveyor.job_admission_eligible(conveyor.job, timestamptz, text[]) IS
  'whether admission may take this job at as_of: ready, job_admissible, of a type in job_types '
  '(NULL: all), of no paused type or pool; per-type limits and capacity are admission''s own (issue 14)';

DROP FUNCTION conveyor.paused_queues();
DROP FUNCTION conveyor.queue_keys(text, text);
