ALTER TABLE conveyor.service_instance DROP COLUMN broker;
ALTER TABLE conveyor.worker DROP COLUMN running_jobs_at, DROP COLUMN running_jobs;
