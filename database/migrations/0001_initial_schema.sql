-- Q Marketplace schema, release 1: tables, views, procedures, triggers, indexes
-- and grants as first released. Frozen: migrate.py applies it once, to a new
-- database, and every later change is a numbered file in database/migrations/
-- (applied in order, each once, each recorded in schema_version).
--
-- Roles (created by migrate.py before this file runs):
--   the owner        runs migrate.py and owns every object
--   app_user         the service's login: data access only, no DDL; money moves only
--                    through the SECURITY DEFINER procedures below
--   analytics_user   reads the three views, nothing else

-- ---------------------------------------------------------------- bookkeeping

CREATE TABLE IF NOT EXISTS schema_version (
    version     integer     PRIMARY KEY,
    description text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------- accounts

CREATE TABLE IF NOT EXISTS users (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text        NOT NULL CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254),
    username      text        NOT NULL CHECK (length(username) BETWEEN 3 AND 32),
    password_hash text        NOT NULL,
    -- Bumped by logout and by refresh-token reuse: every token carrying an older
    -- generation stops working.
    token_generation integer  NOT NULL DEFAULT 0,
    is_active     boolean     NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS users_email_key ON users (email);
CREATE UNIQUE INDEX IF NOT EXISTS users_username_key ON users (lower(username));

CREATE TABLE IF NOT EXISTS refresh_tokens (
    jti         uuid        PRIMARY KEY,
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    generation  integer     NOT NULL,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    replaced_by uuid
);
CREATE INDEX IF NOT EXISTS refresh_tokens_user_idx ON refresh_tokens (user_id);
CREATE INDEX IF NOT EXISTS refresh_tokens_expires_idx ON refresh_tokens (expires_at);

-- Failed logins are counted per email whether or not an account exists, so a
-- lockout reveals nothing.
CREATE TABLE IF NOT EXISTS login_attempts (
    email        text        PRIMARY KEY,
    failures     integer     NOT NULL DEFAULT 0 CHECK (failures >= 0),
    window_start timestamptz NOT NULL DEFAULT now(),
    locked_until timestamptz
);

CREATE TABLE IF NOT EXISTS api_keys (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider        text        NOT NULL CHECK (provider IN ('openai', 'anthropic')),
    label           text        CHECK (length(label) <= 100),
    encrypted_key   bytea       NOT NULL,
    nonce           bytea       NOT NULL CHECK (length(nonce) = 12),
    encryption_kid  text        NOT NULL,
    key_fingerprint bytea       NOT NULL,
    last4           text        NOT NULL CHECK (length(last4) <= 4),
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_user_fingerprint_key ON api_keys (user_id, key_fingerprint);
CREATE INDEX IF NOT EXISTS api_keys_user_provider_idx ON api_keys (user_id, provider, created_at DESC);

-- ---------------------------------------------------------------- catalog

CREATE TABLE IF NOT EXISTS models (
    id                    text          PRIMARY KEY CHECK (id ~ '^[a-z0-9-]+/[A-Za-z0-9._:-]+$' AND length(id) <= 100),
    provider              text          NOT NULL CHECK (provider IN ('local', 'openai', 'anthropic')),
    name                  text          NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    description           text          NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    context_window        integer       NOT NULL CHECK (context_window > 0),
    max_output_tokens     integer       NOT NULL CHECK (max_output_tokens > 0),
    input_price_per_mtok  numeric(20,10) NOT NULL CHECK (input_price_per_mtok >= 0),
    output_price_per_mtok numeric(20,10) NOT NULL CHECK (output_price_per_mtok >= 0),
    prices_as_of          date          NOT NULL,
    capabilities          text[]        NOT NULL DEFAULT '{}',
    is_active             boolean       NOT NULL DEFAULT true,
    created_at            timestamptz   NOT NULL DEFAULT now(),
    updated_at            timestamptz   NOT NULL DEFAULT now(),
    CHECK (split_part(id, '/', 1) = provider)
);
CREATE INDEX IF NOT EXISTS models_provider_idx ON models (provider) WHERE is_active;

CREATE TABLE IF NOT EXISTS model_ratings (
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    model_id   text        NOT NULL REFERENCES models (id),
    rating     smallint    NOT NULL CHECK (rating BETWEEN 1 AND 5),
    review     text        CHECK (length(review) <= 2000),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, model_id)
);
CREATE INDEX IF NOT EXISTS model_ratings_model_idx ON model_ratings (model_id);

-- Usage is counted per model, day and bucket: a settle picks a bucket at random,
-- so concurrent calls on one model do not queue on a single hot row.
CREATE TABLE IF NOT EXISTS model_usage_stats (
    model_id          text           NOT NULL REFERENCES models (id),
    day               date           NOT NULL,
    bucket            smallint       NOT NULL CHECK (bucket BETWEEN 0 AND 15),
    request_count     bigint         NOT NULL DEFAULT 0 CHECK (request_count >= 0),
    prompt_tokens     bigint         NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens bigint         NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    total_cost        numeric(20,10) NOT NULL DEFAULT 0 CHECK (total_cost >= 0),
    PRIMARY KEY (model_id, day, bucket)
);

-- ---------------------------------------------------------------- money

CREATE TABLE IF NOT EXISTS user_balance (
    user_id       uuid           PRIMARY KEY REFERENCES users (id),
    total_balance numeric(20,10) NOT NULL DEFAULT 0 CHECK (total_balance >= 0),
    spent_balance numeric(20,10) NOT NULL DEFAULT 0 CHECK (spent_balance >= 0),
    -- The part of spent_balance in holds not yet settled, kept by the procedures
    -- so reading a balance never scans the ledger.
    held_balance  numeric(20,10) NOT NULL DEFAULT 0 CHECK (held_balance >= 0),
    currency      char(3)        NOT NULL DEFAULT 'USD',
    updated_at    timestamptz    NOT NULL DEFAULT now(),
    CONSTRAINT user_balance_available_non_negative CHECK (total_balance - spent_balance >= 0),
    CONSTRAINT user_balance_held_within_spent CHECK (held_balance <= spent_balance)
);

-- The ledger. Rows are only ever inserted (by the procedures below); nothing
-- references a chat session or message with a foreign-key action, so deleting
-- chat history can never delete or rewrite a transaction.
CREATE TABLE IF NOT EXISTS transactions (
    id                     bigint         GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id                uuid           NOT NULL REFERENCES users (id),
    type                   text           NOT NULL CHECK (type IN ('deposit', 'hold', 'release')),
    amount                 numeric(20,10) NOT NULL CHECK (amount >= 0),
    available_after        numeric(20,10) NOT NULL CHECK (available_after >= 0),
    related_transaction_id bigint         REFERENCES transactions (id),
    description            text           NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    metadata               jsonb          NOT NULL DEFAULT '{}',
    created_at             timestamptz    NOT NULL DEFAULT now(),
    CHECK (type = 'release' OR amount > 0),
    CHECK ((type = 'release') = (related_transaction_id IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS transactions_user_idx ON transactions (user_id, id DESC);
CREATE INDEX IF NOT EXISTS transactions_user_type_idx ON transactions (user_id, type, id DESC);
-- At most one release per hold: settle and reconcile can never both return a hold.
CREATE UNIQUE INDEX IF NOT EXISTS transactions_one_release_per_hold
    ON transactions (related_transaction_id) WHERE type = 'release';
CREATE INDEX IF NOT EXISTS transactions_holds_idx ON transactions (created_at) WHERE type = 'hold';

-- Idempotency records: in progress, then done with the stored response (kept as
-- text, so a replay is byte for byte the first answer). No lock is held while
-- the request runs; an in-progress record left by a crash goes stale and may be
-- taken over.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    user_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key             text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash    text        NOT NULL,
    state           text        NOT NULL DEFAULT 'in_progress' CHECK (state IN ('in_progress', 'done')),
    response_status integer,
    response_body   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created_idx ON idempotency_keys (created_at);

-- ---------------------------------------------------------------- chat

CREATE TABLE IF NOT EXISTS chat_sessions (
    id                      uuid           PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                 uuid           NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    model_id                text           NOT NULL REFERENCES models (id),
    title                   text           NOT NULL DEFAULT '' CHECK (length(title) <= 200),
    message_count           integer        NOT NULL DEFAULT 0 CHECK (message_count >= 0),
    total_prompt_tokens     bigint         NOT NULL DEFAULT 0 CHECK (total_prompt_tokens >= 0),
    total_completion_tokens bigint         NOT NULL DEFAULT 0 CHECK (total_completion_tokens >= 0),
    total_cost              numeric(20,10) NOT NULL DEFAULT 0 CHECK (total_cost >= 0),
    created_at              timestamptz    NOT NULL DEFAULT now(),
    updated_at              timestamptz    NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS chat_sessions_user_idx ON chat_sessions (user_id, created_at DESC, id DESC);

CREATE TABLE IF NOT EXISTS chat_history (
    id                bigint         GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id        uuid           NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    user_id           uuid           NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role              text           NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content           text           NOT NULL,
    prompt_tokens     integer        NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens integer        NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    cost              numeric(20,10) NOT NULL DEFAULT 0 CHECK (cost >= 0),
    transaction_id    bigint,
    created_at        timestamptz    NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS chat_history_session_idx ON chat_history (session_id, id);
CREATE INDEX IF NOT EXISTS chat_history_user_idx ON chat_history (user_id, id DESC);

-- ---------------------------------------------------------------- preferences

CREATE TABLE IF NOT EXISTS user_preferences (
    user_id              uuid           PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    default_model_id     text           REFERENCES models (id),
    preferred_providers  text[]         NOT NULL DEFAULT '{}',
    daily_spend_limit    numeric(20,10) CHECK (daily_spend_limit >= 0),
    max_cost_per_message numeric(20,10) CHECK (max_cost_per_message >= 0),
    theme                text           NOT NULL DEFAULT 'system' CHECK (theme IN ('system', 'light', 'dark')),
    updated_at           timestamptz    NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------- audit

CREATE TABLE IF NOT EXISTS audit_log (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name     text        NOT NULL,
    operation      text        NOT NULL CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE')),
    row_id         text        NOT NULL,
    acting_user_id uuid,
    old_row        jsonb,
    new_row        jsonb,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS audit_log_table_row_idx ON audit_log (table_name, row_id);
CREATE INDEX IF NOT EXISTS audit_log_created_idx ON audit_log (created_at);

-- Writes one audit row per changed row. TG_ARGV[0] names the column that
-- identifies the row; secret columns never reach the log (a change to one, such
-- as a new password hash, is still recorded, without the values), and an update
-- that only stamps bookkeeping columns (a key's last use) writes none.
CREATE OR REPLACE FUNCTION audit_row_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    secret_columns constant text[] := ARRAY['password_hash', 'encrypted_key', 'nonce', 'key_fingerprint'];
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

DO $$
DECLARE
    audited constant text[][] := ARRAY[
        ARRAY['users', 'id'],
        ARRAY['api_keys', 'id'],
        ARRAY['user_balance', 'user_id'],
        ARRAY['transactions', 'id'],
        ARRAY['user_preferences', 'user_id'],
        ARRAY['model_ratings', 'user_id']
    ];
    entry text[];
BEGIN
    FOREACH entry SLICE 1 IN ARRAY audited LOOP
        EXECUTE format(
            'CREATE OR REPLACE TRIGGER audit_%1$s AFTER INSERT OR UPDATE OR DELETE ON %1$I '
            'FOR EACH ROW EXECUTE FUNCTION audit_row_change(%2$L)',
            entry[1], entry[2]);
    END LOOP;
END;
$$;

-- Keeps updated_at honest without every UPDATE having to remember it.
CREATE OR REPLACE FUNCTION touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

DO $$
DECLARE
    touched constant text[] := ARRAY['users', 'models', 'model_ratings', 'chat_sessions', 'user_preferences'];
    table_name text;
BEGIN
    FOREACH table_name IN ARRAY touched LOOP
        EXECUTE format(
            'CREATE OR REPLACE TRIGGER touch_%1$s BEFORE UPDATE ON %1$I '
            'FOR EACH ROW EXECUTE FUNCTION touch_updated_at()', table_name);
    END LOOP;
END;
$$;

-- A user's balance row is made with the user, so every money procedure can lock it.
CREATE OR REPLACE FUNCTION create_user_balance() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO user_balance (user_id) VALUES (NEW.id);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER users_create_balance AFTER INSERT ON users
    FOR EACH ROW EXECUTE FUNCTION create_user_balance();

-- ---------------------------------------------------------------- money procedures
-- Both run inside their caller's transaction and lock the user's balance row
-- first, so concurrent calls for one user serialise there. They report a refused
-- movement through ok = false instead of raising, so the caller's transaction
-- lives on. reason is one of: NULL (ok), 'insufficient_funds',
-- 'spend_limit_reached', 'no_such_user', 'invalid_hold', 'already_released'.

CREATE OR REPLACE FUNCTION deduct_user_balance(
    p_user_id     uuid,
    p_amount      numeric,
    p_description text    DEFAULT '',
    p_metadata    jsonb   DEFAULT '{}',
    p_daily_limit numeric DEFAULT NULL,
    OUT ok             boolean,
    OUT transaction_id bigint,
    OUT available      numeric,
    OUT reason         text
)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    balance   user_balance%ROWTYPE;
    spent_today numeric;
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

    INSERT INTO transactions (user_id, type, amount, available_after, description, metadata)
    VALUES (p_user_id, 'hold', p_amount, available, coalesce(p_description, ''), coalesce(p_metadata, '{}'))
    RETURNING id INTO transaction_id;
    ok := true;
END;
$$;

-- p_type 'deposit' raises total_balance; 'release' returns the unused part of
-- the hold p_related_id (at most its amount, at most once) by lowering spent_balance.
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
    END IF;
    available := available + p_amount;

    INSERT INTO transactions (user_id, type, amount, available_after, related_transaction_id, description, metadata)
    VALUES (p_user_id, p_type, p_amount, available, p_related_id, coalesce(p_description, ''), coalesce(p_metadata, '{}'))
    RETURNING id INTO transaction_id;
    ok := true;
END;
$$;

-- Everything a chat call needs, in one round trip (and with its plan cached
-- per connection): the user's token generation (no row: no such active user),
-- the session's model, prices and limits (session_id NULL: not the user's
-- session), the call's max tokens (asked for, else the model's default capped at
-- p_default_max_tokens), the user's newest sealed key for the provider, and the
-- newest history whose estimated tokens fit the context window beside
-- p_fixed_tokens (the request's overhead and the new message), and the user's
-- spending limits.
-- (Dropped first: a change to what it returns cannot be made in place.)
DROP FUNCTION IF EXISTS chat_call_context(uuid, uuid, integer, integer, integer, integer);
CREATE FUNCTION chat_call_context(
    p_user_id            uuid,
    p_session_id         uuid,
    p_max_tokens         integer,
    p_default_max_tokens integer,
    p_fixed_tokens       integer,
    p_message_overhead   integer
)
RETURNS TABLE (token_generation integer, session_id uuid, model_id text, provider text, context_window integer,
               max_output_tokens integer, input_price_per_mtok numeric, output_price_per_mtok numeric,
               is_active boolean, max_tokens integer, api_key_id uuid, encryption_kid text, nonce bytea,
               encrypted_key bytea, history json, daily_spend_limit numeric, max_cost_per_message numeric)
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH target AS (
        SELECT s.id AS session_id, m.id AS model_id, m.provider, m.context_window, m.max_output_tokens,
               m.input_price_per_mtok, m.output_price_per_mtok, m.is_active,
               coalesce(p_max_tokens, least(m.max_output_tokens, p_default_max_tokens)) AS max_tokens
          FROM chat_sessions s
          JOIN models m ON m.id = s.model_id
         WHERE s.id = p_session_id
           AND s.user_id = p_user_id
    ), history AS (
        SELECT h.id, h.role, h.content,
               sum(octet_length(h.content) + p_message_overhead) OVER (ORDER BY h.id DESC) AS running
          FROM chat_history h
         WHERE h.session_id = p_session_id
    )
    SELECT u.token_generation, t.session_id, t.model_id, t.provider, t.context_window, t.max_output_tokens,
           t.input_price_per_mtok, t.output_price_per_mtok, t.is_active, t.max_tokens,
           k.id, k.encryption_kid, k.nonce, k.encrypted_key,
           (SELECT coalesce(json_agg(json_build_object('role', h.role, 'content', h.content) ORDER BY h.id), '[]')
              FROM history h
             WHERE h.running <= t.context_window - t.max_tokens - p_fixed_tokens),
           pref.daily_spend_limit, pref.max_cost_per_message
      FROM users u
      LEFT JOIN target t ON true
      LEFT JOIN user_preferences pref ON pref.user_id = u.id
      LEFT JOIN LATERAL (SELECT a.id, a.encryption_kid, a.nonce, a.encrypted_key
                           FROM api_keys a
                          WHERE a.user_id = u.id
                            AND a.provider = t.provider
                          ORDER BY a.created_at DESC, a.id
                          LIMIT 1) k ON true
     WHERE u.id = p_user_id
       AND u.is_active;
END;
$$;

-- Settles a chat call in one round trip: returns the unused part of its hold
-- (at most once: if reconcile already returned all of it, nothing is charged
-- and charged = false), saves the user's message and the answer with their
-- tokens and cost, and adds them to the session's and the model's counters.
CREATE OR REPLACE FUNCTION settle_chat_call(
    p_user_id           uuid,
    p_session_id        uuid,
    p_model_id          text,
    p_api_key_id        uuid,
    p_hold_id           bigint,
    p_hold_amount       numeric,
    p_question          text,
    p_prompt_tokens     integer,
    p_input_cost        numeric,
    p_answer            text,
    p_completion_tokens integer,
    p_output_cost       numeric,
    p_usage_bucket      smallint
)
RETURNS TABLE (charged boolean, user_message_id bigint, assistant_message_id bigint, created_at timestamptz,
               input_cost numeric, output_cost numeric, total_balance numeric, spent_balance numeric,
               held_balance numeric, available_balance numeric, currency char(3))
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    released record;
    stamp timestamptz := now();
BEGIN
    SELECT * INTO released
      FROM add_user_funds(p_user_id, p_hold_amount - p_input_cost - p_output_cost, 'release', p_hold_id,
                          'Unused part of the hold', jsonb_build_object('kind', 'settle'));
    charged := released.ok;
    input_cost := CASE WHEN charged THEN p_input_cost ELSE 0 END;
    output_cost := CASE WHEN charged THEN p_output_cost ELSE 0 END;

    INSERT INTO chat_history (session_id, user_id, role, content, prompt_tokens, cost, transaction_id, created_at)
    VALUES (p_session_id, p_user_id, 'user', p_question, p_prompt_tokens, input_cost, p_hold_id, stamp)
    RETURNING id INTO user_message_id;
    INSERT INTO chat_history (session_id, user_id, role, content, completion_tokens, cost, transaction_id, created_at)
    VALUES (p_session_id, p_user_id, 'assistant', p_answer, p_completion_tokens, output_cost, p_hold_id, stamp)
    RETURNING id INTO assistant_message_id;
    created_at := stamp;

    UPDATE chat_sessions
       SET message_count = message_count + 2,
           total_prompt_tokens = total_prompt_tokens + p_prompt_tokens,
           total_completion_tokens = total_completion_tokens + p_completion_tokens,
           total_cost = total_cost + input_cost + output_cost
     WHERE id = p_session_id;

    INSERT INTO model_usage_stats AS stats (model_id, day, bucket, request_count, prompt_tokens,
                                            completion_tokens, total_cost)
    VALUES (p_model_id, (stamp AT TIME ZONE 'UTC')::date, p_usage_bucket, 1, p_prompt_tokens,
            p_completion_tokens, input_cost + output_cost)
    ON CONFLICT (model_id, day, bucket) DO UPDATE
       SET request_count = stats.request_count + 1,
           prompt_tokens = stats.prompt_tokens + EXCLUDED.prompt_tokens,
           completion_tokens = stats.completion_tokens + EXCLUDED.completion_tokens,
           total_cost = stats.total_cost + EXCLUDED.total_cost;

    IF p_api_key_id IS NOT NULL THEN
        UPDATE api_keys SET last_used_at = stamp WHERE id = p_api_key_id;
    END IF;

    SELECT b.total_balance, b.spent_balance, b.held_balance, b.total_balance - b.spent_balance, b.currency
      INTO total_balance, spent_balance, held_balance, available_balance, currency
      FROM user_balance b
     WHERE b.user_id = p_user_id;
    RETURN NEXT;
END;
$$;

-- ---------------------------------------------------------------- views
-- No view carries message text, an email or a secret.

CREATE OR REPLACE VIEW user_with_balance AS
SELECT u.id,
       u.username,
       u.is_active,
       u.created_at,
       b.total_balance,
       b.spent_balance,
       b.total_balance - b.spent_balance AS available_balance,
       b.held_balance,
       b.currency
  FROM users u
  JOIN user_balance b ON b.user_id = u.id;

CREATE OR REPLACE VIEW model_popularity AS
SELECT m.id AS model_id,
       m.provider,
       m.name,
       coalesce(sum(s.request_count), 0)::bigint AS request_count,
       coalesce(sum(s.prompt_tokens), 0)::bigint AS prompt_tokens,
       coalesce(sum(s.completion_tokens), 0)::bigint AS completion_tokens,
       coalesce(sum(s.total_cost), 0) AS total_cost,
       max(s.day) AS last_used_day,
       rank() OVER (ORDER BY coalesce(sum(s.request_count), 0) DESC) AS popularity_rank
  FROM models m
  LEFT JOIN model_usage_stats s ON s.model_id = m.id
 GROUP BY m.id, m.provider, m.name;

DROP VIEW IF EXISTS recent_activity;  -- replaced whole: its column types may change
CREATE VIEW recent_activity AS
SELECT t.user_id,
       'transaction'::text AS kind,
       t.id AS item_id,
       t.type AS action,
       t.amount,
       NULL::integer AS prompt_tokens,
       NULL::integer AS completion_tokens,
       t.metadata ->> 'session_id' AS session_id,
       t.metadata ->> 'model_id' AS model_id,
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
       h.created_at
  FROM chat_history h
  JOIN chat_sessions s ON s.id = h.session_id;

-- ---------------------------------------------------------------- grants

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
REVOKE ALL ON FUNCTION deduct_user_balance(uuid, numeric, text, jsonb, numeric) FROM PUBLIC;
REVOKE ALL ON FUNCTION add_user_funds(uuid, numeric, text, bigint, text, jsonb) FROM PUBLIC;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO app_user, analytics_user;

GRANT SELECT, INSERT, UPDATE ON users, refresh_tokens, login_attempts, idempotency_keys,
    chat_sessions, model_ratings, model_usage_stats, user_preferences TO app_user;
GRANT DELETE ON refresh_tokens, login_attempts, idempotency_keys, chat_sessions, model_ratings TO app_user;
GRANT SELECT, INSERT, UPDATE, DELETE ON api_keys TO app_user;
GRANT SELECT, INSERT, DELETE ON chat_history TO app_user;
-- Balances and the ledger change only through the procedures.
GRANT SELECT ON user_balance, transactions, models, schema_version TO app_user;
GRANT SELECT ON user_with_balance, model_popularity, recent_activity TO app_user;
GRANT EXECUTE ON FUNCTION deduct_user_balance(uuid, numeric, text, jsonb, numeric) TO app_user;
GRANT EXECUTE ON FUNCTION add_user_funds(uuid, numeric, text, bigint, text, jsonb) TO app_user;
REVOKE ALL ON FUNCTION chat_call_context(uuid, uuid, integer, integer, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chat_call_context(uuid, uuid, integer, integer, integer, integer) TO app_user;
REVOKE ALL ON FUNCTION settle_chat_call(uuid, uuid, text, uuid, bigint, numeric, text, integer, numeric, text,
                                       integer, numeric, smallint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION settle_chat_call(uuid, uuid, text, uuid, bigint, numeric, text, integer, numeric, text,
                                           integer, numeric, smallint) TO app_user;

GRANT SELECT ON user_with_balance, model_popularity, recent_activity TO analytics_user;
