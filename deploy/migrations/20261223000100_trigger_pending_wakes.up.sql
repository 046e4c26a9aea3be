-- Issue 14: conveyor-creation woke on every job's done (its NOTIFY, and its
-- Kafka event, which it consumed for nothing else) to read
-- conveyor.trigger_pending, which is empty unless the job's type has
-- triggers: one wake-up, one statement and one event fetched per job. Now
-- a statement that makes triggers pending (conveyor.record_trigger_pending,
-- when a job of a type with triggers is done) notifies
-- conveyor_trigger_pending, the channel creation listens on instead, and a
-- done job of a type with no triggers costs creation nothing. Its poll
-- stays the fallback.
CREATE FUNCTION conveyor.notify_trigger_pending() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('conveyor_trigger_pending', '');
  RETURN NULL;
END
$$;

COMMENT ON FUNCTION conveyor.notify_trigger_pending() IS
  'wakes conveyor-creation when triggers become pending (issue 14)';

CREATE TRIGGER trigger_pending_notify
  AFTER INSERT ON conveyor.trigger_pending
  FOR EACH STATEMENT EXECUTE FUNCTION conveyor.notify_trigger_pending();
