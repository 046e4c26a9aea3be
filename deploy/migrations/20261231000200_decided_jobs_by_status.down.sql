-- Undoes 20261231000200_decided_jobs_by_status.up.sql (configuration before
-- it states the rule in its own statements).
DROP FUNCTION conveyor.jobs_waiting();
DROP FUNCTION conveyor.decided_jobs(bigint, boolean);
DROP VIEW conveyor.decided_job;
