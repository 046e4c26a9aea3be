-- A retried publication gets a fresh set of attempts.
--
-- Publication counted a job's failed deliveries (processed ->
-- external_error) over its whole history, for its attempt limit
-- (publication_max_attempts) and its back-off. After the limit ended a job
-- in internal_error, an operator's `conveyor job retry` (internal_error ->
-- error_checked -> processed) found the count at the limit already: the
-- next failure, even one second after the operator fixed the sink, was
-- final again, with no back-off.
--
-- conveyor.publication_failures is now the one rule: the failed deliveries
-- of the job's current publication run, the run that began at its last
-- move to processed by anyone but publication itself (`publisher`, the
-- actor of publication's own return to processed after each failure's
-- back-off). So the worker's finish, an operator's retry or status change
-- (`conveyor job retry`, `job set-status`) each begin a run, and
-- publication's own retries continue one.

CREATE FUNCTION conveyor.publication_failures(job_id bigint, publisher text) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT count(*)
  FROM conveyor.job_status_change f
  WHERE f.job_id = publication_failures.job_id
    AND f.from_status = 'processed' AND f.to_status = 'external_error'
    AND f.id > coalesce((SELECT max(s.id) FROM conveyor.job_status_change s
                         WHERE s.job_id = publication_failures.job_id AND s.to_status = 'processed'
                           AND s.actor <> publication_failures.publisher), 0)
$$;

COMMENT ON FUNCTION conveyor.publication_failures(bigint, text) IS
  'failed deliveries (processed -> external_error) of the job''s current publication run: since its last move '
  'to processed by anyone but publisher (publication''s own actor)';
