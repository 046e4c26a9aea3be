-- Issue 15, item 1: the monitor's console.
-- * Pause and resume of queues and schedules from /queues (model/queue.hpp,
--   the same statements as the CLI): the monitor's role may write the pause
--   columns of conveyor.queue_state and conveyor.schedule_state.
-- * The overview's graphs count status changes per minute over the last day
--   (conveyor.job_status_change by `at`). A BRIN index: the table is
--   append-only and `at` grows with it, so the index is a few pages and
--   costs the status triggers almost nothing.
GRANT INSERT (kind, name, paused, reason, paused_at, paused_by),
      UPDATE (paused, reason, paused_at, paused_by)
  ON conveyor.queue_state TO conveyor_monitor;
GRANT INSERT (job_type, last_slot, paused, paused_reason, paused_by),
      UPDATE (paused, paused_reason, paused_by, updated_at)
  ON conveyor.schedule_state TO conveyor_monitor;
CREATE INDEX job_status_change_at_brin ON conveyor.job_status_change USING brin (at);
