DROP FUNCTION conveyor.drain_worker(bigint, boolean);
DROP FUNCTION conveyor.retry_backoff(float8, int, float8);
