DROP INDEX conveyor.job_status_change_at_brin;
REVOKE INSERT (kind, name, paused, reason, paused_at, paused_by),
       UPDATE (paused, reason, paused_at, paused_by)
  ON conveyor.queue_state FROM conveyor_monitor;
REVOKE INSERT (job_type, last_slot, paused, paused_reason, paused_by),
       UPDATE (paused, paused_reason, paused_by, updated_at)
  ON conveyor.schedule_state FROM conveyor_monitor;
