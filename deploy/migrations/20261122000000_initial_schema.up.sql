-- Conveyor schema version 1 (DESIGN §2-§4, §8).
--
-- Applied by `conveyor db migrate` inside one transaction: no BEGIN/COMMIT and
-- no CREATE INDEX CONCURRENTLY here. Schema `conveyor` and the tracking tables
-- conveyor.schema_migrations / conveyor.schema_migration_lock come from
-- `conveyor db init`, not from this file.
--
-- The status machine lives twice: here (conveyor.job_status_transition, read by
-- conveyor.check_status_change()) and in libs/core/src/model/status.cpp;
-- tests/integration/db/status_machine_test.cpp proves they agree.

-- ------------------------------------------------------------------ helpers

-- Who made a change: `SET LOCAL conveyor.actor = '...'` (db::Tx::set_actor) or,
-- for a person in psql, the database user.
CREATE FUNCTION conveyor.current_actor() RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('conveyor.actor', true), ''), session_user::text)
$$;

CREATE FUNCTION conveyor.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END
$$;

-- ------------------------------------------------------------------ status machine

CREATE TABLE conveyor.job_status (
  name        text PRIMARY KEY,
  position    int NOT NULL UNIQUE,    -- display order (= model::kAllStatuses)
  is_final    boolean NOT NULL,       -- the pipeline will not move it again by itself
  is_error    boolean NOT NULL,       -- failed, internal_error, external_error
  description text NOT NULL
);

INSERT INTO conveyor.job_status (name, position, is_final, is_error, description) VALUES
  ('initialized',     1, false, false, 'created, waiting for configuration'),
  ('configured',      2, false, false, 'command, image and inputs resolved; waiting for dependencies'),
  ('ready',           3, false, false, 'waiting for admission'),
  ('queued',          4, false, false, 'admitted; waiting for a worker to claim it'),
  ('started',         5, false, false, 'running on a worker'),
  ('processed',       6, false, false, 'ran successfully; waiting for publication'),
  ('done',            7, true,  false, 'published; nothing more will happen'),
  ('failed',          8, true,  true,  'the job''s own process failed after its attempts ran out'),
  ('internal_error',  9, true,  true,  'Conveyor failed the job'),
  ('external_error', 10, false, true,  'something outside failed; retried through error_checked'),
  ('error_checked',  11, false, false, 'an error was looked at; waiting to resume'),
  ('canceled',       12, true,  false, 'canceled; setting canceled_at back to null restarts it');

-- DESIGN §3. from_status NULL is the insert row.
CREATE TABLE conveyor.job_status_transition (
  from_status text REFERENCES conveyor.job_status (name),
  to_status   text NOT NULL REFERENCES conveyor.job_status (name),
  CHECK (from_status IS DISTINCT FROM to_status)
);
CREATE UNIQUE INDEX job_status_transition_pair_idx
  ON conveyor.job_status_transition (coalesce(from_status, ''), to_status);

INSERT INTO conveyor.job_status_transition (from_status, to_status) VALUES
  (NULL,             'initialized'),
  (NULL,             'canceled'),
  ('initialized',    'configured'),
  ('initialized',    'internal_error'),
  ('initialized',    'external_error'),
  ('initialized',    'canceled'),
  ('configured',     'ready'),
  ('configured',     'internal_error'),
  ('configured',     'canceled'),
  ('ready',          'queued'),
  ('ready',          'internal_error'),
  ('ready',          'canceled'),
  ('queued',         'started'),
  ('queued',         'ready'),
  ('queued',         'internal_error'),
  ('queued',         'canceled'),
  ('started',        'processed'),
  ('started',        'ready'),
  ('started',        'failed'),
  ('started',        'internal_error'),
  ('started',        'external_error'),
  ('started',        'canceled'),
  ('processed',      'done'),
  ('processed',      'external_error'),
  ('processed',      'internal_error'),
  ('processed',      'canceled'),
  ('failed',         'error_checked'),
  ('internal_error', 'error_checked'),
  ('external_error', 'error_checked'),
  ('error_checked',  'initialized'),
  ('error_checked',  'configured'),
  ('error_checked',  'ready'),
  ('error_checked',  'processed'),
  ('error_checked',  'canceled'),
  ('canceled',       'initialized');

-- ------------------------------------------------------------------ workers

