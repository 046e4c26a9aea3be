-- Why the relay refuses to publish, or NULL when it may: one rule for the
-- relay (which refuses to lead) and the monitor (alert outbox_refused,
-- gauge conveyor_outbox_relay_refusing).
--
-- Until now only the relay knew: it logged an error once a minute, and the
-- outbox_stuck alert could not see it, because a place past the cluster's
-- transaction ids counts every row as sent (stop 32's leftover).
--   no_place          conveyor.outbox_relay has no row
--   past_cluster_ids  the relay's place, or an outbox row, is past this
--                     cluster's transaction ids (a backup restored into
--                     another cluster by hand): run conveyor.outbox_renumber()
CREATE FUNCTION conveyor.outbox_relay_refusal()
RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT CASE
    WHEN NOT EXISTS (SELECT 1 FROM conveyor.outbox_relay) THEN 'no_place'
    WHEN EXISTS (SELECT 1 FROM conveyor.outbox_relay r
                 WHERE pg_snapshot_xmax(coalesce(r.window_end, r.sent)) > pg_snapshot_xmax(pg_current_snapshot()))
      -- The caller's own events, not yet committed, may carry an id at or
      -- past its snapshot's xmax: they are not past the cluster's ids.
      OR EXISTS (SELECT 1 FROM conveyor.outbox o
                 WHERE o.txid >= pg_snapshot_xmax(pg_current_snapshot())
                   AND o.txid IS DISTINCT FROM pg_current_xact_id_if_assigned())
      THEN 'past_cluster_ids'
  END
$$;

COMMENT ON FUNCTION conveyor.outbox_relay_refusal() IS
  'why the outbox relay refuses to publish (no_place, past_cluster_ids), or NULL when it may';
