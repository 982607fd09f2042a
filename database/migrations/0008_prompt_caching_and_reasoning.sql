-- 0008: prompt caching priced exactly, and reasoning.
--   - models gain the prices of a prompt cache's reads and writes (the 5-minute
--     write, and the 1-hour one where the provider has it), each null when the
--     model has none, and two features: `caching` (the model reads a prompt
--     cache: it has a read price, and only then) and `reasoning`.
--   - call_charges keeps each settled call's charge by part: the input billed
--     at the input price, the cached input read, the cache writes, the output
--     (reasoning tokens are part of it, counted apart for the reader). The
--     parts' costs add up to what the call was charged: its hold less its
--     release. Calls settled before this release have no row: their parts are
--     unknown, and read as null. The row also names the model and the
--     provider that served the call, which a call that fell back to another
--     model or provider makes differ from the hold's.
--   - settle_chat_call takes the parts and writes that row with the release;
--     chat_call_context gives the cache prices with the others, and the
--     model's features.
ALTER TABLE models
    ADD COLUMN cache_read_price_per_mtok numeric(20,10)
        CONSTRAINT models_cache_read_price_check CHECK (cache_read_price_per_mtok >= 0),
    ADD COLUMN cache_write_price_per_mtok numeric(20,10)
        CONSTRAINT models_cache_write_price_check CHECK (cache_write_price_per_mtok >= 0),
    ADD COLUMN cache_write_1h_price_per_mtok numeric(20,10)
        CONSTRAINT models_cache_write_1h_price_check CHECK (cache_write_1h_price_per_mtok >= 0),
    DROP CONSTRAINT models_features_check,
    ADD CONSTRAINT models_features_check
        CHECK (features <@ ARRAY['tools', 'structured_output', 'images', 'caching', 'reasoning']),
    ADD CONSTRAINT models_cache_prices_check
        CHECK (CASE WHEN 'caching' = ANY (features) THEN cache_read_price_per_mtok IS NOT NULL
                    ELSE num_nulls(cache_read_price_per_mtok, cache_write_price_per_mtok,
                                   cache_write_1h_price_per_mtok) = 3 END);

CREATE TABLE call_charges (
    hold_id bigint PRIMARY KEY REFERENCES transactions (id),
    input_tokens integer NOT NULL CHECK (input_tokens >= 0),
    cached_input_tokens integer NOT NULL CHECK (cached_input_tokens >= 0),
    cache_write_tokens integer NOT NULL CHECK (cache_write_tokens >= 0),
    cache_write_1h_tokens integer NOT NULL CHECK (cache_write_1h_tokens >= 0),
    output_tokens integer NOT NULL CHECK (output_tokens >= 0),
    reasoning_tokens integer CHECK (reasoning_tokens >= 0 AND reasoning_tokens <= output_tokens),
    input_cost numeric(20,10) NOT NULL CHECK (input_cost >= 0),
    cached_input_cost numeric(20,10) NOT NULL CHECK (cached_input_cost >= 0),
    cache_write_cost numeric(20,10) NOT NULL CHECK (cache_write_cost >= 0),
    output_cost numeric(20,10) NOT NULL CHECK (output_cost >= 0),
    served_model_id text NOT NULL,
    served_provider text NOT NULL
);

-- A charge's parts as the ledger and the activity feed show them (null: none kept);
-- amounts as text, so that no JSON reader takes them for floats.
CREATE FUNCTION charge_parts(c call_charges) RETURNS json
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN c.hold_id IS NOT NULL THEN json_build_object(
        'input_tokens', c.input_tokens, 'cached_input_tokens', c.cached_input_tokens,
        'cache_write_tokens', c.cache_write_tokens, 'cache_write_1h_tokens', c.cache_write_1h_tokens,
        'output_tokens', c.output_tokens, 'reasoning_tokens', c.reasoning_tokens,
        'input_cost', c.input_cost::text, 'cached_input_cost', c.cached_input_cost::text,
        'cache_write_cost', c.cache_write_cost::text, 'output_cost', c.output_cost::text,
        'model_id', c.served_model_id, 'provider', c.served_provider) END
$$;

CREATE OR REPLACE VIEW recent_activity AS
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
       t.created_at,
       charge_parts(c) AS charge
  FROM transactions t
  LEFT JOIN call_charges c ON t.type = 'release' AND c.hold_id = t.related_transaction_id
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
       h.created_at,
       NULL::json
  FROM chat_history h
  JOIN chat_sessions s ON s.id = h.session_id;