CREATE TABLE conveyor.worker (
  id             bigserial PRIMARY KEY,
  name           text NOT NULL UNIQUE,
  host           text,
  pid            int,
  pool           text NOT NULL DEFAULT 'default',
  concurrency    int NOT NULL DEFAULT 1 CHECK (concurrency >= 1),
  running        int NOT NULL DEFAULT 0 CHECK (running >= 0),
  status         text NOT NULL DEFAULT 'active'
                 CHECK (status IN ('active', 'draining', 'stopped', 'lost')),
  started_at     timestamptz NOT NULL DEFAULT now(),
  last_heartbeat timestamptz NOT NULL DEFAULT now(),
  stopped_at     timestamptz,
  version        text
);
-- Reaper: active workers whose heartbeat is too old.
CREATE INDEX worker_status_heartbeat_idx ON conveyor.worker (status, last_heartbeat);

CREATE TABLE conveyor.service_instance (
  id             text PRIMARY KEY,   -- instance id
  service        text NOT NULL,
  host           text,
  pid            int,
  version        text,
  image_tag      text,
  started_at     timestamptz NOT NULL DEFAULT now(),
  last_heartbeat timestamptz NOT NULL DEFAULT now(),
  status         text NOT NULL DEFAULT 'up'
                 CHECK (status IN ('up', 'draining', 'down', 'stopped'))
);
CREATE INDEX service_instance_service_idx ON conveyor.service_instance (service);

-- ------------------------------------------------------------------ jobs

CREATE TABLE conveyor.job (
  id              bigserial PRIMARY KEY,
  job_type        text NOT NULL,
  status          text NOT NULL DEFAULT 'initialized' REFERENCES conveyor.job_status (name),
  priority        int NOT NULL DEFAULT 0,
  attempt         int NOT NULL DEFAULT 0 CHECK (attempt >= 0),
  max_attempts    int NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
  params          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params) = 'object'),
  config          jsonb,
  result          jsonb,
  depends_on      bigint[] NOT NULL DEFAULT '{}',
  worker_id       bigint REFERENCES conveyor.worker (id) ON DELETE SET NULL,
  canceled_at     timestamptz,
  not_before      timestamptz,
  deadline        timestamptz,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  idempotency_key text,
  error_subtype   text,
  error_message   text,
  CONSTRAINT job_type_idempotency_key_key UNIQUE (job_type, idempotency_key)
);

-- Hot-path indexes are partial so they stay small however many jobs are done.
-- Admission: ready jobs by priority, then age.
CREATE INDEX job_ready_idx ON conveyor.job (priority DESC, created_at, id) WHERE status = 'ready';
-- Workers claim queued jobs (FOR UPDATE SKIP LOCKED).
CREATE INDEX job_queued_idx ON conveyor.job (id) WHERE status = 'queued';
-- Reconciler: jobs that have not moved for longer than their stall threshold.
CREATE INDEX job_active_idx ON conveyor.job (status, updated_at)
  WHERE status NOT IN ('done', 'canceled', 'failed');
CREATE INDEX job_type_status_idx ON conveyor.job (job_type, status);
-- Jobs of a lost worker.
CREATE INDEX job_started_worker_idx ON conveyor.job (worker_id) WHERE status = 'started';
-- Reconciler: cancel requests to apply.
CREATE INDEX job_canceled_at_idx ON conveyor.job (canceled_at) WHERE canceled_at IS NOT NULL;
-- Configuration: configured jobs waiting on a job that just finished.
CREATE INDEX job_configured_depends_on_idx ON conveyor.job USING gin (depends_on)
  WHERE status = 'configured';

CREATE TABLE conveyor.job_status_change (
  id            bigserial PRIMARY KEY,
  job_id        bigint NOT NULL REFERENCES conveyor.job (id) ON DELETE CASCADE,
  from_status   text,           -- NULL for the insert
  to_status     text NOT NULL,
  at            timestamptz NOT NULL DEFAULT clock_timestamp(),
  actor         text NOT NULL,
  error_subtype text,
  message       text
);
CREATE INDEX job_status_change_job_idx ON conveyor.job_status_change (job_id, id);

-- ------------------------------------------------------------------ outbox

-- Rows written by triggers in the same transaction as the change they
-- describe; the relay (libs/core bus/relay) publishes them to Kafka topic
-- <prefix>.<topic> and sets sent_at.
CREATE TABLE conveyor.outbox (
  id         bigserial PRIMARY KEY,
  topic      text NOT NULL,   -- suffix: 'jobs' | 'parameters' | 'control'
  key        text NOT NULL,   -- Kafka key (job id for 'jobs')
  type       text NOT NULL,   -- CloudEvent type, e.g. io.conveyor.job.processed
  subject    text,
  payload    jsonb NOT NULL,  -- CloudEvent data; carries schema_version
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  sent_at    timestamptz
);
CREATE INDEX outbox_unsent_idx ON conveyor.outbox (id) WHERE sent_at IS NULL;

