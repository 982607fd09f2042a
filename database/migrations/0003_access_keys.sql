-- 0003: access keys, which programs use to call the inference API for a user.
--   - access_keys: only a SHA-256 of each key is stored (the key is 32 random
--     bytes, so a plain hash is enough and a lookup by it is a constant-time
--     compare); a revoked key keeps its row, for the ledger.
--   - transactions.model_id and .access_key_id: what a hold paid for and which
--     key made it; a release carries its hold's.
--   - deduct_user_balance checks the key (live, the user's, within its spend
--     limit) under the balance row's lock; add_user_funds adds each hold's final
--     charge to its key's `spent` when the hold is released.
--   - audit rows never hold a key's hash; recent_activity shows the key.

CREATE TABLE IF NOT EXISTS access_keys (
    id                 uuid           PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id            uuid           NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name               text           NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    key_hash           bytea          NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    last4              text           NOT NULL CHECK (length(last4) = 4),
    -- NULL: every model.
    allowed_models     text[],
    spend_limit        numeric(20,10) CHECK (spend_limit > 0),
    spend_limit_period text           CHECK (spend_limit_period IN ('day', 'month', 'total')),
    -- All-time charges, kept by add_user_funds alone.
    spent              numeric(20,10) NOT NULL DEFAULT 0 CHECK (spent >= 0),
    expires_at         timestamptz,
    created_at         timestamptz    NOT NULL DEFAULT now(),
    last_used_at       timestamptz,
    revoked_at         timestamptz,
    CONSTRAINT access_keys_limit_has_period CHECK ((spend_limit IS NULL) = (spend_limit_period IS NULL))
);
CREATE INDEX IF NOT EXISTS access_keys_user_live_idx
    ON access_keys (user_id, created_at DESC, id DESC) WHERE revoked_at IS NULL;

-- RESTRICT, not SET NULL: ledger rows are only ever inserted, never rewritten,
-- and a key is revoked rather than deleted, so nothing should ever need it.
ALTER TABLE transactions ADD COLUMN IF NOT EXISTS model_id text;
ALTER TABLE transactions ADD COLUMN IF NOT EXISTS access_key_id uuid
    REFERENCES access_keys (id) ON DELETE RESTRICT;
-- A key's charges in its period, summed under the balance lock on every hold.
CREATE INDEX IF NOT EXISTS transactions_access_key_idx
    ON transactions (access_key_id, created_at) WHERE access_key_id IS NOT NULL;

-- As release 1's, with key_hash among the columns no audit row holds.
CREATE OR REPLACE FUNCTION audit_row_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    secret_columns constant text[] := ARRAY['password_hash', 'encrypted_key', 'nonce', 'key_fingerprint',
                                            'key_hash'];
    bookkeeping_columns constant text[] := ARRAY['last_used_at', 'updated_at'];
    old_row jsonb;
    new_row jsonb;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        old_row := to_jsonb(OLD) - secret_columns;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_row := to_jsonb(NEW) - secret_columns;
    END IF;
    IF TG_OP = 'UPDATE' AND to_jsonb(OLD) - bookkeeping_columns = to_jsonb(NEW) - bookkeeping_columns THEN
        RETURN NULL;
    END IF;
    INSERT INTO audit_log (table_name, operation, row_id, acting_user_id, old_row, new_row)
    VALUES (
        TG_TABLE_NAME,
        TG_OP,
        coalesce(new_row, old_row) ->> TG_ARGV[0],
        nullif(current_setting('app.user_id', true), '')::uuid,
        old_row,
        new_row
    );
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER audit_access_keys AFTER INSERT OR UPDATE OR DELETE ON access_keys
    FOR EACH ROW EXECUTE FUNCTION audit_row_change('id');

-- p_model_id and p_access_key_id are stored on the hold. With a key, the hold is
-- refused ('invalid_access_key') unless the key is the user's, not revoked and
-- not expired, and ('spend_limit_reached') when the key's charges in its period
-- (UTC day, UTC month or all time: holds minus what was released from them) and
-- this hold would pass its spend limit. (The function gained parameters: the old
-- signature is dropped.)
DROP FUNCTION IF EXISTS deduct_user_balance(uuid, numeric, text, jsonb, numeric, numeric);
CREATE OR REPLACE FUNCTION deduct_user_balance(
    p_user_id       uuid,
    p_amount        numeric,
    p_description   text    DEFAULT '',
    p_metadata      jsonb   DEFAULT '{}',
    p_daily_limit   numeric DEFAULT NULL,
    p_call_timeout  numeric DEFAULT NULL,
    p_model_id      text    DEFAULT NULL,
    p_access_key_id uuid    DEFAULT NULL,
    OUT ok             boolean,
    OUT transaction_id bigint,
    OUT available      numeric,
    OUT reason         text
)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    balance     user_balance%ROWTYPE;
    access_key  access_keys%ROWTYPE;
    spent_today numeric;
    key_charged numeric;
