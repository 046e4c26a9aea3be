-- Undoes 20270103000000_publication_failures_per_run.up.sql: publication of
-- that version counts every failed delivery in the history.
DROP FUNCTION conveyor.publication_failures(bigint, text);
