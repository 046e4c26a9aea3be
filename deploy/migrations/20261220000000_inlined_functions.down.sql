-- Undoes 20261220000000_inlined_functions.up.sql: both functions as
-- 20261215000000_lifecycle_rules wrote them.

ALTER FUNCTION conveyor.job_event_payload(bigint, text, text, text, int, int, bigint, timestamptz, text, text)
  IMMUTABLE;

CREATE OR REPLACE FUNCTION conveyor.queue_paused(job_type text, pool text)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT EXISTS (SELECT 1 FROM conveyor.queue_state qs
                 WHERE qs.paused
                   AND ((qs.kind = 'job_type' AND qs.name = job_type)
                     OR (qs.kind = 'pool' AND qs.name = pool)))
$$;
