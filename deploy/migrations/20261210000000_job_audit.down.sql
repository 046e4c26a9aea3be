DROP TRIGGER job_record_audit ON conveyor.job;
DROP FUNCTION conveyor.record_job_audit();
DROP TABLE conveyor.job_audit;
