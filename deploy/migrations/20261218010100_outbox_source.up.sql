-- Issue 15, item 3: an event's CloudEvents `source` names the program that
-- made the change, not the service whose relay happened to publish it. The
-- outbox row records it when it is written: the session's application_name
-- (every Conveyor service sets its name there, e.g. conveyor-worker; the CLI
-- conveyor-cli; psql its own), else the database user. A column default, so
-- every trigger and statement that writes the outbox fills it unchanged.
-- application_name is at most 63 bytes (NAMEDATALEN), so the value is bounded.
-- Rows written before this migration keep NULL: the relay uses its own name.
ALTER TABLE conveyor.outbox ADD COLUMN source text;
ALTER TABLE conveyor.outbox
  ALTER COLUMN source SET DEFAULT coalesce(nullif(current_setting('application_name', true), ''), session_user::text);
