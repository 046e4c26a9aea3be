-- Undoes 20261223000000_left_assignments.up.sql: the jobs a worker leaves
-- wait for another worker's poll again.
DROP TRIGGER worker_wake_for_left_jobs ON conveyor.worker;
DROP FUNCTION conveyor.wake_for_left_jobs();
