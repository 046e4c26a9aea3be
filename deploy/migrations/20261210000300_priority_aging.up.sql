-- Issue 13, item 10: priority without starvation. Admission (conveyor-execution)
-- orders ready jobs by their effective priority: the priority they were given
-- plus priority_aging_per_minute for every minute they have waited since they
-- were created. A job of priority p therefore overtakes every job of priority
-- q > p that was created (q - p) / rate minutes after it, however many of
-- those keep arriving. At 0 (the default) the order is the old one exactly:
-- priority DESC, created_at, id.
--
-- A catalog-only change (a column with a constant default) and a new function
-- (EXECUTE is PUBLIC by default: every service role may call it).

ALTER TABLE conveyor.system_parameters
  ADD COLUMN priority_aging_per_minute float8 NOT NULL DEFAULT 0
  CONSTRAINT system_parameters_priority_aging_per_minute_check
  -- NaN sorts above every number in PostgreSQL: `< 'Infinity'` refuses it too.
  CHECK (priority_aging_per_minute >= 0 AND priority_aging_per_minute < 'Infinity');

-- The one rule (execution.cpp kCandidates orders by it; an operator can ask
-- psql why a job waits). STABLE: it reads now(), the start of the transaction,
-- so every job of one admission pass is aged to the same instant.
CREATE FUNCTION conveyor.effective_priority(priority int, created_at timestamptz, rate float8)
RETURNS float8
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT priority + CASE WHEN rate = 0 THEN 0
                         ELSE rate * greatest(0, extract(epoch FROM now() - created_at)) / 60 END
$$;

COMMENT ON FUNCTION conveyor.effective_priority(int, timestamptz, float8) IS
  'priority + rate per minute waited since created_at (admission order, issue 13)';
