-- 0017: the activity feed's entries (`?view=entries`), newest first by time,
-- read a page by index at any ledger size: each half of the feed (ledger
-- entries, chat messages) picks its page's rows by (user, time, id) before
-- any row is built. Built in the release's transaction, so writes to these
-- tables wait while it is built (seconds per million rows).
CREATE INDEX transactions_user_time_idx ON transactions (user_id, created_at, id);
CREATE INDEX chat_history_user_time_idx ON chat_history (user_id, created_at, id);
-- The usage report reads its daily rollups now (0015), and what still reads a
-- user's releases by time (flask usage verify, the rollups' recount) finds
-- them through the index above: one index fewer to write at every release.
DROP INDEX transactions_user_releases_idx;