BEGIN
    IF p_amount IS NULL OR p_amount <= 0 OR p_amount <> round(p_amount, 10) THEN
        RAISE EXCEPTION 'deduct_user_balance: amount must be positive with at most 10 decimals, got %', p_amount
            USING ERRCODE = 'check_violation';
    END IF;

    SELECT * INTO balance FROM user_balance WHERE user_id = p_user_id FOR UPDATE;
    IF NOT FOUND THEN
        ok := false; available := 0; reason := 'no_such_user';
        RETURN;
    END IF;
    available := balance.total_balance - balance.spent_balance;

    IF p_access_key_id IS NOT NULL THEN
        -- Every hold of a key is its user's, so the balance lock above serialises them.
        SELECT * INTO access_key FROM access_keys WHERE id = p_access_key_id AND user_id = p_user_id;
        IF NOT FOUND OR access_key.revoked_at IS NOT NULL OR access_key.expires_at <= now() THEN
            ok := false; reason := 'invalid_access_key';
            RETURN;
        END IF;
        IF access_key.spend_limit IS NOT NULL THEN
            SELECT coalesce(sum(hold.amount - coalesce(rel.amount, 0)), 0)
              INTO key_charged
              FROM transactions hold
              LEFT JOIN transactions rel
                ON rel.related_transaction_id = hold.id AND rel.type = 'release'
             WHERE hold.access_key_id = p_access_key_id
               AND hold.type = 'hold'
               AND hold.created_at >= CASE access_key.spend_limit_period
                       WHEN 'day' THEN date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                       WHEN 'month' THEN date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                       ELSE '-infinity'::timestamptz
                   END;
            IF key_charged + p_amount > access_key.spend_limit THEN
                ok := false; reason := 'spend_limit_reached';
                RETURN;
            END IF;
        END IF;
    END IF;

    IF p_daily_limit IS NOT NULL THEN
        -- Charged today = today's holds minus what was released from them.
        SELECT coalesce(sum(hold.amount - coalesce(rel.amount, 0)), 0)
          INTO spent_today
          FROM transactions hold
          LEFT JOIN transactions rel
            ON rel.related_transaction_id = hold.id AND rel.type = 'release'
         WHERE hold.user_id = p_user_id
           AND hold.type = 'hold'
           AND hold.created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
        IF spent_today + p_amount > p_daily_limit THEN
            ok := false; reason := 'spend_limit_reached';
            RETURN;
        END IF;
    END IF;

    IF available < p_amount THEN
        ok := false; reason := 'insufficient_funds';
        RETURN;
    END IF;

    UPDATE user_balance
       SET spent_balance = spent_balance + p_amount,
           held_balance = held_balance + p_amount,
           updated_at = now()
     WHERE user_id = p_user_id;
    available := available - p_amount;

    INSERT INTO transactions (user_id, type, amount, available_after, description, metadata, call_deadline,
                              model_id, access_key_id)
    VALUES (p_user_id, 'hold', p_amount, available, coalesce(p_description, ''), coalesce(p_metadata, '{}'),
            now() + make_interval(secs => p_call_timeout), p_model_id, p_access_key_id)
    RETURNING id INTO transaction_id;
    ok := true;
END;
$$;

-- As 0002's, and a release now carries its hold's model and key, and adds the
-- hold's final charge (its amount less what is returned) to the key's `spent`:
-- every path that closes a hold (settle, a failed call, reconcile) comes here.
CREATE OR REPLACE FUNCTION add_user_funds(
    p_user_id     uuid,
    p_amount      numeric,
    p_type        text    DEFAULT 'deposit',
    p_related_id  bigint  DEFAULT NULL,
    p_description text    DEFAULT '',
    p_metadata    jsonb   DEFAULT '{}',
    OUT ok             boolean,
    OUT transaction_id bigint,
    OUT available      numeric,
    OUT reason         text
)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    balance user_balance%ROWTYPE;
    hold    transactions%ROWTYPE;
