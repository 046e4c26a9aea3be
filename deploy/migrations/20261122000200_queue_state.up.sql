-- Pause and drain state per pool and per job type (DESIGN §4, §8: pauses
-- persist across restarts). Admission (conveyor-execution) skips ready jobs
-- whose job type or pool has paused = true; a missing row means not paused.
-- drained_count counts jobs moved out of the queue by `conveyor queue drain`.
CREATE TABLE conveyor.queue_state (
  kind          text NOT NULL CHECK (kind IN ('pool', 'job_type')),
  name          text NOT NULL,
  paused        boolean NOT NULL DEFAULT false,
  reason        text,
  paused_at     timestamptz,
  paused_by     text,
  drained_count bigint NOT NULL DEFAULT 0 CHECK (drained_count >= 0),
  PRIMARY KEY (kind, name)
);
