ALTER TABLE conveyor.system_parameters DROP COLUMN sink_allowed_hosts;
ALTER TABLE conveyor.job DROP COLUMN submitted_by;
DROP TABLE conveyor.console_session;
DROP TABLE conveyor.api_token;
