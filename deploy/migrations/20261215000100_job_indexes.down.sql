-- The three indexes as 20261122000000_initial_schema made them.
CREATE INDEX job_type_status_idx ON conveyor.job (job_type, status);
CREATE INDEX job_canceled_at_idx ON conveyor.job (canceled_at) WHERE canceled_at IS NOT NULL;
CREATE INDEX job_configured_depends_on_idx ON conveyor.job USING gin (depends_on)
  WHERE status = 'configured';