-- ------------------------------------------------------------------ status triggers

-- Refuses any status not reachable by the table above, whoever attempts it.
-- A same-status UPDATE is a no-op. Runs only when `status` is in the SET list.
CREATE FUNCTION conveyor.check_status_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NOT EXISTS (SELECT 1 FROM conveyor.job_status_transition t
                   WHERE t.from_status IS NULL AND t.to_status = NEW.status) THEN
      RAISE EXCEPTION USING
        ERRCODE = 'CV001',
        MESSAGE = format('invalid initial status for job %s: %s', NEW.id, coalesce(NEW.status, 'NULL')),
        HINT = 'a job is inserted as initialized or canceled';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
  END IF;

  IF NEW.status IS NOT DISTINCT FROM OLD.status THEN
    RETURN NEW;
  END IF;

  IF NOT EXISTS (SELECT 1 FROM conveyor.job_status_transition t
                 WHERE t.from_status = OLD.status AND t.to_status = NEW.status) THEN
    RAISE EXCEPTION USING
      ERRCODE = 'CV001',
      MESSAGE = format('invalid status transition for job %s: %s -> %s',
                       OLD.id, OLD.status, coalesce(NEW.status, 'NULL')),
      DETAIL = format('allowed from %s: %s', OLD.status,
                      coalesce((SELECT string_agg(t.to_status, ', ' ORDER BY s.position)
                                FROM conveyor.job_status_transition t
                                JOIN conveyor.job_status s ON s.name = t.to_status
                                WHERE t.from_status = OLD.status), 'none'));
  END IF;
  NEW.updated_at := now();
  RETURN NEW;
END
$$;

CREATE TRIGGER job_check_status_change
  BEFORE INSERT OR UPDATE OF status ON conveyor.job
  FOR EACH ROW EXECUTE FUNCTION conveyor.check_status_change();

-- Appends the history row and the outbox event of every real status change
-- (the insert included), in the transaction that made it.
CREATE FUNCTION conveyor.record_status_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_from      text;
  v_actor     text := conveyor.current_actor();
  v_is_error  boolean;
  v_subtype   text;
  v_message   text;
  v_change_id bigint;
  v_at        timestamptz;
BEGIN
  IF TG_OP = 'UPDATE' THEN
    IF NEW.status IS NOT DISTINCT FROM OLD.status THEN
      RETURN NULL;
    END IF;
    v_from := OLD.status;
  END IF;

  SELECT s.is_error INTO v_is_error FROM conveyor.job_status s WHERE s.name = NEW.status;
  IF coalesce(v_is_error, false) THEN
    v_subtype := NEW.error_subtype;
    v_message := NEW.error_message;
  END IF;

  INSERT INTO conveyor.job_status_change (job_id, from_status, to_status, actor, error_subtype, message)
  VALUES (NEW.id, v_from, NEW.status, v_actor, v_subtype, v_message)
  RETURNING id, at INTO v_change_id, v_at;

  INSERT INTO conveyor.outbox (topic, key, type, subject, payload)
  VALUES ('jobs', NEW.id::text, 'io.conveyor.job.' || NEW.status, NEW.id::text,
          jsonb_build_object(
            'schema_version', 1,
            'job_id', NEW.id,
            'job_type', NEW.job_type,
            'from_status', v_from,
            'to_status', NEW.status,
            'attempt', NEW.attempt,
            'priority', NEW.priority,
            'change_id', v_change_id,
            'at', v_at,
            'actor', v_actor,
            'error_subtype', v_subtype));

  PERFORM pg_notify('conveyor_outbox', '');
  RETURN NULL;
END
$$;

CREATE TRIGGER job_record_status_change
  AFTER INSERT OR UPDATE OF status ON conveyor.job
  FOR EACH ROW EXECUTE FUNCTION conveyor.record_status_change();

-- Runbook 000: `UPDATE conveyor.job SET canceled_at = now()` asks to stop a
-- job, `SET canceled_at = null` asks to restart it. The status change itself
-- is made by whoever reacts to this event (or by the reconciler).
CREATE FUNCTION conveyor.record_cancel_request() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO conveyor.outbox (topic, key, type, subject, payload)
  VALUES ('jobs', NEW.id::text,
          CASE WHEN NEW.canceled_at IS NULL THEN 'io.conveyor.job.restart_requested'
               ELSE 'io.conveyor.job.cancel_requested' END,
          NEW.id::text,
          jsonb_build_object(
            'schema_version', 1,
            'job_id', NEW.id,
            'job_type', NEW.job_type,
            'status', NEW.status,
            'canceled_at', NEW.canceled_at,
            'previous_canceled_at', OLD.canceled_at,
            'worker_id', NEW.worker_id,
            'at', clock_timestamp(),
            'actor', conveyor.current_actor()));
  PERFORM pg_notify('conveyor_outbox', '');
  RETURN NULL;
