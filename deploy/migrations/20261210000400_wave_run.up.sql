-- Issue 13, item 8: runbook 001's restart in waves, advanced by the monitor.
-- `conveyor system waves --auto` records a run here: the waves of job types
-- as computed when it started (model::job_type_waves), the wave admitted now
-- (job_types_list = waves 1..current) and the backlog threshold. The
-- monitor's part "waves" (model::advance_waves) moves to the next wave once
-- the current wave's jobs in initialized..started are at or below the
-- threshold, and at the end sets job_types_list back to NULL (every type)
-- and the run to done. `--stop` sets it to stopped. The rows stay as the
-- record of who ran which restart.

CREATE TABLE conveyor.wave_run (
  id          bigserial PRIMARY KEY,
  -- [["a"], ["b", "d"], ["c"]]: wave k is waves[k-1].
  waves       jsonb NOT NULL CHECK (jsonb_typeof(waves) = 'array' AND jsonb_array_length(waves) > 0),
  current     int NOT NULL DEFAULT 1,
  -- A wave is done when at most this many of its jobs are not yet processed.
  threshold   bigint NOT NULL DEFAULT 0 CHECK (threshold >= 0),
  state       text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done', 'stopped')),
  started_by  text NOT NULL DEFAULT conveyor.current_actor(),
  started_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT wave_run_current_check CHECK (current >= 1 AND current <= jsonb_array_length(waves))
);

-- One run at a time: a second `waves --auto` is refused while one runs.
CREATE UNIQUE INDEX wave_run_one_running_idx ON conveyor.wave_run ((true)) WHERE state = 'running';

COMMENT ON TABLE conveyor.wave_run IS
  'runbook 001 restarts in waves, advanced by conveyor-monitor (conveyor system waves --auto)';

-- The monitor advances a run: it reads and updates the row and sets
-- job_types_list, that column only: no other parameter (the row's trigger
-- writes the history and the outbox, which the monitor may already insert into).
GRANT SELECT, UPDATE (current, state, updated_at) ON conveyor.wave_run TO conveyor_monitor;
GRANT UPDATE (job_types_list) ON conveyor.system_parameters TO conveyor_monitor;
GRANT INSERT ON conveyor.system_parameters_history TO conveyor_monitor;
GRANT USAGE ON SEQUENCE conveyor.system_parameters_history_id_seq TO conveyor_monitor;
GRANT SELECT ON conveyor.wave_run TO conveyor_reader;
