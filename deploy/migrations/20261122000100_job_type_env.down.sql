-- Undoes 20261122000100_job_type_env.up.sql.
ALTER TABLE conveyor.job_type DROP COLUMN env;
