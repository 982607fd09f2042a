-- 0005: a top-up's deposit and what its answer shows, in one round trip. The
-- deposit locks the user's balance row until COMMIT, so every round trip after
-- it holds up that user's other top-ups. Money still moves only in
-- add_user_funds, called here with the caller's rights (its deposit cap holds).
CREATE FUNCTION deposit_with_receipt(
    p_user_id     uuid,
    p_amount      numeric,
    p_description text,
    p_metadata    jsonb
)
RETURNS TABLE (ok boolean, reason text, id bigint, type text, amount numeric, available_after numeric,
               related_transaction_id bigint, description text, model_id text, access_key_id uuid,
               created_at timestamptz, total_balance numeric, spent_balance numeric, held_balance numeric,
               available_balance numeric, currency char(3))
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
    moved record;
BEGIN
    SELECT * INTO moved FROM add_user_funds(p_user_id, p_amount, 'deposit', NULL, p_description, p_metadata);
    IF NOT moved.ok THEN  -- no such user: the rest stays NULL
        ok := false; reason := moved.reason;
        RETURN NEXT;
        RETURN;
    END IF;
    -- A new statement, so it sees the deposit's rows.
    RETURN QUERY
    SELECT true, NULL::text, t.id, t.type, t.amount::numeric, t.available_after::numeric,
           t.related_transaction_id, t.description, t.model_id, t.access_key_id, t.created_at,
           b.total_balance::numeric, b.spent_balance::numeric, b.held_balance::numeric,
           b.available_balance::numeric, b.currency
      FROM transactions t
      JOIN user_with_balance b ON b.id = t.user_id
     WHERE t.id = moved.transaction_id;
END;
$$;

REVOKE ALL ON FUNCTION deposit_with_receipt(uuid, numeric, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION deposit_with_receipt(uuid, numeric, text, jsonb) TO app_user;
