DROP INDEX conveyor.job_depends_on_idx;
DROP INDEX conveyor.job_finished_updated_idx;
