-- Undoes 20261122000200_queue_state.up.sql.
DROP TABLE conveyor.queue_state;
