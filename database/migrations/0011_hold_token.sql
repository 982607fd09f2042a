-- 0011: a hold carries a random token that only its own call knows.
--   - deduct_user_balance stores it (transactions.hold_token, unique); asked
--     again with the same token it answers the hold already made, so the hold
--     can run as one statement committed in its own round trip and be sent
--     again when its connection died before the answer came back.
--   - add_user_funds, given a token, releases only the hold that carries it,
--     and settle_chat_call passes its call's. After a database crash the last
--     holds may be lost and their ids handed out again; a settle of a lost
--     hold then finds another call's hold under its id, with another token,
--     and closes nothing (the call goes unbilled, as it was never held).
--   - settle_chat_call, sent again for a hold it has charged, answers that
--     settle instead of writing anything twice: a call with no answer to
--     keep settles in one statement committed in its own round trip.
--   Reconcile still releases a hold by its id alone: it reads the hold it
--   releases from the ledger.
-- And live_access_key: the lookup each /v1 call starts with, in PL/pgSQL, so
-- its plan is made once per connection instead of once per call (a pooler in
-- transaction mode cannot keep prepared statements for us).

ALTER TABLE transactions ADD COLUMN hold_token uuid
    CONSTRAINT transactions_hold_token_check CHECK (hold_token IS NULL OR type = 'hold');
CREATE UNIQUE INDEX transactions_hold_token_key ON transactions (hold_token) WHERE hold_token IS NOT NULL;

DROP FUNCTION add_user_funds(uuid, numeric, text, bigint, text, jsonb);
DROP FUNCTION deduct_user_balance(uuid, numeric, text, jsonb, numeric, numeric, text, uuid);
DROP FUNCTION settle_chat_call(uuid, uuid, text, uuid, bigint, numeric, text, integer, numeric, text, integer,
                               numeric, smallint, jsonb, integer, integer, integer, integer, numeric, numeric, text);

CREATE FUNCTION add_user_funds(p_user_id uuid, p_amount numeric, p_type text DEFAULT 'deposit'::text, p_related_id bigint DEFAULT NULL::bigint, p_description text DEFAULT ''::text, p_metadata jsonb DEFAULT '{}'::jsonb, p_hold_token uuid DEFAULT NULL::uuid, OUT ok boolean, OUT transaction_id bigint, OUT available numeric, OUT reason text) RETURNS record
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
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
        -- A caller that knows the hold by its token (the call that made it)
        -- closes only that hold: an id a crash lost and handed out again is
        -- another call's hold, with another token.
        IF NOT FOUND OR p_amount > hold.amount
           OR (p_hold_token IS NOT NULL AND hold.hold_token IS DISTINCT FROM p_hold_token) THEN
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

CREATE FUNCTION deduct_user_balance(p_user_id uuid, p_amount numeric, p_description text DEFAULT ''::text, p_metadata jsonb DEFAULT '{}'::jsonb, p_daily_limit numeric DEFAULT NULL::numeric, p_call_timeout numeric DEFAULT NULL::numeric, p_model_id text DEFAULT NULL::text, p_access_key_id uuid DEFAULT NULL::uuid, p_hold_token uuid DEFAULT NULL::uuid, OUT ok boolean, OUT transaction_id bigint, OUT available numeric, OUT reason text) RETURNS record
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
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

    -- The same call's hold asked for again (its first answer was lost with its
    -- connection): the hold it made, not a second one.
    IF p_hold_token IS NOT NULL THEN
        SELECT id INTO transaction_id FROM transactions
         WHERE hold_token = p_hold_token AND user_id = p_user_id AND type = 'hold';
        IF FOUND THEN
            ok := true; reason := 'held_before';
            RETURN;
        END IF;
    END IF;

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
                              model_id, access_key_id, hold_token)
    VALUES (p_user_id, 'hold', p_amount, available, coalesce(p_description, ''), coalesce(p_metadata, '{}'),
            now() + make_interval(secs => p_call_timeout), p_model_id, p_access_key_id, p_hold_token)
    RETURNING id INTO transaction_id;
    ok := true;
