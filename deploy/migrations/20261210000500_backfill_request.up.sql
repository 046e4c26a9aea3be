-- Issue 13, item 11: backfill as a server-side operation. `conveyor schedule
-- backfill TYPE --from --to --apply` inserts a request; conveyor-creation works
-- through it in batches of CONVEYOR_BACKFILL_BATCH_SIZE slots, one batch per
-- pass (the poll interval throttles it). Each batch locks its request (FOR
-- UPDATE SKIP LOCKED: replicas share the requests), creates the runs with the
-- schedule's idempotency keys (schedule:<slot>) and moves next_after in the
-- same transaction, so a crash between batches resumes after the last
-- committed slot and never doubles one. A request may be canceled at any time:
-- the batch in flight commits, no other starts.
--
-- Policy `collapse` (here and as a job type's catchup_policy): one run for the
-- whole range, its params scheduled_from / scheduled_to / slot_count (when the
-- type's schema declares them), key backfill:<first slot>..<last slot>.

CREATE TABLE conveyor.backfill_request (
  id            bigserial PRIMARY KEY,
  job_type      text NOT NULL REFERENCES conveyor.job_type (name) ON DELETE CASCADE,
  from_slot     timestamptz NOT NULL,   -- the slots in [from_slot, to_slot]
  to_slot       timestamptz NOT NULL,
  policy        text NOT NULL DEFAULT 'all' CHECK (policy IN ('all', 'collapse')),
  -- The cursor: the slots after it are still to do (from_slot - 1 s at first).
  next_after    timestamptz NOT NULL,
  slot_count    bigint NOT NULL CHECK (slot_count >= 0),  -- the slots in the range, as planned
  created_count bigint NOT NULL DEFAULT 0 CHECK (created_count >= 0),
  skipped_count bigint NOT NULL DEFAULT 0 CHECK (skipped_count >= 0),  -- slots that already had a run
  state         text NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'running', 'done', 'canceled', 'failed')),
  last_error    text,
  requested_by  text NOT NULL DEFAULT conveyor.current_actor(),
  canceled_by   text,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  finished_at   timestamptz,
  CHECK (to_slot >= from_slot)
);

-- conveyor-creation's next request: the oldest open one.
CREATE INDEX backfill_request_open_idx ON conveyor.backfill_request (id)
  WHERE state IN ('pending', 'running');

ALTER TABLE conveyor.job_type DROP CONSTRAINT job_type_catchup_policy_check;
ALTER TABLE conveyor.job_type ADD CONSTRAINT job_type_catchup_policy_check
  CHECK (catchup_policy IN ('all', 'latest', 'none', 'collapse'));

-- conveyor-creation works through the requests (the CLI inserts and cancels
-- them as the database owner).
GRANT SELECT ON conveyor.backfill_request TO conveyor_creation;
GRANT UPDATE (next_after, created_count, skipped_count, state, last_error, updated_at, finished_at)
  ON conveyor.backfill_request TO conveyor_creation;
GRANT SELECT ON conveyor.backfill_request TO conveyor_monitor, conveyor_reader;
