-- Undoes 20270102000000_publication_finishes_jobs_without_sinks.up.sql:
-- conveyor.claim_publishable of 20261226000000_plain_status_scans.up.sql
-- (every job claimed, none moved).
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
  SET publication_claimed_until = clock_timestamp() + claim_publishable.claim_ms * interval '1 millisecond',
      publication_claimed_by = claim_publishable.claimed_by
  WHERE j.id = ANY(ARRAY(SELECT conveyor.publishable_jobs(claim_publishable.room)))
  RETURNING j.*;
END
$$;

COMMENT ON FUNCTION conveyor.claim_publishable(bigint, bigint, text) IS
  'claims the processed jobs publication delivers next, oldest first (issue 14)';

DROP FUNCTION conveyor.job_delivers_nothing(jsonb);
