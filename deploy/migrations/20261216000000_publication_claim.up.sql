-- Publication delivers outside the row-locking transaction (issue 14, item 4):
-- conveyor-publication claims a batch of processed jobs by setting
-- publication_claimed_until (and _by, its instance id), commits, delivers
-- (webhooks on kept-alive connections), then records each outcome with an
-- update conditional on the job still being processed in the same attempt.
-- A claim never recorded (the publisher died mid-delivery) ends at that time,
-- or at once when the same instance starts again, and the job is delivered
-- again: at-least-once, as before. No index: the hot path never searches
-- by these columns, and updates that touch no indexed column stay HOT.
ALTER TABLE conveyor.job
  ADD COLUMN publication_claimed_until timestamptz,
  ADD COLUMN publication_claimed_by text;

GRANT UPDATE (publication_claimed_until, publication_claimed_by) ON conveyor.job TO conveyor_publication;