END
$$;

CREATE TRIGGER job_record_cancel_request
  AFTER UPDATE OF canceled_at ON conveyor.job
  FOR EACH ROW WHEN (OLD.canceled_at IS DISTINCT FROM NEW.canceled_at)
  EXECUTE FUNCTION conveyor.record_cancel_request();

-- ------------------------------------------------------------------ job types

CREATE TABLE conveyor.job_type (
  name              text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
  enabled           boolean NOT NULL DEFAULT true,
  -- argv template; each element a string.
  command           jsonb CHECK (command IS NULL OR (
                      jsonb_typeof(command) = 'array'
                      AND NOT jsonb_path_exists(command, '$[*] ? (@.type() != "string")'))),
  image             text,
  timeout_s         int NOT NULL DEFAULT 3600 CHECK (timeout_s > 0),
  max_attempts      int NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
  retry_backoff_s   int NOT NULL DEFAULT 30 CHECK (retry_backoff_s >= 0),
  priority          int NOT NULL DEFAULT 0,
  concurrency_limit int CHECK (concurrency_limit > 0),  -- NULL: no limit
  pool              text NOT NULL DEFAULT 'default',
  schedule          text,            -- '@every 1h' or 5-field cron; NULL: not scheduled
  catchup_policy    text NOT NULL DEFAULT 'latest' CHECK (catchup_policy IN ('all', 'latest', 'none')),
  catchup_window_s  int CHECK (catchup_window_s > 0),
  triggers          jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(triggers) = 'array'),
  sinks             jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(sinks) = 'array'),
  params_schema     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params_schema) = 'object'),
  description       text,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER job_type_touch_updated_at
  BEFORE UPDATE ON conveyor.job_type
  FOR EACH ROW EXECUTE FUNCTION conveyor.touch_updated_at();

-- ------------------------------------------------------------------ system parameters

