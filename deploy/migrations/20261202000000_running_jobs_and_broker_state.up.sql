-- Issue 9: a job whose process ended is never left `started` while its
-- worker is alive. Each worker heartbeat reports the jobs the worker runs
-- (running_jobs, read inside the heartbeat's transaction, so
-- running_jobs_at = that transaction's now()); the reconciler moves a
-- `started` job of a live worker that has been missing from those reports
-- for longer than the heartbeat timeout (model::reap_lost_workers).
-- NULL running_jobs_at: a worker of an older version that reports nothing.
ALTER TABLE conveyor.worker
  ADD COLUMN running_jobs bigint[] NOT NULL DEFAULT '{}',
  ADD COLUMN running_jobs_at timestamptz;

-- Each service instance's view of the broker, written with its heartbeat,
-- so `conveyor system status` shows the broker as the services see it.
-- NULL: the instance uses no broker, or is of an older version.
ALTER TABLE conveyor.service_instance
  ADD COLUMN broker text CHECK (broker IN ('up', 'down'));
