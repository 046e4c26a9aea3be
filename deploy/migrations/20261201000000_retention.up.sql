-- Retention (DESIGN §8 "tables stay small"; conveyor-monitor part f):
-- finished jobs older than system_parameters.job_retention_days are deleted
-- in batches, their history with them (ON DELETE CASCADE).
-- The partial index finds them without touching live rows; its predicate is
-- the one the monitor's DELETE uses, word for word.
CREATE INDEX job_finished_updated_idx ON conveyor.job (updated_at)
  WHERE status IN ('done', 'canceled', 'failed', 'internal_error');
-- A finished job that a live job still depends on is kept: the GIN index
-- answers `depends_on @> ARRAY[id]` without a scan.
CREATE INDEX job_depends_on_idx ON conveyor.job USING gin (depends_on);
