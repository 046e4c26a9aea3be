-- Undoes 20261231000100_initialized_jobs_by_status.up.sql (configuration
-- before it reads the job table itself).
DROP FUNCTION conveyor.initialized_jobs(bigint, boolean);
