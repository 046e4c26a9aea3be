-- Issue 14: the outbox is written once per event and never updated.
--
-- The relay marked every row it sent (UPDATE ... SET sent_at): a second,
-- non-HOT version of each row, with its index entries, 3 WAL records and
-- about 600 bytes per event, six events per job, and as many dead rows for
-- vacuum. Now the relay keeps where it is in one row of its own,
-- conveyor.outbox_relay, as PostgreSQL snapshots (pg_snapshot):
--
--   sent          every row whose transaction (outbox.txid) is visible in
--                 this snapshot was sent;
--   window_end    the window being sent, if any: the rows visible here and
--                 not in `sent`, in id order...
--   window_after  ...of which those with id <= window_after were sent.
--
-- A round reads the next rows of the window (a new window is the round's
-- own snapshot), sends them, and saves its place in the next round's
-- statement: one single-row HOT update per round instead of one row
-- version per event. A window closes when it has been read to its end and
-- acked: `sent` becomes its snapshot. Sequence ids commit out of order,
-- so a snapshot, not an id, says what was sent: a row whose transaction
-- commits late belongs to the first window whose snapshot sees it. Within
-- a window rows go in id order, so one job's events (each change made after
-- the previous one committed) keep their order, as before.
--
-- conveyor.outbox_unsent() is the one rule of "unsent" (the monitor's
-- outbox_stuck alert, `conveyor system status`, tests); the relay reads its
-- pages through the same function. Rows from before this migration have no
-- txid and were sent, except those unsent now: they get this migration's
-- transaction id, which the first `sent` snapshot does not see.
-- outbox.sent_at stays (this relay neither reads nor writes it); relays of
-- earlier versions are fenced off below.

-- The UPDATE below must see every row committed before the ALTER's lock:
-- under READ COMMITTED its snapshot is taken after it. (Under REPEATABLE
-- READ it would be the group's first statement's, and a row committed in
-- between would keep no txid: sent, never sent.)
DO $$
BEGIN
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION 'migration 20261225000000_outbox_snapshot_relay must run at READ COMMITTED, not %',
      current_setting('transaction_isolation');
  END IF;
END
$$;

-- The ALTER locks the outbox (so every status change) until the group
-- commits, while the index is built: about a second per million rows.
ALTER TABLE conveyor.outbox ADD COLUMN txid xid8;
ALTER TABLE conveyor.outbox ALTER COLUMN txid SET DEFAULT pg_current_xact_id();
UPDATE conveyor.outbox SET txid = pg_current_xact_id() WHERE sent_at IS NULL;
-- Only the rows sent before this migration have none.
ALTER TABLE conveyor.outbox ADD CONSTRAINT outbox_txid_given CHECK (txid IS NOT NULL) NOT VALID;
DROP INDEX conveyor.outbox_unsent_idx;
CREATE INDEX outbox_txid_idx ON conveyor.outbox (txid);
-- A relay of an earlier version marks rows sent_at: it may no longer, so
-- its statement fails and it gives up the lead instead of sending again
-- everything since this migration, or leading the new relays to send
-- again what it sent. (A relay connected as the schema's owner is not
-- fenced this way: stop the earlier versions before the new ones start.)
REVOKE UPDATE (sent_at) ON conveyor.outbox FROM
  conveyor_creation, conveyor_configuration, conveyor_execution, conveyor_worker,
  conveyor_publication, conveyor_workerpool, conveyor_monitor;

CREATE TABLE conveyor.outbox_relay (
  id           boolean PRIMARY KEY DEFAULT true CHECK (id),
  sent         pg_snapshot NOT NULL,
  window_end   pg_snapshot,
  window_after bigint NOT NULL DEFAULT 0,
  CHECK (window_end IS NOT NULL OR window_after = 0)
);

-- This statement's snapshot, made blind to this transaction itself: a
-- snapshot leaves its own transaction out of the ids in progress, so that
-- id is added to them unless it is at or past the snapshot's xmax (then
-- unseen anyway). For a `sent` that must not see rows this transaction
-- gives its own id.
CREATE FUNCTION conveyor.snapshot_without_me()
RETURNS pg_snapshot
LANGUAGE sql VOLATILE
AS $$
  SELECT CASE WHEN me >= pg_snapshot_xmax(s) THEN s
              ELSE (least(pg_snapshot_xmin(s), me) || ':' || pg_snapshot_xmax(s) || ':' ||
                    (SELECT string_agg(x::text, ',' ORDER BY x)
                     FROM (SELECT pg_snapshot_xip(s) AS x UNION SELECT me) ids))::pg_snapshot END
  FROM (SELECT pg_current_snapshot() AS s, pg_current_xact_id() AS me) cur
$$;

-- The first `sent`: the rows unsent above carry this transaction's id.
INSERT INTO conveyor.outbox_relay (sent) VALUES (conveyor.snapshot_without_me());

