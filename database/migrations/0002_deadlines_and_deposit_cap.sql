-- 0002: calls with deadlines, settles that survive their faults, and a deposit
-- cap the service's own login cannot pass.
--   - transactions.call_deadline: when the call a hold pays for ends; reconcile
--     waits for it plus the grace period.
--   - idempotency_keys.stale_at: when an unfinished request's record may be
--     taken over by a retry.
--   - deposit_cap: MAX_TOPUP, written by migrate.py, readable by the owner only;
--     add_user_funds refuses a larger deposit from any other login.
--   - deduct_user_balance stores the call's deadline; settle_chat_call settles a
--     call whose session was deleted meanwhile (charged, no messages saved).

-- The largest deposit the service's login may make (MAX_TOPUP), one row that
-- migrate.py writes on every run. Only the owner can read or change it: app_user
-- has no grant here, so a stolen service login cannot raise its own limit.
CREATE TABLE IF NOT EXISTS deposit_cap (
    only_row   boolean        PRIMARY KEY DEFAULT true CHECK (only_row),
    max_amount numeric(20,10) NOT NULL CHECK (max_amount > 0),
    updated_at timestamptz    NOT NULL DEFAULT now()
);


-- A hold's call_deadline: the latest moment the chat call it pays for may still
-- be running (set by deduct_user_balance). Reconcile leaves the hold alone until
-- that moment plus the grace period. NULL on holds made before it existed.
ALTER TABLE transactions ADD COLUMN IF NOT EXISTS call_deadline timestamptz;

-- When an in-progress record may be taken over by a retry (its request died):
-- after the deadline of the call it guards plus the grace period, fixed at the
-- claim. NULL on records made before it existed.
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS stale_at timestamptz;

-- p_call_timeout: the seconds the held call may run from now, stored as the
-- hold's call_deadline. (The function gained it: the old signature is dropped.)
DROP FUNCTION IF EXISTS deduct_user_balance(uuid, numeric, text, jsonb, numeric);
CREATE OR REPLACE FUNCTION deduct_user_balance(
    p_user_id      uuid,
    p_amount       numeric,
    p_description  text    DEFAULT '',
    p_metadata     jsonb   DEFAULT '{}',
    p_daily_limit  numeric DEFAULT NULL,
    p_call_timeout numeric DEFAULT NULL,
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

    INSERT INTO transactions (user_id, type, amount, available_after, description, metadata, call_deadline)
    VALUES (p_user_id, 'hold', p_amount, available, coalesce(p_description, ''), coalesce(p_metadata, '{}'),
            now() + make_interval(secs => p_call_timeout))
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
    END IF;
    available := available + p_amount;

    INSERT INTO transactions (user_id, type, amount, available_after, related_transaction_id, description, metadata)
    VALUES (p_user_id, p_type, p_amount, available, p_related_id, coalesce(p_description, ''), coalesce(p_metadata, '{}'))
    RETURNING id INTO transaction_id;
    ok := true;
END;
$$;

-- Settles a chat call in one round trip: returns the unused part of its hold
-- (at most once: if all of it was already returned, nothing is charged and
-- charged = false), saves the user's message and the answer with their tokens
-- and cost, and adds them to the session's and the model's counters. A session
-- deleted while its call ran keeps no messages (saved = false), but the call is
-- still charged and counted: the provider did the work.
-- (Dropped first: a change to what it returns cannot be made in place.)
DROP FUNCTION IF EXISTS settle_chat_call(uuid, uuid, text, uuid, bigint, numeric, text, integer, numeric, text,
                                         integer, numeric, smallint);
CREATE FUNCTION settle_chat_call(
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
RETURNS TABLE (charged boolean, saved boolean, user_message_id bigint, assistant_message_id bigint,
               created_at timestamptz, input_cost numeric, output_cost numeric, total_balance numeric,
               spent_balance numeric, held_balance numeric, available_balance numeric, currency char(3))
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    released record;
    stamp timestamptz := now();
BEGIN
    -- Locked until this commits, so a concurrent delete of the session waits
    -- (and takes the messages with it) or has already happened (none are saved).
    PERFORM 1 FROM chat_sessions s WHERE s.id = p_session_id AND s.user_id = p_user_id FOR NO KEY UPDATE;
    saved := FOUND;

    SELECT * INTO released
      FROM add_user_funds(p_user_id, p_hold_amount - p_input_cost - p_output_cost, 'release', p_hold_id,
                          'Unused part of the hold', jsonb_build_object('kind', 'settle'));
    charged := released.ok;
    input_cost := CASE WHEN charged THEN p_input_cost ELSE 0 END;
    output_cost := CASE WHEN charged THEN p_output_cost ELSE 0 END;
    created_at := stamp;

    IF saved THEN
        INSERT INTO chat_history (session_id, user_id, role, content, prompt_tokens, cost, transaction_id, created_at)
        VALUES (p_session_id, p_user_id, 'user', p_question, p_prompt_tokens, input_cost, p_hold_id, stamp)
        RETURNING id INTO user_message_id;
        INSERT INTO chat_history (session_id, user_id, role, content, completion_tokens, cost, transaction_id,
                                  created_at)
        VALUES (p_session_id, p_user_id, 'assistant', p_answer, p_completion_tokens, output_cost, p_hold_id, stamp)
        RETURNING id INTO assistant_message_id;

        UPDATE chat_sessions
           SET message_count = message_count + 2,
               total_prompt_tokens = total_prompt_tokens + p_prompt_tokens,
               total_completion_tokens = total_completion_tokens + p_completion_tokens,
               total_cost = total_cost + input_cost + output_cost
         WHERE id = p_session_id;
    END IF;

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

-- Grants: the functions dropped above lost theirs.
REVOKE ALL ON deposit_cap FROM PUBLIC, app_user, analytics_user;
REVOKE ALL ON FUNCTION deduct_user_balance(uuid, numeric, text, jsonb, numeric, numeric) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION deduct_user_balance(uuid, numeric, text, jsonb, numeric, numeric) TO app_user;
REVOKE ALL ON FUNCTION settle_chat_call(uuid, uuid, text, uuid, bigint, numeric, text, integer, numeric, text,
                                       integer, numeric, smallint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION settle_chat_call(uuid, uuid, text, uuid, bigint, numeric, text, integer, numeric, text,
                                           integer, numeric, smallint) TO app_user;
