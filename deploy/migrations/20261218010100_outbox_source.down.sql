ALTER TABLE conveyor.outbox DROP COLUMN source;
