-- Undoes 20261227000100_outbox_relay_refusal.up.sql.
DROP FUNCTION conveyor.outbox_relay_refusal();
