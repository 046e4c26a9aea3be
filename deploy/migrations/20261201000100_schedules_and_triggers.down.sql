DROP TRIGGER job_record_trigger_pending ON conveyor.job;
DROP FUNCTION conveyor.record_trigger_pending();
DROP TABLE conveyor.trigger_pending;
DROP TABLE conveyor.schedule_state;
