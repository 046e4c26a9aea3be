-- Undoes 20261210000400_wave_run.up.sql. The monitor's grants on
-- system_parameters go with it (the monitor of that release does not write it).
REVOKE USAGE ON SEQUENCE conveyor.system_parameters_history_id_seq FROM conveyor_monitor;
REVOKE INSERT ON conveyor.system_parameters_history FROM conveyor_monitor;
REVOKE UPDATE (job_types_list) ON conveyor.system_parameters FROM conveyor_monitor;
DROP TABLE conveyor.wave_run;