END;
$$;

CREATE FUNCTION settle_chat_call(p_user_id uuid, p_session_id uuid, p_model_id text, p_api_key_id uuid, p_hold_id bigint, p_hold_amount numeric, p_question text, p_prompt_tokens integer, p_input_cost numeric, p_answer text, p_completion_tokens integer, p_output_cost numeric, p_usage_bucket smallint, p_release_metadata jsonb, p_cached_input_tokens integer, p_cache_write_tokens integer, p_cache_write_1h_tokens integer, p_reasoning_tokens integer, p_cached_input_cost numeric, p_cache_write_cost numeric, p_served_provider text, p_hold_token uuid DEFAULT NULL::uuid) RETURNS TABLE(charged boolean, saved boolean, user_message_id bigint, assistant_message_id bigint, created_at timestamp with time zone, input_cost numeric, cached_input_cost numeric, cache_write_cost numeric, output_cost numeric, total_balance numeric, spent_balance numeric, held_balance numeric, available_balance numeric, currency character)
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    AS $$
DECLARE
    released record;
    done call_charges%ROWTYPE;
    stamp timestamptz := now();
    prompt_cost numeric;
BEGIN
    -- The same settle sent again (its connection died before its answer came
    -- back): the answer of the settle already made, and nothing written twice.
    SELECT c.* INTO done
      FROM call_charges c
      JOIN transactions h ON h.id = c.hold_id
     WHERE c.hold_id = p_hold_id AND h.user_id = p_user_id AND h.hold_token IS NOT DISTINCT FROM p_hold_token;
    IF FOUND THEN
        charged := true;
        input_cost := done.input_cost; cached_input_cost := done.cached_input_cost;
        cache_write_cost := done.cache_write_cost; output_cost := done.output_cost;
        SELECT min(m.id) FILTER (WHERE m.role = 'user'), min(m.id) FILTER (WHERE m.role = 'assistant')
          INTO user_message_id, assistant_message_id
          FROM chat_history m
         WHERE m.session_id = p_session_id AND m.transaction_id = p_hold_id;
        saved := user_message_id IS NOT NULL;
        SELECT r.created_at INTO created_at
          FROM transactions r
         WHERE r.related_transaction_id = p_hold_id AND r.type = 'release';
        SELECT b.total_balance, b.spent_balance, b.held_balance, b.total_balance - b.spent_balance, b.currency
          INTO total_balance, spent_balance, held_balance, available_balance, currency
          FROM user_balance b
         WHERE b.user_id = p_user_id;
        RETURN NEXT;
        RETURN;
    END IF;

    -- Locked until this commits, so a concurrent delete of the session waits
    -- (and takes the messages with it) or has already happened (none are saved).
    PERFORM 1 FROM chat_sessions s WHERE s.id = p_session_id AND s.user_id = p_user_id FOR NO KEY UPDATE;
    saved := FOUND;

    SELECT * INTO released
      FROM add_user_funds(p_user_id,
                          p_hold_amount - p_input_cost - p_cached_input_cost - p_cache_write_cost - p_output_cost,
                          'release', p_hold_id, 'Unused part of the hold',
                          coalesce(p_release_metadata, '{"kind": "settle"}'), p_hold_token);
    charged := released.ok;
    input_cost := CASE WHEN charged THEN p_input_cost ELSE 0 END;
    cached_input_cost := CASE WHEN charged THEN p_cached_input_cost ELSE 0 END;
    cache_write_cost := CASE WHEN charged THEN p_cache_write_cost ELSE 0 END;
    output_cost := CASE WHEN charged THEN p_output_cost ELSE 0 END;
    prompt_cost := input_cost + cached_input_cost + cache_write_cost;
    created_at := stamp;

    IF charged THEN
        INSERT INTO call_charges (hold_id, input_tokens, cached_input_tokens, cache_write_tokens,
                                  cache_write_1h_tokens, output_tokens, reasoning_tokens, input_cost,
                                  cached_input_cost, cache_write_cost, output_cost, served_model_id, served_provider)
        VALUES (p_hold_id, p_prompt_tokens - p_cached_input_tokens - p_cache_write_tokens - p_cache_write_1h_tokens,
                p_cached_input_tokens, p_cache_write_tokens, p_cache_write_1h_tokens, p_completion_tokens,
                p_reasoning_tokens, input_cost, cached_input_cost, cache_write_cost, output_cost, p_model_id,
                p_served_provider);
    END IF;

    IF saved THEN
        INSERT INTO chat_history (session_id, user_id, role, content, prompt_tokens, cost, transaction_id, created_at)
        VALUES (p_session_id, p_user_id, 'user', p_question, p_prompt_tokens, prompt_cost, p_hold_id, stamp)
        RETURNING id INTO user_message_id;
        INSERT INTO chat_history (session_id, user_id, role, content, completion_tokens, cost, transaction_id,
                                  created_at)
        VALUES (p_session_id, p_user_id, 'assistant', p_answer, p_completion_tokens, output_cost, p_hold_id, stamp)
        RETURNING id INTO assistant_message_id;

        UPDATE chat_sessions
           SET message_count = message_count + 2,
               total_prompt_tokens = total_prompt_tokens + p_prompt_tokens,
               total_completion_tokens = total_completion_tokens + p_completion_tokens,
               total_cost = total_cost + prompt_cost + output_cost
         WHERE id = p_session_id;
    END IF;

    INSERT INTO model_usage_stats AS stats (model_id, day, bucket, request_count, prompt_tokens,
                                            completion_tokens, total_cost)
    VALUES (p_model_id, (stamp AT TIME ZONE 'UTC')::date, p_usage_bucket, 1, p_prompt_tokens,
            p_completion_tokens, prompt_cost + output_cost)
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