DROP FUNCTION chat_call_context(uuid, uuid, integer, integer, integer, integer);
CREATE FUNCTION chat_call_context(p_user_id uuid, p_session_id uuid, p_max_tokens integer,
                                  p_default_max_tokens integer, p_fixed_tokens integer, p_message_overhead integer)
RETURNS TABLE (token_generation integer, session_id uuid, model_id text, provider text, context_window integer,
               max_output_tokens integer, input_price_per_mtok numeric, output_price_per_mtok numeric,
               cache_read_price_per_mtok numeric, cache_write_price_per_mtok numeric,
               cache_write_1h_price_per_mtok numeric, features text[], is_active boolean, max_tokens integer,
               api_key_id uuid,
               encryption_kid text, nonce bytea, encrypted_key bytea, history json, daily_spend_limit numeric,
               max_cost_per_message numeric)
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH target AS (
        SELECT s.id AS session_id, m.id AS model_id, m.provider, m.context_window, m.max_output_tokens,
               m.input_price_per_mtok, m.output_price_per_mtok, m.cache_read_price_per_mtok,
               m.cache_write_price_per_mtok, m.cache_write_1h_price_per_mtok, m.features, m.is_active,
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
           t.input_price_per_mtok, t.output_price_per_mtok, t.cache_read_price_per_mtok,
           t.cache_write_price_per_mtok, t.cache_write_1h_price_per_mtok, t.features, t.is_active, t.max_tokens,
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

DROP FUNCTION settle_chat_call(uuid, uuid, text, uuid, bigint, numeric, text, integer, numeric, text, integer,
                               numeric, smallint, jsonb);
-- p_prompt_tokens counts every input token, cached or written ones included;
-- p_input_cost is the cost of those billed at the input price only. The
-- user's message in a session costs the whole input side.
CREATE FUNCTION settle_chat_call(
    p_user_id               uuid,
    p_session_id            uuid,
    p_model_id              text,
    p_api_key_id            uuid,
    p_hold_id               bigint,
    p_hold_amount           numeric,
    p_question              text,
    p_prompt_tokens         integer,
    p_input_cost            numeric,
    p_answer                text,
    p_completion_tokens     integer,
    p_output_cost           numeric,
    p_usage_bucket          smallint,
    p_release_metadata      jsonb,
    p_cached_input_tokens   integer,
    p_cache_write_tokens    integer,
    p_cache_write_1h_tokens integer,
    p_reasoning_tokens      integer,
    p_cached_input_cost     numeric,
    p_cache_write_cost      numeric,
    p_served_provider       text
)
RETURNS TABLE (charged boolean, saved boolean, user_message_id bigint, assistant_message_id bigint,
               created_at timestamptz, input_cost numeric, cached_input_cost numeric, cache_write_cost numeric,
               output_cost numeric, total_balance numeric, spent_balance numeric, held_balance numeric,
               available_balance numeric, currency char(3))
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    released record;
    stamp timestamptz := now();
    prompt_cost numeric;
BEGIN
    -- Locked until this commits, so a concurrent delete of the session waits
    -- (and takes the messages with it) or has already happened (none are saved).
    PERFORM 1 FROM chat_sessions s WHERE s.id = p_session_id AND s.user_id = p_user_id FOR NO KEY UPDATE;
    saved := FOUND;

    SELECT * INTO released
      FROM add_user_funds(p_user_id,
                          p_hold_amount - p_input_cost - p_cached_input_cost - p_cache_write_cost - p_output_cost,
                          'release', p_hold_id, 'Unused part of the hold',
                          coalesce(p_release_metadata, '{"kind": "settle"}'));
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

-- Grants. The service reads the charges and writes them only with a settle.
REVOKE ALL ON FUNCTION chat_call_context(uuid, uuid, integer, integer, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chat_call_context(uuid, uuid, integer, integer, integer, integer) TO app_user;
REVOKE ALL ON FUNCTION settle_chat_call(uuid, uuid, text, uuid, bigint, numeric, text, integer, numeric, text,
                                       integer, numeric, smallint, jsonb, integer, integer, integer, integer,
                                       numeric, numeric, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION settle_chat_call(uuid, uuid, text, uuid, bigint, numeric, text, integer, numeric, text,
                                           integer, numeric, smallint, jsonb, integer, integer, integer, integer,
                                           numeric, numeric, text) TO app_user;
REVOKE ALL ON call_charges FROM PUBLIC;
GRANT SELECT, INSERT ON call_charges TO app_user;
GRANT SELECT ON recent_activity TO app_user, analytics_user;
