-- Issue 14, item 3: two more lifecycle rules once.
--
-- * conveyor.retry_backoff(base_s, failures, cap_s): how long a job waits
--   before its next try after `failures` failures in a row: base * 2^(n-1),
--   capped (the exponent at 30, so it cannot overflow). The worker's retry of
--   a failed process (base job_type.retry_backoff_s, cap an hour) and
--   publication's retry of a failed sink (its base and max settings) use it.
-- * conveyor.drain_worker(worker_id, by_itself): a worker stops claiming and
--   exits once idle. The pool's scale-down and `conveyor worker drain` drain
--   an active worker; a worker draining itself on shutdown also comes back
--   from lost (it is alive: its row was marked lost by a late heartbeat).
--   Returns the worker's running count, no row when nothing was drained.
--
-- Grants: EXECUTE is PUBLIC; both run as the caller, whose grants
-- (UPDATE (status) ON conveyor.worker for the worker and the pool) apply.

CREATE FUNCTION conveyor.retry_backoff(base_s float8, failures int, cap_s float8)
RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT make_interval(secs => least(cap_s, greatest(base_s, 0) * power(2.0, least(greatest(failures - 1, 0), 30))))
$$;

COMMENT ON FUNCTION conveyor.retry_backoff(float8, int, float8) IS
  'back-off after failures in a row: base * 2^(failures - 1), at most cap (issue 14)';

CREATE FUNCTION conveyor.drain_worker(worker_id bigint, by_itself boolean DEFAULT false)
RETURNS SETOF int
LANGUAGE sql VOLATILE AS $$
  UPDATE conveyor.worker SET status = 'draining'
  WHERE id = worker_id AND (status = 'active' OR (by_itself AND status = 'lost'))
  RETURNING running
$$;

COMMENT ON FUNCTION conveyor.drain_worker(bigint, boolean) IS
  'set a worker draining (from active; from lost too when it drains itself); returns its running count (issue 14)';
