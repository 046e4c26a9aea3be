-- Back to rows marked sent one by one: what the relay's place says was sent
-- gets a sent_at, and the partial index of the unsent rows returns.
UPDATE conveyor.outbox o SET sent_at = clock_timestamp()
WHERE o.sent_at IS NULL AND NOT EXISTS (SELECT 1 FROM conveyor.outbox_unsent() u WHERE u.id = o.id);
DROP FUNCTION conveyor.outbox_renumber();
DROP FUNCTION conveyor.snapshot_without_me();
DROP FUNCTION conveyor.outbox_unsent();
DROP FUNCTION conveyor.outbox_unsent(pg_snapshot, pg_snapshot, bigint, pg_snapshot, bigint);
DROP TABLE conveyor.outbox_relay;
DROP INDEX conveyor.outbox_txid_idx;
ALTER TABLE conveyor.outbox DROP CONSTRAINT outbox_txid_given;
ALTER TABLE conveyor.outbox DROP COLUMN txid;
CREATE INDEX outbox_unsent_idx ON conveyor.outbox (id) WHERE sent_at IS NULL;
GRANT UPDATE (sent_at) ON conveyor.outbox TO
  conveyor_creation, conveyor_configuration, conveyor_execution, conveyor_worker,
  conveyor_publication, conveyor_workerpool, conveyor_monitor;
