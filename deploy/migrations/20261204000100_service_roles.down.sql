-- The roles stay: they are cluster-wide and other databases use them. What
-- the up migration granted in this database goes (REVOKE ALL on a table takes
-- its column privileges too).
DROP POLICY job_worker_queued_or_started ON conveyor.job;
DROP POLICY job_any_row ON conveyor.job;
ALTER TABLE conveyor.job DISABLE ROW LEVEL SECURITY;

REVOKE ALL ON ALL TABLES IN SCHEMA conveyor FROM
  conveyor_creation, conveyor_configuration, conveyor_execution, conveyor_worker,
  conveyor_publication, conveyor_workerpool, conveyor_monitor, conveyor_reader;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA conveyor FROM
  conveyor_creation, conveyor_configuration, conveyor_execution, conveyor_worker,
  conveyor_publication, conveyor_workerpool, conveyor_monitor, conveyor_reader;
REVOKE ALL ON SCHEMA conveyor FROM
  conveyor_creation, conveyor_configuration, conveyor_execution, conveyor_worker,
  conveyor_publication, conveyor_workerpool, conveyor_monitor, conveyor_reader;
