-- Undoes 20261210000300_priority_aging.up.sql: admission goes back to strict
-- priority DESC, created_at (the code of that release does not read the column).
DROP FUNCTION conveyor.effective_priority(int, timestamptz, float8);
ALTER TABLE conveyor.system_parameters DROP COLUMN priority_aging_per_minute;
