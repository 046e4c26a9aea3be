DROP TABLE conveyor.installation;
DROP TABLE conveyor.job_attempt;
ALTER TABLE conveyor.job_type DROP COLUMN network, DROP COLUMN resources;
