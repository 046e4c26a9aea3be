-- Undoes 20261231000000_waiting_on_index.up.sql: the index and the
-- look-ups of 20261229000000 and 20261230000100.
CREATE INDEX job_configured_depends_on_idx ON conveyor.job USING gin (depends_on) WITH (fastupdate = off)
  WHERE status = 'configured' AND depends_on <> '{}';
DROP INDEX conveyor.job_waiting_on_idx;

CREATE OR REPLACE FUNCTION conveyor.configured_jobs_wait_on(ids bigint[]) RETURNS boolean
LANGUAGE plpgsql STABLE
SET enable_seqscan = off
SET enable_indexscan = off
SET enable_bitmapscan = on
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
  RETURN EXISTS (SELECT 1 FROM conveyor.job w
                 WHERE w.status = 'configured' AND w.depends_on <> '{}'
                   AND w.depends_on && configured_jobs_wait_on.ids);
END
$$;

CREATE OR REPLACE FUNCTION conveyor.configured_jobs_waiting_on(ids bigint[]) RETURNS SETOF bigint
LANGUAGE plpgsql STABLE ROWS 10
SET enable_seqscan = off
SET enable_indexscan = off
SET enable_bitmapscan = on
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
  RETURN QUERY SELECT w.id FROM conveyor.job w
               WHERE w.status = 'configured' AND w.depends_on <> '{}'
                 AND w.depends_on && configured_jobs_waiting_on.ids;
END
$$;
