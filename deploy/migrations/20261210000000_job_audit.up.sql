-- Issue 13, item 1: every change of a job's params or config, from the CLI
-- (`conveyor job patch --set-param`) or from psql, leaves a row here: who,
-- when, the old value and the new one. `conveyor job inspect` shows them.
--
-- The trigger function is the only writer. It is SECURITY DEFINER (it runs as
-- the migrating owner, with a fixed search_path), so no service needs INSERT
-- on this table: a role allowed to UPDATE job.config (conveyor_configuration)
-- gets its audit rows without further grants, and nobody can forge one.
-- Jobs deleted by retention take their audit rows with them (ON DELETE
-- CASCADE runs as the table owner, like job_status_change).

CREATE TABLE conveyor.job_audit (
  id        bigserial PRIMARY KEY,
  job_id    bigint NOT NULL REFERENCES conveyor.job (id) ON DELETE CASCADE,
  at        timestamptz NOT NULL DEFAULT clock_timestamp(),
  -- SET LOCAL conveyor.actor (the CLI: conveyor-cli:<user>), else the
  -- database user: current_actor() reads session_user, which SECURITY
  -- DEFINER does not change.
  actor     text NOT NULL DEFAULT conveyor.current_actor(),
  field     text NOT NULL,   -- the audited field: 'params', 'config' (more may follow)
  old_value jsonb,
  new_value jsonb
);
CREATE INDEX job_audit_job_idx ON conveyor.job_audit (job_id, id);

-- One IF per audited field. A later migration that audits another column
-- replaces this function (CREATE OR REPLACE, keeping these blocks) and
-- recreates the trigger below with the column added to its UPDATE OF list.
--
-- params: every change.
-- config: every change of a config that was already there. Its first write
-- (NULL -> the resolved config, by conveyor-job-configuration at
-- initialized -> configured) derives config from params and the type; it is
-- the job's creation, not an edit. Later rewrites are recorded, whoever makes
-- them: a hand edit, a retry's new resolution, or the re-rendered inputs of
-- a job with dependencies at configured -> ready (actor
-- conveyor-job-configuration). A rewrite to the same value records nothing.
CREATE FUNCTION conveyor.record_job_audit() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NEW.params IS DISTINCT FROM OLD.params THEN
    INSERT INTO conveyor.job_audit (job_id, field, old_value, new_value)
    VALUES (NEW.id, 'params', OLD.params, NEW.params);
  END IF;

  IF OLD.config IS NOT NULL AND NEW.config IS DISTINCT FROM OLD.config THEN
    INSERT INTO conveyor.job_audit (job_id, field, old_value, new_value)
    VALUES (NEW.id, 'config', OLD.config, NEW.config);
  END IF;

  RETURN NULL;
END
$$;

CREATE TRIGGER job_record_audit
  AFTER UPDATE OF params, config ON conveyor.job
  FOR EACH ROW EXECUTE FUNCTION conveyor.record_job_audit();

-- Every role that reads jobs reads their audit (no INSERT: see above).
GRANT SELECT ON conveyor.job_audit TO
  conveyor_creation, conveyor_configuration, conveyor_execution, conveyor_worker,
  conveyor_publication, conveyor_workerpool, conveyor_monitor, conveyor_reader;