CREATE FUNCTION live_access_key(p_key_hash bytea)
RETURNS TABLE (user_id uuid, id uuid, name text, last4 text, allowed_models text[], spend_limit numeric,
               spend_limit_period text, spent numeric, expires_at timestamptz, created_at timestamptz,
               last_used_at timestamptz)
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT k.user_id, k.id, k.name, k.last4, k.allowed_models, k.spend_limit::numeric, k.spend_limit_period,
           k.spent::numeric, k.expires_at, k.created_at, k.last_used_at
      FROM access_keys k
      JOIN users u ON u.id = k.user_id
     WHERE k.key_hash = p_key_hash
       AND k.revoked_at IS NULL
       AND (k.expires_at IS NULL OR k.expires_at > now())
       AND u.is_active;
END;
$$;

REVOKE ALL ON FUNCTION live_access_key(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION live_access_key(bytea) TO app_user;
REVOKE ALL ON FUNCTION add_user_funds(uuid, numeric, text, bigint, text, jsonb, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION add_user_funds(uuid, numeric, text, bigint, text, jsonb, uuid) TO app_user;
REVOKE ALL ON FUNCTION deduct_user_balance(uuid, numeric, text, jsonb, numeric, numeric, text, uuid, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION deduct_user_balance(uuid, numeric, text, jsonb, numeric, numeric, text, uuid, uuid) TO app_user;
REVOKE ALL ON FUNCTION settle_chat_call(uuid, uuid, text, uuid, bigint, numeric, text, integer, numeric, text, integer,
                                       numeric, smallint, jsonb, integer, integer, integer, integer, numeric, numeric,
                                       text, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION settle_chat_call(uuid, uuid, text, uuid, bigint, numeric, text, integer, numeric, text,
                                           integer, numeric, smallint, jsonb, integer, integer, integer, integer,
                                           numeric, numeric, text, uuid) TO app_user;
