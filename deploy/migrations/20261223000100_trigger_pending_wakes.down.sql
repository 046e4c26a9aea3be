-- Undoes 20261223000100_trigger_pending_wakes.up.sql: nothing notifies
-- pending triggers; the previous release's creation wakes on done.
DROP TRIGGER trigger_pending_notify ON conveyor.trigger_pending;
DROP FUNCTION conveyor.notify_trigger_pending();
