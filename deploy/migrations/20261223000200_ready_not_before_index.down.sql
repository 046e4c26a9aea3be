-- Undoes 20261223000200_ready_not_before_index.up.sql.
DROP INDEX conveyor.job_ready_not_before_idx;
