-- A job type's runner (issue 14, item 5): 'process' starts its command for
-- each job; 'resident' has each worker start it once and feed it jobs as JSON
-- lines. The services read job_type through table-wide SELECT grants.
ALTER TABLE conveyor.job_type ADD COLUMN runner text NOT NULL DEFAULT 'process'
  CONSTRAINT job_type_runner_check CHECK (runner IN ('process', 'resident'));
