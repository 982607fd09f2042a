-- 0006: an Idempotency-Key's record belongs to its caller: the user and, on the
-- inference API, the access key that sent the request. An access key's records
-- are stored under its id and a slash before the client's key (the user's own
-- bearer token keeps the key as sent), so a retry is answered from a record only
-- for the caller that made it; another caller sending the same key and body
-- runs afresh, through every check of its own (a key's allowed models among
-- them). The key may now be that much longer; nothing else changes, so the
-- previous release reads and writes the table as before.
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_key_check;
ALTER TABLE idempotency_keys
    ADD CONSTRAINT idempotency_keys_key_check CHECK (length(key) BETWEEN 1 AND 292);