-- Exactly one row, read live by every service (runbook 001:
-- `UPDATE conveyor.system_parameters SET max_number_of_worker_instances = 3;`).
CREATE TABLE conveyor.system_parameters (
  id                             boolean PRIMARY KEY DEFAULT true CHECK (id),
  max_number_of_worker_instances int NOT NULL DEFAULT 4 CHECK (max_number_of_worker_instances >= 0),
  min_number_of_worker_instances int NOT NULL DEFAULT 0 CHECK (min_number_of_worker_instances >= 0),
  worker_concurrency             int NOT NULL DEFAULT 4 CHECK (worker_concurrency BETWEEN 1 AND 1024),
  -- NULL: every enabled job type; else only these (runbook 001's waves).
  job_types_list                 text[] CHECK (array_position(job_types_list, NULL) IS NULL),
  accepting_new_jobs             boolean NOT NULL DEFAULT true,
  not_accepting_reason           text,
  stall_initialized_s            int NOT NULL DEFAULT 60 CHECK (stall_initialized_s > 0),
  stall_configured_s             int NOT NULL DEFAULT 60 CHECK (stall_configured_s > 0),
  stall_ready_s                  int NOT NULL DEFAULT 300 CHECK (stall_ready_s > 0),
  stall_queued_s                 int NOT NULL DEFAULT 300 CHECK (stall_queued_s > 0),
  stall_processed_s              int NOT NULL DEFAULT 120 CHECK (stall_processed_s > 0),
  stall_error_checked_s          int NOT NULL DEFAULT 120 CHECK (stall_error_checked_s > 0),
  worker_heartbeat_interval_s    int NOT NULL DEFAULT 5 CHECK (worker_heartbeat_interval_s > 0),
  worker_heartbeat_timeout_s     int NOT NULL DEFAULT 30 CHECK (worker_heartbeat_timeout_s > 0),
  publication_endpoint_url       text,
  publication_max_attempts       int NOT NULL DEFAULT 5 CHECK (publication_max_attempts >= 1),
  image_tags                     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(image_tags) = 'object'),
  log_retention_days             int NOT NULL DEFAULT 30 CHECK (log_retention_days > 0),
  job_retention_days             int NOT NULL DEFAULT 90 CHECK (job_retention_days > 0),
  outbox_retention_hours         int NOT NULL DEFAULT 24 CHECK (outbox_retention_hours > 0),
  -- Per-schedule catch-up start dates, e.g. {"gfsc_daily": "2026-01-01T00:00:00Z"}
  -- (runbook 001's gfsc_daily_jobs_creation_start_date).
  schedule_catchup_start         jsonb NOT NULL DEFAULT '{}'
                                 CHECK (jsonb_typeof(schedule_catchup_start) = 'object'),
  parameter_reload_interval_s    int NOT NULL DEFAULT 30 CHECK (parameter_reload_interval_s > 0),
  updated_at                     timestamptz NOT NULL DEFAULT now(),
  updated_by                     text,
  CONSTRAINT system_parameters_min_le_max_workers
    CHECK (min_number_of_worker_instances <= max_number_of_worker_instances),
  CONSTRAINT system_parameters_heartbeat_timeout_gt_interval
    CHECK (worker_heartbeat_timeout_s > worker_heartbeat_interval_s)
);

INSERT INTO conveyor.system_parameters (id, updated_by) VALUES (true, 'migration 20261122000000');

CREATE TABLE conveyor.system_parameters_history (
  id           bigserial PRIMARY KEY,
  changed_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
  changed_by   text NOT NULL,
  old_values   jsonb NOT NULL,
  new_values   jsonb NOT NULL,
  changed_keys text[] NOT NULL
);

CREATE FUNCTION conveyor.system_parameters_stamp() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  -- A no-op UPDATE leaves the stamp alone (and writes no history).
  IF (to_jsonb(NEW) - 'updated_at' - 'updated_by') IS DISTINCT FROM
     (to_jsonb(OLD) - 'updated_at' - 'updated_by') THEN
    NEW.updated_at := now();
    NEW.updated_by := conveyor.current_actor();
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER system_parameters_stamp
  BEFORE UPDATE ON conveyor.system_parameters
  FOR EACH ROW EXECUTE FUNCTION conveyor.system_parameters_stamp();

-- Copies every real change to the history and announces it on the
-- 'parameters' topic, so services reload without a restart.
CREATE FUNCTION conveyor.record_system_parameters_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_old  jsonb := to_jsonb(OLD) - 'id' - 'updated_at' - 'updated_by';
  v_new  jsonb := to_jsonb(NEW) - 'id' - 'updated_at' - 'updated_by';
  v_keys text[];
BEGIN
  SELECT coalesce(array_agg(n.key ORDER BY n.key), '{}') INTO v_keys
  FROM jsonb_each(v_new) n
  WHERE n.value IS DISTINCT FROM v_old -> n.key;

  IF cardinality(v_keys) = 0 THEN
    RETURN NULL;
  END IF;

  INSERT INTO conveyor.system_parameters_history (changed_by, old_values, new_values, changed_keys)
  VALUES (NEW.updated_by, v_old, v_new, v_keys);

  INSERT INTO conveyor.outbox (topic, key, type, subject, payload)
  VALUES ('parameters', 'system_parameters', 'io.conveyor.parameters.changed', 'system_parameters',
          jsonb_build_object(
            'schema_version', 1,
            'changed_keys', to_jsonb(v_keys),
            'new_values', v_new,
            'actor', NEW.updated_by,
            'at', NEW.updated_at));

  PERFORM pg_notify('conveyor_outbox', '');
  RETURN NULL;
END
$$;

CREATE TRIGGER system_parameters_record_change
  AFTER UPDATE ON conveyor.system_parameters
  FOR EACH ROW EXECUTE FUNCTION conveyor.record_system_parameters_change();

-- The one row must stay (the primary key and CHECK (id) refuse a second one).
CREATE FUNCTION conveyor.refuse_system_parameters_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION USING
    ERRCODE = 'restrict_violation',
    MESSAGE = 'conveyor.system_parameters has exactly one row: it cannot be deleted or truncated',
    HINT = 'change values with UPDATE conveyor.system_parameters SET ...';
END
$$;

CREATE TRIGGER system_parameters_refuse_delete
  BEFORE DELETE ON conveyor.system_parameters
  FOR EACH ROW EXECUTE FUNCTION conveyor.refuse_system_parameters_delete();

CREATE TRIGGER system_parameters_refuse_truncate
  BEFORE TRUNCATE ON conveyor.system_parameters
  FOR EACH STATEMENT EXECUTE FUNCTION conveyor.refuse_system_parameters_delete();
