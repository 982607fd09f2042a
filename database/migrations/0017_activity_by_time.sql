-- 0017: the activity feed's entries (`?view=entries`), newest first by time,
-- read a page by index at any ledger size: each half of the feed (ledger
-- entries, chat messages) picks its page's rows by (user, time, id) before
-- any row is built. Built in the release's transaction, so writes to these
-- tables wait while it is built (seconds per million rows).
CREATE INDEX transactions_user_time_idx ON transactions (user_id, created_at, id);
CREATE INDEX chat_history_user_time_idx ON chat_history (user_id, created_at, id);
