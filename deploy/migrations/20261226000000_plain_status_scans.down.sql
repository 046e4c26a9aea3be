-- Undoes 20261226000000_plain_status_scans.up.sql.
ALTER FUNCTION conveyor.record_status_changes() RESET ALL;
DROP FUNCTION conveyor.claim_publishable(bigint, bigint, text);
DROP FUNCTION conveyor.publishable_jobs(bigint);
DROP FUNCTION conveyor.claimable_jobs(bigint, text, boolean, bigint, boolean);
DROP FUNCTION conveyor.job_claimable_by(conveyor.job, text, bigint, text, boolean);
DROP FUNCTION conveyor.jobs_in_flight();
