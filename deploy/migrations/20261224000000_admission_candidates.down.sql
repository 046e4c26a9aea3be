-- Undoes 20261224000000_admission_candidates.up.sql.
DROP FUNCTION conveyor.admission_candidates(text[], text[], bigint);
