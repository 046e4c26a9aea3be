ALTER TABLE conveyor.job_type DROP COLUMN runner;
