-- Extra environment variables for a job type's process (JobType::env in
-- libs/core model/job_type.hpp). Adding a column with a constant default is a
-- catalog-only change in PostgreSQL 11+, so this takes no long lock.
ALTER TABLE conveyor.job_type
  ADD COLUMN env jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(env) = 'object');