-- The unsent rows, in id order, `page_size` at most (NULL: all): those whose
-- transaction `sent` does not see (its xmax or after, or in progress in it),
-- less the head of the window already sent. With `page_end` (the relay's
-- read), only the rows of that snapshot, after window_after. Never a walk
-- of the whole table: a new window, or all that is unsent, is read through
-- outbox_txid_idx (enable_seqscan off, and the order by `id + 0` keeps the
-- planner from walking the primary key from the first id, which it would:
-- it cannot tell how few rows a txid range holds); the next page of a long
-- window from the primary key after window_after. Planned once per
-- connection (plan_cache_mode: the plan is the same for any values), with
-- no parallel workers and no JIT (the generic plan's estimates are the
-- whole table's, and both would cost milliseconds for a few rows). The
-- settings are the function's and end with the call.
CREATE FUNCTION conveyor.outbox_unsent(sent pg_snapshot, window_end pg_snapshot, window_after bigint,
                                       page_end pg_snapshot DEFAULT NULL, page_size bigint DEFAULT NULL)
RETURNS SETOF conveyor.outbox
LANGUAGE plpgsql STABLE ROWS 100
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET max_parallel_workers_per_gather = 0
SET jit = off
AS $$
DECLARE
  v_xmax xid8   := pg_snapshot_xmax(outbox_unsent.sent);
  v_xip  xid8[] := ARRAY(SELECT pg_snapshot_xip(outbox_unsent.sent));
BEGIN
  IF outbox_unsent.page_end IS NOT NULL AND outbox_unsent.window_end IS NOT NULL
     AND outbox_unsent.window_after > 0 THEN
    RETURN QUERY
    SELECT o.* FROM conveyor.outbox o
    WHERE o.id > outbox_unsent.window_after
      AND (o.txid >= v_xmax OR o.txid = ANY (v_xip))
      AND pg_visible_in_snapshot(o.txid, outbox_unsent.page_end)
    ORDER BY o.id
    LIMIT outbox_unsent.page_size;
  ELSE
    RETURN QUERY
    SELECT o.* FROM conveyor.outbox o
    WHERE (o.txid >= v_xmax OR o.txid = ANY (v_xip))
      AND NOT coalesce(o.id <= outbox_unsent.window_after
                       AND pg_visible_in_snapshot(o.txid, outbox_unsent.window_end), false)
      AND (outbox_unsent.page_end IS NULL OR pg_visible_in_snapshot(o.txid, outbox_unsent.page_end))
    ORDER BY o.id + 0
    LIMIT outbox_unsent.page_size;
  END IF;
END
$$;

-- The rows unsent as the relay last saved its place.
CREATE FUNCTION conveyor.outbox_unsent()
RETURNS SETOF conveyor.outbox
LANGUAGE sql STABLE ROWS 100
AS $$
  SELECT u.* FROM conveyor.outbox_relay r, conveyor.outbox_unsent(r.sent, r.window_end, r.window_after) u
$$;

GRANT SELECT, UPDATE ON conveyor.outbox_relay TO
  conveyor_creation, conveyor_configuration, conveyor_execution, conveyor_worker,
  conveyor_publication, conveyor_workerpool, conveyor_monitor;
GRANT SELECT ON conveyor.outbox_relay TO conveyor_reader;

-- After a restore into another cluster (`conveyor system restore` calls
-- it, with the services stopped): the backup's transaction ids, in the
-- outbox and in the relay's place, may be past this cluster's, and every
-- new row would count as sent (the relay refuses to lead then). Renumbers
-- them: what the place says is unsent, and what this transaction wrote,
-- gets this transaction's id; the rest '1' (seen by any snapshot: sent);
-- and the place starts here. Rewrites the outbox (about 5 s per million
-- rows). A row written by this cluster while the relay refused counts as
-- sent: stop the services before. Returns the rows left to send; NULL
-- when the ids are this cluster's (nothing to do).
CREATE FUNCTION conveyor.outbox_renumber()
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
  v_me   xid8 := pg_current_xact_id();
  v_next xid8;
  v_left bigint;
BEGIN
  LOCK TABLE conveyor.outbox IN SHARE ROW EXCLUSIVE MODE;  -- no event written meanwhile
  v_next := pg_snapshot_xmax(pg_current_snapshot());
  IF NOT EXISTS (SELECT 1 FROM conveyor.outbox_relay
                 WHERE pg_snapshot_xmax(coalesce(window_end, sent)) > v_next)
     AND NOT EXISTS (SELECT 1 FROM conveyor.outbox WHERE txid >= v_next AND txid <> v_me) THEN
    RETURN NULL;
  END IF;
  UPDATE conveyor.outbox SET txid = v_me
  WHERE id IN (SELECT id FROM conveyor.outbox_unsent()) AND txid IS DISTINCT FROM v_me;
  UPDATE conveyor.outbox SET txid = '1' WHERE txid IS DISTINCT FROM v_me AND txid IS DISTINCT FROM '1';
  UPDATE conveyor.outbox_relay SET sent = conveyor.snapshot_without_me(), window_end = NULL, window_after = 0;
  SELECT count(*) INTO v_left FROM conveyor.outbox WHERE txid = v_me;
  RETURN v_left;
END
$$;
