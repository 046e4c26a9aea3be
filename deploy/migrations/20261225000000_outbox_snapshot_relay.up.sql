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
-- outbox.sent_at stays for older relays during a rolling upgrade (they mark
-- it; this relay neither reads nor writes it); a relay of this version
-- taking over after one of them sends again what that one sent since the
-- migration (at least once, as any relay change of leader).

ALTER TABLE conveyor.outbox ADD COLUMN txid xid8;
ALTER TABLE conveyor.outbox ALTER COLUMN txid SET DEFAULT pg_current_xact_id();
UPDATE conveyor.outbox SET txid = pg_current_xact_id() WHERE sent_at IS NULL;
DROP INDEX conveyor.outbox_unsent_idx;
CREATE INDEX outbox_txid_idx ON conveyor.outbox (txid);

CREATE TABLE conveyor.outbox_relay (
  id           boolean PRIMARY KEY DEFAULT true CHECK (id),
  sent         pg_snapshot NOT NULL,
  window_end   pg_snapshot,
  window_after bigint NOT NULL DEFAULT 0
);

-- The first `sent`: this statement's snapshot, which must not see this
-- transaction (the rows unsent above carry its id). A snapshot leaves its
-- own transaction out of the ids in progress, so that id is added to them
-- unless it is at or past the snapshot's xmax (then unseen anyway).
INSERT INTO conveyor.outbox_relay (sent)
SELECT CASE WHEN me >= pg_snapshot_xmax(s) THEN s
            ELSE (least(pg_snapshot_xmin(s), me) || ':' || pg_snapshot_xmax(s) || ':' ||
                  (SELECT string_agg(x::text, ',' ORDER BY x)
                   FROM (SELECT pg_snapshot_xip(s) AS x UNION SELECT me) ids))::pg_snapshot END
FROM (SELECT pg_current_snapshot() AS s, pg_current_xact_id() AS me) cur;

-- The unsent rows, in id order, `page_size` at most (NULL: all): those whose
-- transaction `sent` does not see (its xmax or after, or in progress in it),
-- less the head of the window already sent. With `page_end` (the relay's
-- read), only the rows of that snapshot, after window_after. Planned for
-- the values of each call (plan_cache_mode, the function's own setting), so
-- the txid and id conditions pick the index that fits: outbox_txid_idx for
-- a new window, the primary key to page through a long one.
CREATE FUNCTION conveyor.outbox_unsent(sent pg_snapshot, window_end pg_snapshot, window_after bigint,
                                       page_end pg_snapshot DEFAULT NULL, page_size bigint DEFAULT NULL)
RETURNS TABLE (id bigint, created_at timestamptz)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
  v_xmax xid8   := pg_snapshot_xmax(outbox_unsent.sent);
  v_xip  xid8[] := ARRAY(SELECT pg_snapshot_xip(outbox_unsent.sent));
  v_from bigint := CASE WHEN outbox_unsent.page_end IS NOT NULL THEN outbox_unsent.window_after ELSE 0 END;
BEGIN
  RETURN QUERY
  SELECT o.id, o.created_at
  FROM conveyor.outbox o
  WHERE (o.txid >= v_xmax OR o.txid = ANY (v_xip))
    AND NOT coalesce(o.id <= outbox_unsent.window_after
                     AND pg_visible_in_snapshot(o.txid, outbox_unsent.window_end), false)
    AND (outbox_unsent.page_end IS NULL OR pg_visible_in_snapshot(o.txid, outbox_unsent.page_end))
    AND o.id > v_from
  ORDER BY o.id
  LIMIT outbox_unsent.page_size;
END
$$;

-- The rows unsent as the relay last saved its place.
CREATE FUNCTION conveyor.outbox_unsent()
RETURNS TABLE (id bigint, created_at timestamptz)
LANGUAGE sql STABLE
AS $$
  SELECT u.id, u.created_at
  FROM conveyor.outbox_relay r, conveyor.outbox_unsent(r.sent, r.window_end, r.window_after) u
$$;

GRANT SELECT, UPDATE ON conveyor.outbox_relay TO
  conveyor_creation, conveyor_configuration, conveyor_execution, conveyor_worker,
  conveyor_publication, conveyor_workerpool, conveyor_monitor;
GRANT SELECT ON conveyor.outbox_relay TO conveyor_reader;
