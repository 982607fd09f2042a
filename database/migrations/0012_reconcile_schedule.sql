-- 0012: the reconcile schedule, kept in PostgreSQL rather than in each worker,
-- so that every worker of every instance shares it.
--   - next_run_at: each RECONCILE_INTERVAL one worker claims the run, and the
--     others leave the ledger alone until the next one is due.
--   - reconciled_until: when the last run that worked started; every hold that
--     came due before it has been returned. A run reads back to it, however
--     long ago that was (the database down, every worker restarted since) and
--     whoever ran it; before the first run, the whole ledger.
-- No row until the first claim makes it.
CREATE TABLE reconcile_schedule (
    only_row         boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    next_run_at      timestamptz NOT NULL,
    reconciled_until timestamptz
);

GRANT SELECT, INSERT, UPDATE ON reconcile_schedule TO app_user;
