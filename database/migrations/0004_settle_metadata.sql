-- 0004: a settle says how its usage was known. A streamed answer whose
-- provider reported no usage is billed on an estimate, and its release row says
-- so ("usage": "estimated") for whoever reads the ledger.
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
    p_usage_bucket      smallint,
    p_release_metadata  jsonb DEFAULT '{"kind": "settle"}'
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
                          'Unused part of the hold', coalesce(p_release_metadata, '{"kind": "settle"}'));
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

REVOKE ALL ON FUNCTION settle_chat_call(uuid, uuid, text, uuid, bigint, numeric, text, integer, numeric, text,
                                       integer, numeric, smallint, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION settle_chat_call(uuid, uuid, text, uuid, bigint, numeric, text, integer, numeric, text,
                                           integer, numeric, smallint, jsonb) TO app_user;
