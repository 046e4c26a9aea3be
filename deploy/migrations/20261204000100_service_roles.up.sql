-- Issue 12: one database role per service, with only the grants its code
-- needs (README "Security"; tests/integration/db/service_roles_test.cpp
-- proves what each may and may not do).
--
-- EVERY LATER MIGRATION THAT ADDS A TABLE OR SEQUENCE, OR A COLUMN THAT A
-- SERVICE INSERTS OR UPDATES, MUST GRANT IT as this file does: explicitly, to
-- the roles whose code uses it, plus SELECT on a new table to conveyor_reader.
-- There are no default privileges: what nobody granted is refused to the
-- services (SQLSTATE 42501). Columns added to a table granted whole (SELECT
-- on job, UPDATE on system_parameters) need nothing.
--
-- The roles are NOLOGIN groups; each deployment gives every service a login
-- role that is a member of its group (`CREATE ROLE creation_prod LOGIN
-- PASSWORD ... IN ROLE conveyor_creation`). `conveyor db migrate` keeps
-- running as the database owner, which owns every object and is not bound by
-- any of this.
--
-- Roles are cluster-wide, this migration runs in each database of the
-- cluster (tests migrate many at once): creating them is idempotent and
-- race-safe (a concurrent creator's role is taken as ours), and the down
-- migration never drops them (other databases use them); it revokes what
-- this file granted in this database. Creating a role needs CREATEROLE:
-- without it, a superuser creates the eight roles beforehand and this
-- migration only grants.
--
-- Triggers run as the role that fired them (no SECURITY DEFINER): a role that
-- changes a job's status or canceled_at, or system_parameters, gets INSERT on
-- the tables the triggers write (job_status_change, outbox,
-- system_parameters_history, trigger_pending) and USAGE on their sequences,
-- and SELECT on the tables they read (job_status, job_status_transition,
-- job_type). ON DELETE CASCADE and SET NULL run as the tables' owner, so the
-- monitor's retention needs no DELETE on the history.

DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['conveyor_creation', 'conveyor_configuration', 'conveyor_execution',
                           'conveyor_worker', 'conveyor_publication', 'conveyor_workerpool',
                           'conveyor_monitor', 'conveyor_reader'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
      BEGIN
        EXECUTE format('CREATE ROLE %I NOLOGIN', r);
      EXCEPTION
        -- Another database's migration created it since we looked: committed
        -- (duplicate_object) or committing while we waited (unique_violation).
        WHEN duplicate_object OR unique_violation THEN NULL;
        WHEN insufficient_privilege THEN
          RAISE EXCEPTION USING
            ERRCODE = 'insufficient_privilege',
            MESSAGE = format('cannot create role %s: the migrating user has no CREATEROLE', r),
            HINT = 'a superuser runs CREATE ROLE ' || r || ' NOLOGIN (and the other conveyor_* '
                   'roles of this migration) once per cluster, then migrate again';
      END;
    END IF;
  END LOOP;
END
$$;

-- ------------------------------------------------------------------ every service
-- libs/core runtime (service_instance heartbeats, system_parameters), the
-- outbox relay (every service runs it; advisory lock, LISTEN/NOTIFY need no
-- grant), the auth guard (api_token, last_used_at), and the status triggers
-- (each of the seven services moves jobs).

GRANT USAGE ON SCHEMA conveyor TO
  conveyor_creation, conveyor_configuration, conveyor_execution, conveyor_worker,
  conveyor_publication, conveyor_workerpool, conveyor_monitor, conveyor_reader;

GRANT SELECT ON conveyor.system_parameters, conveyor.job_status, conveyor.job_status_transition,
                conveyor.job, conveyor.job_status_change, conveyor.api_token TO
  conveyor_creation, conveyor_configuration, conveyor_execution, conveyor_worker,
  conveyor_publication, conveyor_workerpool, conveyor_monitor;

GRANT SELECT, INSERT, UPDATE ON conveyor.service_instance TO
  conveyor_creation, conveyor_configuration, conveyor_execution, conveyor_worker,
  conveyor_publication, conveyor_workerpool, conveyor_monitor;

-- Relay: read unsent, mark sent, purge sent; INSERT: the triggers.
GRANT SELECT, INSERT, DELETE ON conveyor.outbox TO
  conveyor_creation, conveyor_configuration, conveyor_execution, conveyor_worker,
  conveyor_publication, conveyor_workerpool, conveyor_monitor;
GRANT UPDATE (sent_at) ON conveyor.outbox TO
  conveyor_creation, conveyor_configuration, conveyor_execution, conveyor_worker,
  conveyor_publication, conveyor_workerpool, conveyor_monitor;

GRANT INSERT ON conveyor.job_status_change TO
  conveyor_creation, conveyor_configuration, conveyor_execution, conveyor_worker,
  conveyor_publication, conveyor_workerpool, conveyor_monitor;

GRANT USAGE ON SEQUENCE conveyor.job_status_change_id_seq, conveyor.outbox_id_seq TO
  conveyor_creation, conveyor_configuration, conveyor_execution, conveyor_worker,
  conveyor_publication, conveyor_workerpool, conveyor_monitor;

GRANT UPDATE (last_used_at) ON conveyor.api_token TO
  conveyor_creation, conveyor_configuration, conveyor_execution, conveyor_worker,
  conveyor_publication, conveyor_workerpool, conveyor_monitor;

-- ------------------------------------------------------------------ conveyor_creation
-- REST API (submit, cancel, retry, reads, PATCH /v1/parameters for operator
-- tokens), the scheduler and the triggers' downstream jobs. It cannot delete
-- anything but a handled trigger_pending row, nor set a job's status,
-- submitted_by, result or worker on insert.

GRANT INSERT (job_type, params, priority, max_attempts, depends_on, not_before, idempotency_key)
  ON conveyor.job TO conveyor_creation;
GRANT UPDATE (status, canceled_at, attempt, result, worker_id, error_subtype, error_message)
  ON conveyor.job TO conveyor_creation;
GRANT USAGE ON SEQUENCE conveyor.job_id_seq TO conveyor_creation;
GRANT SELECT ON conveyor.job_type TO conveyor_creation;
GRANT UPDATE ON conveyor.system_parameters TO conveyor_creation;
GRANT INSERT ON conveyor.system_parameters_history TO conveyor_creation;
GRANT USAGE ON SEQUENCE conveyor.system_parameters_history_id_seq TO conveyor_creation;
GRANT SELECT ON conveyor.schedule_state TO conveyor_creation;
GRANT INSERT (job_type, last_slot, catchup_start_applied) ON conveyor.schedule_state TO conveyor_creation;
GRANT UPDATE (last_slot, next_slot, last_job_id, created_count, skipped_count, last_error,
              catchup_start_applied, updated_at)
  ON conveyor.schedule_state TO conveyor_creation;
GRANT SELECT, DELETE ON conveyor.trigger_pending TO conveyor_creation;
GRANT UPDATE (failed_at, last_error) ON conveyor.trigger_pending TO conveyor_creation;

-- ------------------------------------------------------------------ conveyor_configuration
GRANT UPDATE (status, config, max_attempts, error_subtype, error_message)
  ON conveyor.job TO conveyor_configuration;
GRANT SELECT ON conveyor.job_type TO conveyor_configuration;

-- ------------------------------------------------------------------ conveyor_execution
-- Admission: ready -> queued, under job type limits and pauses.
GRANT UPDATE (status) ON conveyor.job TO conveyor_execution;
GRANT SELECT ON conveyor.job_type, conveyor.queue_state TO conveyor_execution;

-- ------------------------------------------------------------------ conveyor_worker
-- Claims queued jobs, ends them, registers and heartbeats in conveyor.worker,
-- records attempts. No job_type, no system_parameters writes, no queue_state,
-- no INSERT or DELETE of jobs, none of job_type, params, config, priority,
-- max_attempts, canceled_at, submitted_by; and (row-level security below) only
-- jobs that are queued or started.
GRANT UPDATE (status, worker_id, attempt, result, not_before, error_subtype, error_message)
  ON conveyor.job TO conveyor_worker;
GRANT SELECT ON conveyor.worker, conveyor.installation TO conveyor_worker;
GRANT INSERT (name, host, pid, pool, concurrency, running, status, started_at, last_heartbeat,
              stopped_at, version)
  ON conveyor.worker TO conveyor_worker;
GRANT UPDATE (host, pid, pool, concurrency, running, status, started_at, last_heartbeat, stopped_at,
              version, running_jobs, running_jobs_at)
  ON conveyor.worker TO conveyor_worker;
GRANT USAGE ON SEQUENCE conveyor.worker_id_seq TO conveyor_worker;
GRANT SELECT ON conveyor.job_attempt TO conveyor_worker;
GRANT INSERT (job_id, attempt, job_type, worker_id, worker, image, started_at)
  ON conveyor.job_attempt TO conveyor_worker;
GRANT UPDATE (ended_at, outcome, exit_code, image_digest, wall_ms, cpu_user_ms, cpu_system_ms, max_rss_kb)
  ON conveyor.job_attempt TO conveyor_worker;
GRANT USAGE ON SEQUENCE conveyor.job_attempt_id_seq TO conveyor_worker;

-- ------------------------------------------------------------------ conveyor_publication
-- processed -> done / external_error and its retries; a move to done fires
-- record_trigger_pending (reads job_type, inserts trigger_pending; its ON
-- CONFLICT (job_id) needs SELECT on the arbiter column).
GRANT UPDATE (status, error_subtype, error_message) ON conveyor.job TO conveyor_publication;
GRANT SELECT ON conveyor.job_type TO conveyor_publication;
GRANT INSERT, SELECT (job_id) ON conveyor.trigger_pending TO conveyor_publication;

-- ------------------------------------------------------------------ conveyor_workerpool
-- Scaling (demand, its workers, drain) and model::reap_lost_workers.
GRANT UPDATE (status, attempt, not_before, error_subtype, error_message)
  ON conveyor.job TO conveyor_workerpool;
GRANT SELECT ON conveyor.worker, conveyor.job_attempt TO conveyor_workerpool;
GRANT UPDATE (status) ON conveyor.worker TO conveyor_workerpool;
GRANT UPDATE (ended_at, outcome) ON conveyor.job_attempt TO conveyor_workerpool;

-- ------------------------------------------------------------------ conveyor_monitor
-- Reconciler (cancels, restarts, lost workers, re-emits), service registry,
-- retention (old jobs with their history and attempts by cascade, stopped
-- workers and instances), alerts, dashboard.
GRANT UPDATE (status, attempt, not_before, result, worker_id, canceled_at, error_subtype,
              error_message, reemitted_at)
  ON conveyor.job TO conveyor_monitor;
GRANT DELETE ON conveyor.job TO conveyor_monitor;
GRANT SELECT, DELETE ON conveyor.worker TO conveyor_monitor;
GRANT UPDATE (status) ON conveyor.worker TO conveyor_monitor;
GRANT SELECT ON conveyor.job_attempt TO conveyor_monitor;
GRANT UPDATE (ended_at, outcome) ON conveyor.job_attempt TO conveyor_monitor;
GRANT DELETE ON conveyor.service_instance TO conveyor_monitor;
GRANT SELECT ON conveyor.queue_state, conveyor.trigger_pending, conveyor.schedule_state
  TO conveyor_monitor;
-- The console's login sessions (POST /login, /logout, the cookie's check).
GRANT SELECT, INSERT, DELETE ON conveyor.console_session TO conveyor_monitor;

-- ------------------------------------------------------------------ conveyor_reader
-- Read-only, for dashboards and psql: every table, but not the tokens' hashes.
GRANT SELECT ON
  conveyor.schema_migrations, conveyor.schema_migration_lock,
  conveyor.job_status, conveyor.job_status_transition, conveyor.worker, conveyor.service_instance,
  conveyor.job, conveyor.job_status_change, conveyor.outbox, conveyor.job_type,
  conveyor.system_parameters, conveyor.system_parameters_history, conveyor.queue_state,
  conveyor.schedule_state, conveyor.trigger_pending, conveyor.job_attempt, conveyor.installation
  TO conveyor_reader;
GRANT SELECT (name, role, created_at, created_by, expires_at, revoked_at, last_used_at)
  ON conveyor.api_token TO conveyor_reader;
GRANT SELECT (token_name, created_at, expires_at) ON conveyor.console_session TO conveyor_reader;

-- ------------------------------------------------------------------ rows a worker may change
-- A worker changes only jobs that are queued (its claim) or started (its
-- outcome, its requeue after a restart): never a finished, processed or
-- waiting job. Which started job is its own (worker_id) is the worker's code
-- (every statement says `AND worker_id = $2`), not enforceable here: all
-- workers share one role. The permissive policy keeps every other role as it
-- was; the owner (migrations, the CLI) and superusers bypass row security.
ALTER TABLE conveyor.job ENABLE ROW LEVEL SECURITY;
CREATE POLICY job_any_row ON conveyor.job AS PERMISSIVE FOR ALL TO PUBLIC
  USING (true) WITH CHECK (true);
CREATE POLICY job_worker_queued_or_started ON conveyor.job AS RESTRICTIVE FOR UPDATE TO conveyor_worker
  USING (status IN ('queued', 'started')) WITH CHECK (true);
