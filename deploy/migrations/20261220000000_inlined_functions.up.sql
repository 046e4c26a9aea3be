-- Issue 14: two SQL functions of the hot path that PostgreSQL could not
-- inline, so every statement calling them parsed and planned their body
-- again (a SQL function's plan lives only as long as the calling query).
--
-- * conveyor.job_event_payload, called by the status trigger once per
--   statement that changes a status (7 times per job), was declared
--   IMMUTABLE while its body is not: jsonb_build_object is STABLE (a
--   timestamptz is written in the session's TimeZone). PostgreSQL inlines a
--   function only if its body is no more volatile than declared. STABLE is
--   what it is; now it is inlined into the trigger's INSERT, planned once
--   per session with it.
-- * conveyor.queue_paused, called by admission's probe and claim for every
--   ready job they look at, holds a subquery, which a scalar SQL function
--   can never be inlined with. PL/pgSQL keeps its plan for the session.
--
-- The same results either way; the body of each is unchanged.

ALTER FUNCTION conveyor.job_event_payload(bigint, text, text, text, int, int, bigint, timestamptz, text, text)
  STABLE;

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
