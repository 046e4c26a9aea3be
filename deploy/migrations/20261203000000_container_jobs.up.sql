-- Issue 11: jobs that run as containers, and what each attempt cost.

-- A job type's container limits ({"cpus": 1.5, "memory_mb": 512}; empty: none)
-- and whether its containers get a network (default: none). Constant
-- defaults: catalog-only changes, no long lock.
ALTER TABLE conveyor.job_type
  ADD COLUMN resources jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(resources) = 'object'),
  ADD COLUMN network boolean NOT NULL DEFAULT false;

-- One row per run of an attempt: inserted by the worker's claim, completed
-- with the outcome. `image` is the reference the attempt ran (tag resolved
-- from system_parameters.image_tags at configuration), `image_digest` the
-- image the runtime actually started; both NULL for a process job. The
-- usage columns come from wait4's rusage (processes) or the container's
-- cgroup (containers); NULL when they could not be read.
-- A job retried by an operator starts again at attempt 0: its earlier runs
-- keep their rows (an attempt number may appear more than once; the row
-- without ended_at is the one running).
CREATE TABLE conveyor.job_attempt (
  id            bigserial PRIMARY KEY,
  job_id        bigint NOT NULL REFERENCES conveyor.job (id) ON DELETE CASCADE,
  attempt       int NOT NULL CHECK (attempt >= 0),
  job_type      text NOT NULL,
  worker_id     bigint,
  worker        text,
  image         text,
  image_digest  text,
  started_at    timestamptz NOT NULL DEFAULT now(),
  ended_at      timestamptz,
  -- the status the attempt left the job in (processed, ready: to run again,
  -- failed, canceled, internal_error), or lost: no worker ran it any more
  -- and the reconciler (or its restarted worker) requeued it.
  outcome       text,
  exit_code     int,
  wall_ms       bigint,
  cpu_user_ms   bigint,
  cpu_system_ms bigint,
  max_rss_kb    bigint
);
CREATE INDEX job_attempt_job_idx ON conveyor.job_attempt (job_id, attempt);
-- `conveyor job stats --type T --since D`.
CREATE INDEX job_attempt_type_ended_idx ON conveyor.job_attempt (job_type, ended_at);

-- This installation's identity: workers label the containers they start
-- with it, so that a worker removes only its own installation's leftovers
-- on a host that several installations (or test databases) share.
CREATE TABLE conveyor.installation (
  singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  id         text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO conveyor.installation (id)
VALUES (substr(md5(random()::text || clock_timestamp()::text || current_database()), 1, 16));
