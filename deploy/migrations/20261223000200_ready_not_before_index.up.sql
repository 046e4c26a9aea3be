-- Issue 14: admission asks, in each pass's state read (and in its probe),
-- when the next back-off ends: min(not_before) over the ready jobs whose
-- not_before is still ahead (services/job-execution,
-- CONVEYOR_NEXT_BACKOFF_MS). No index held not_before, so that walked every
-- ready job: 27-33 ms at 20,000 ready jobs, under the admission lock since
-- the state read took it over from the probe. This partial index answers it
-- with one index probe (0.2 ms there). It holds only ready jobs with a
-- not_before (retries in back-off, jobs submitted to start later), so the
-- other status changes do not write it.
CREATE INDEX job_ready_not_before_idx ON conveyor.job (not_before)
  WHERE status = 'ready' AND not_before IS NOT NULL;
