-- Issue 14, item 3: only the indexes the hot path needs on conveyor.job.
-- Every index is written on each non-HOT update of a job (a partial one when
-- the new row matches its predicate), and every hot-path update changes
-- status, so each index dropped is one index write less per status change.
--
-- Each job query of the services, the reconciler, the alerts and retention
-- was EXPLAINed on a database of 6,000 jobs; these three served none that
-- another index does not serve as well:
-- * job_canceled_at_idx (canceled_at) WHERE canceled_at IS NOT NULL: the
--   reconciler's pending cancels use job_cancel_pending_idx, its restarts
--   job_restart_requested_idx.
-- * job_configured_depends_on_idx (GIN, configured only): job_depends_on_idx
--   (GIN, every job, kept for retention) answers the same `depends_on @>`.
-- * job_type_status_idx (job_type, status), the only full two-column index:
--   counts of queued and started jobs use job_active_idx; a type's jobs
--   (CLI lists) the idempotency key's (job_type, ...) index.
--
-- Status updates cannot become HOT while any index names status, even in a
-- partial index's predicate (PostgreSQL compares every column an index
-- references), and the claims need the partial status indexes.

DROP INDEX conveyor.job_canceled_at_idx;
DROP INDEX conveyor.job_configured_depends_on_idx;
DROP INDEX conveyor.job_type_status_idx;
