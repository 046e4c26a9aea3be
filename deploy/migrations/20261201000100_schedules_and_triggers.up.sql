-- Periodic schedules and triggers (DESIGN §1 conveyor-creation, §8 catch-up;
-- runbook 001's start-up after a long downtime; runbook 002's scheduler).
--
-- * conveyor.schedule_state: one row per scheduled job type, written by the
--   scheduler in conveyor-creation. last_slot is the schedule time of the last
--   run it created (or skipped by the catch-up policy); the next tick creates
--   the slots after it that are due, as the type's catchup_policy says.
--   paused holds the schedule (`conveyor schedule pause`): nothing is created
--   and last_slot stays, so a resume catches up by the policy too.
-- * conveyor.trigger_pending: a finished upstream job whose type has
--   triggers, written in the same transaction as its move to done, so a
--   downstream job is never lost to a crash or a dropped event; the
--   creation service creates the downstream jobs and deletes the row in one
--   transaction (idempotency key trigger:<upstream id>:<n>).
-- New tables and a trigger: no rewrite, no long lock.

CREATE TABLE conveyor.schedule_state (
  job_type      text PRIMARY KEY REFERENCES conveyor.job_type (name) ON DELETE CASCADE,
  last_slot     timestamptz NOT NULL,
  next_slot     timestamptz,
  last_job_id   bigint,
  created_count bigint NOT NULL DEFAULT 0 CHECK (created_count >= 0),
  skipped_count bigint NOT NULL DEFAULT 0 CHECK (skipped_count >= 0),
  last_error    text,
  -- schedule_catchup_start[job_type] as last applied: setting it to another
  -- date (runbook 001, after a downtime longer than the window) starts the
  -- schedule again from that date; runs already created are not doubled
  -- (idempotency key schedule:<slot>).
  catchup_start_applied timestamptz,
  paused        boolean NOT NULL DEFAULT false,
  paused_reason text,
  paused_by     text,
  updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE conveyor.trigger_pending (
  job_id     bigint PRIMARY KEY REFERENCES conveyor.job (id) ON DELETE CASCADE,
  job_type   text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  -- A downstream job that cannot be created (params refused by its schema,
  -- unknown type): kept as a dead letter with the reason, not retried.
  last_error text,
  failed_at  timestamptz
);
CREATE INDEX trigger_pending_todo_idx ON conveyor.trigger_pending (created_at) WHERE failed_at IS NULL;

CREATE FUNCTION conveyor.record_trigger_pending() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM conveyor.job_type t
             WHERE t.name = NEW.job_type AND jsonb_array_length(t.triggers) > 0) THEN
    INSERT INTO conveyor.trigger_pending (job_id, job_type) VALUES (NEW.id, NEW.job_type)
    ON CONFLICT (job_id) DO NOTHING;
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER job_record_trigger_pending
  AFTER UPDATE OF status ON conveyor.job
  FOR EACH ROW WHEN (NEW.status = 'done' AND OLD.status IS DISTINCT FROM 'done')
  EXECUTE FUNCTION conveyor.record_trigger_pending();