BEGIN
    IF p_type NOT IN ('deposit', 'release') THEN
        RAISE EXCEPTION 'add_user_funds: unknown type %', p_type USING ERRCODE = 'check_violation';
    END IF;
    IF p_amount IS NULL OR p_amount < 0 OR (p_type = 'deposit' AND p_amount = 0)
       OR p_amount <> round(p_amount, 10) THEN
        RAISE EXCEPTION 'add_user_funds: bad amount % (at most 10 decimals)', p_amount
            USING ERRCODE = 'check_violation';
    END IF;
    -- Here current_user is this function's owner, the role that ran migrate.py and
    -- owns every object; session_user is the login that called. Only that owner
    -- (or a superuser, who is a member of every role) deposits above the cap, so
    -- the service's own login cannot create money. No honest caller asks for more
    -- than the cap, so this raises instead of answering ok = false.
    IF p_type = 'deposit' AND NOT pg_has_role(session_user, current_user, 'MEMBER')
       AND p_amount > coalesce((SELECT max_amount FROM deposit_cap), 0) THEN
        RAISE EXCEPTION 'add_user_funds: a deposit above the cap needs the owner'
            USING ERRCODE = 'insufficient_privilege', CONSTRAINT = 'deposit_cap';
    END IF;

    SELECT * INTO balance FROM user_balance WHERE user_id = p_user_id FOR UPDATE;
    IF NOT FOUND THEN
        ok := false; available := 0; reason := 'no_such_user';
        RETURN;
    END IF;
    available := balance.total_balance - balance.spent_balance;

    IF p_type = 'deposit' THEN
        UPDATE user_balance
           SET total_balance = total_balance + p_amount,
               updated_at = now()
         WHERE user_id = p_user_id;
    ELSE
        SELECT * INTO hold FROM transactions
         WHERE id = p_related_id AND user_id = p_user_id AND type = 'hold';
        IF NOT FOUND OR p_amount > hold.amount THEN
            ok := false; reason := 'invalid_hold';
            RETURN;
        END IF;
        IF EXISTS (SELECT 1 FROM transactions
                    WHERE related_transaction_id = p_related_id AND type = 'release') THEN
            ok := false; reason := 'already_released';
            RETURN;
        END IF;
        UPDATE user_balance
           SET spent_balance = spent_balance - p_amount,
               held_balance = held_balance - hold.amount,
               updated_at = now()
         WHERE user_id = p_user_id;
        IF hold.access_key_id IS NOT NULL THEN
            UPDATE access_keys
               SET spent = spent + hold.amount - p_amount,
                   last_used_at = now()
             WHERE id = hold.access_key_id;
        END IF;
    END IF;
    available := available + p_amount;

    INSERT INTO transactions (user_id, type, amount, available_after, related_transaction_id, description, metadata,
                              model_id, access_key_id)
    VALUES (p_user_id, p_type, p_amount, available, p_related_id, coalesce(p_description, ''),
            coalesce(p_metadata, '{}'), hold.model_id, hold.access_key_id)
    RETURNING id INTO transaction_id;
    ok := true;
END;
$$;

-- The activity gains the key a transaction was made with, and takes its model
-- from the transaction's own column (older holds kept it in their metadata).
DROP VIEW IF EXISTS recent_activity;  -- replaced whole: its columns change
CREATE VIEW recent_activity AS
SELECT t.user_id,
       'transaction'::text AS kind,
       t.id AS item_id,
       t.type AS action,
       t.amount,
       NULL::integer AS prompt_tokens,
       NULL::integer AS completion_tokens,
       t.metadata ->> 'session_id' AS session_id,
       coalesce(t.model_id, t.metadata ->> 'model_id') AS model_id,
       t.access_key_id,
       t.created_at
  FROM transactions t
UNION ALL
SELECT h.user_id,
       'message'::text,
       h.id,
       h.role,
       h.cost,
       h.prompt_tokens,
       h.completion_tokens,
       h.session_id::text,
       s.model_id,
       NULL::uuid,
       h.created_at
  FROM chat_history h
  JOIN chat_sessions s ON s.id = h.session_id;

-- Grants. The service may create, list and revoke keys and stamp their use;
-- `spent` moves only through add_user_funds.
REVOKE ALL ON access_keys FROM PUBLIC, app_user, analytics_user;
GRANT SELECT ON access_keys TO app_user;
GRANT INSERT (user_id, name, key_hash, last4, allowed_models, spend_limit, spend_limit_period, expires_at)
    ON access_keys TO app_user;
GRANT UPDATE (revoked_at, last_used_at) ON access_keys TO app_user;
REVOKE ALL ON FUNCTION deduct_user_balance(uuid, numeric, text, jsonb, numeric, numeric, text, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION deduct_user_balance(uuid, numeric, text, jsonb, numeric, numeric, text, uuid) TO app_user;
GRANT SELECT ON recent_activity TO app_user, analytics_user;
