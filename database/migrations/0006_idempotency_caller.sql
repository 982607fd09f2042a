-- 0006: an Idempotency-Key's record belongs to its caller: the user and, on the
-- inference API, the access key that sent the request (NULL: the user's own
-- bearer token). A retry is answered from the record only for that caller;
-- another caller sending the same key and body runs afresh, under a record of
-- its own, through every check of its own (a key's allowed models among them).
-- Records made before this release belong to the user's own token.
ALTER TABLE idempotency_keys
    ADD COLUMN access_key_id uuid REFERENCES access_keys (id) ON DELETE CASCADE;
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
-- One record per user, key and caller; the token's records (NULL) are one caller too.
ALTER TABLE idempotency_keys
    ADD CONSTRAINT idempotency_keys_caller_key UNIQUE NULLS NOT DISTINCT (user_id, key, access_key_id);
