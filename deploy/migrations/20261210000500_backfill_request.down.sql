-- Jobs created by backfills stay; a job type whose catchup_policy is
-- `collapse` goes back to `latest` (the nearest: one run for what was missed).
UPDATE conveyor.job_type SET catchup_policy = 'latest' WHERE catchup_policy = 'collapse';
ALTER TABLE conveyor.job_type DROP CONSTRAINT job_type_catchup_policy_check;
ALTER TABLE conveyor.job_type ADD CONSTRAINT job_type_catchup_policy_check
  CHECK (catchup_policy IN ('all', 'latest', 'none'));
DROP TABLE conveyor.backfill_request;
