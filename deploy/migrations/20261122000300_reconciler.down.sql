-- Undoes 20261122000300_reconciler.up.sql. The canceled_at values written by
-- the backfill and by the trigger stay (they are true: the jobs were canceled).
DROP INDEX conveyor.job_cancel_pending_idx;
DROP INDEX conveyor.job_restart_requested_idx;
DROP TRIGGER job_stamp_canceled_at ON conveyor.job;
DROP FUNCTION conveyor.stamp_canceled_at();
ALTER TABLE conveyor.system_parameters DROP COLUMN service_heartbeat_timeout_s;
ALTER TABLE conveyor.job DROP COLUMN reemitted_at;
