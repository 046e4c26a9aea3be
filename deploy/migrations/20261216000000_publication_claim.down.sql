ALTER TABLE conveyor.job DROP COLUMN publication_claimed_until, DROP COLUMN publication_claimed_by;
