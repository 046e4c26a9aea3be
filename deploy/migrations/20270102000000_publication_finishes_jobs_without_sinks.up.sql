-- Issue 14: a processed job with nothing to deliver is done in
-- publication's claim, without being claimed first.
--
-- Publication claimed every processed job (a write of its row), read it
-- back with its params, result and config, built its event, found no sink
-- in its config, and moved it to done in a second statement. For a job
-- whose config names no sink (its outputs are its files: an intermediate
-- step of a chain, a resident program's job) the claim protected a
-- delivery that never happens.
--
-- conveyor.job_delivers_nothing is the one rule of "no sink": no config,
-- or a config object whose "sinks" is absent, null or []. Any other
-- "sinks" (a list of sinks, or a value that is not a list) is publication's
-- to read, deliver or refuse, as before. conveyor.claim_publishable moves
-- the jobs of the claim that deliver nothing to done in the same statement
-- and claims the others; it returns both, the done ones with status done
-- and no claim, so the caller counts them and delivers the rest.

CREATE FUNCTION conveyor.job_delivers_nothing(config jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT config IS NULL
      OR (jsonb_typeof(config) = 'object' AND coalesce(config->'sinks', 'null') IN ('null', '[]'))
$$;

COMMENT ON FUNCTION conveyor.job_delivers_nothing(jsonb) IS
  'a job config that names no sink: publication has nothing to deliver (issue 14)';

CREATE OR REPLACE FUNCTION conveyor.claim_publishable(room bigint, claim_ms bigint, claimed_by text)
RETURNS SETOF conveyor.job
LANGUAGE plpgsql
SET enable_bitmapscan = off
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
  RETURN QUERY
  UPDATE conveyor.job j
  SET status = CASE WHEN conveyor.job_delivers_nothing(j.config) THEN 'done' ELSE j.status END,
      publication_claimed_until =
        CASE WHEN conveyor.job_delivers_nothing(j.config) THEN NULL
             ELSE clock_timestamp() + claim_publishable.claim_ms * interval '1 millisecond' END,
      publication_claimed_by =
        CASE WHEN conveyor.job_delivers_nothing(j.config) THEN NULL ELSE claim_publishable.claimed_by END,
      -- As publication's own move to done clears them (kRecordOutcomes).
      error_subtype = CASE WHEN conveyor.job_delivers_nothing(j.config) THEN NULL ELSE j.error_subtype END,
      error_message = CASE WHEN conveyor.job_delivers_nothing(j.config) THEN NULL ELSE j.error_message END
  WHERE j.id = ANY(ARRAY(SELECT conveyor.publishable_jobs(claim_publishable.room)))
  RETURNING j.*;
END
$$;

COMMENT ON FUNCTION conveyor.claim_publishable(bigint, bigint, text) IS
  'claims the processed jobs publication delivers next, oldest first, and moves those that deliver nothing to done (issue 14)';
