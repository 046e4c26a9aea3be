-- Issue 12: who may do what through the REST API and the monitor.

-- One row per API token. Only a SHA-256 of the token is kept (hex): the
-- token itself is printed once by `conveyor token create` and never stored.
-- role: reader (every GET), submitter (plus submitting, and cancel/retry of
-- its own jobs), operator (everything). A token is valid while it is
-- neither revoked nor past expires_at; revoked rows stay, for the audit.
CREATE TABLE conveyor.api_token (
  name         text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
  token_sha256 text NOT NULL UNIQUE CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
  role         text NOT NULL CHECK (role IN ('reader', 'submitter', 'operator')),
  created_at   timestamptz NOT NULL DEFAULT now(),
  created_by   text NOT NULL DEFAULT conveyor.current_actor(),
  expires_at   timestamptz,
  revoked_at   timestamptz,
  last_used_at timestamptz
);

-- The monitor console's login sessions: POST /login with a token makes one,
-- and the browser holds only a random session id (cvs_...), whose SHA-256
-- is kept here, never the token. A session acts with its token's role and
-- ends at expires_at (at most 12 hours, never after the token's own
-- expiry), at logout, or when its token is revoked or expires.
CREATE TABLE conveyor.console_session (
  session_sha256 text PRIMARY KEY CHECK (session_sha256 ~ '^[0-9a-f]{64}$'),
  token_name     text NOT NULL REFERENCES conveyor.api_token (name) ON DELETE CASCADE,
  created_at     timestamptz NOT NULL DEFAULT now(),
  expires_at     timestamptz NOT NULL
);
CREATE INDEX console_session_expires_idx ON conveyor.console_session (expires_at);

-- Who submitted a job: the transaction's actor (`api:<token name>` for the
-- REST API, the CLI's or a scheduler's actor otherwise). A submitter token
-- may cancel and retry only the jobs whose submitted_by is its own actor.
-- A constant-free default on an existing table: existing rows get NULL.
ALTER TABLE conveyor.job ADD COLUMN submitted_by text;
ALTER TABLE conveyor.job ALTER COLUMN submitted_by SET DEFAULT conveyor.current_actor();

-- Hosts that webhook deliveries may reach (publication_endpoint_url and
-- every sink's url), checked before each delivery. NULL or empty: any host.
-- An entry is a host name ("hooks.example.org") or a suffix starting with
-- a dot (".example.org": every host under it); a port is not part of it.
ALTER TABLE conveyor.system_parameters
  ADD COLUMN sink_allowed_hosts text[]
  CHECK (array_position(sink_allowed_hosts, NULL) IS NULL);
