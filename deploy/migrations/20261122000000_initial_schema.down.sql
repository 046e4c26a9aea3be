-- Undoes 20261122000000_initial_schema.up.sql, in reverse order. Leaves schema
-- `conveyor` and the migration-tracking tables (made by `conveyor db init`).
-- Dropping a table drops its triggers and indexes with it.

DROP TABLE conveyor.system_parameters_history;
DROP TABLE conveyor.system_parameters;
DROP FUNCTION conveyor.refuse_system_parameters_delete();
DROP FUNCTION conveyor.record_system_parameters_change();
DROP FUNCTION conveyor.system_parameters_stamp();

DROP TABLE conveyor.job_type;

DROP TABLE conveyor.job_status_change;
DROP TABLE conveyor.job;
DROP FUNCTION conveyor.record_cancel_request();
DROP FUNCTION conveyor.record_status_change();
DROP FUNCTION conveyor.check_status_change();
DROP TABLE conveyor.outbox;

DROP TABLE conveyor.service_instance;
DROP TABLE conveyor.worker;

DROP TABLE conveyor.job_status_transition;
DROP TABLE conveyor.job_status;

DROP FUNCTION conveyor.touch_updated_at();
DROP FUNCTION conveyor.current_actor();
