-- 0019: model_call_context, what every /v1 call reads first, in PL/pgSQL as
-- chat_call_context is, so that its plan is made once per connection and not
-- at every call (three quarters of the statement's server time was planning; a
-- pooler in transaction mode cannot keep prepared statements for us).
CREATE FUNCTION model_call_context(p_user_id uuid, p_model_name text, p_max_tokens integer,
                                   p_default_max_tokens integer)
RETURNS TABLE (token_generation integer, model_id text, provider text, context_window integer,
               max_output_tokens integer, price_version_id bigint, input_price_per_mtok numeric,
               output_price_per_mtok numeric, cache_read_price_per_mtok numeric, cache_write_price_per_mtok numeric,
               cache_write_1h_price_per_mtok numeric, is_active boolean, features text[], input_modalities text[],
               deployments jsonb, max_tokens integer, daily_spend_limit numeric, max_cost_per_message numeric,
               house_key_fallback boolean, listed_models text[], user_keys json)
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    -- A name resolves to the model whose id it is; else the model it is an
    -- alias of; else the one active model whose bare name (after the slash) it
    -- is. Two active models with that bare name: none, as for an unknown name.
    WITH named AS (
        SELECT m.id,
               CASE WHEN m.id = p_model_name THEN 1
                    WHEN p_model_name = ANY (m.aliases) THEN 2
                    ELSE 3 END AS rank
          FROM models m
         WHERE m.id = p_model_name
            OR p_model_name = ANY (m.aliases)
            OR (m.is_active AND split_part(m.id, '/', 2) = p_model_name)
    ), resolved AS (
        SELECT n.id
          FROM (SELECT id, rank, min(rank) OVER () AS best, count(*) OVER (PARTITION BY rank) AS alike
                  FROM named) n
         WHERE n.rank = n.best
           AND n.alike = 1
    )
    SELECT u.token_generation, m.id, m.provider, m.context_window, m.max_output_tokens,
           p.id, p.input_price_per_mtok::numeric, p.output_price_per_mtok::numeric,
           p.cache_read_price_per_mtok::numeric, p.cache_write_price_per_mtok::numeric,
           p.cache_write_1h_price_per_mtok::numeric,
           m.is_active, m.features, m.input_modalities, m.deployments,
           coalesce(p_max_tokens, least(m.max_output_tokens, p_default_max_tokens)),
           pref.daily_spend_limit::numeric, pref.max_cost_per_message::numeric,
           coalesce(pref.house_key_fallback, false),
           (SELECT l.models FROM alias_lists l WHERE l.alias = p_model_name),
           (SELECT coalesce(json_agg(json_build_object(
                       'id', a.id, 'provider', a.provider, 'encryption_kid', a.encryption_kid,
                       'nonce', encode(a.nonce, 'base64'),
                       'encrypted_key', encode(a.encrypted_key, 'base64'))
                       ORDER BY a.created_at DESC, a.id), '[]')
              FROM api_keys a
             WHERE a.user_id = u.id)
      FROM users u
      LEFT JOIN models m ON m.id = (SELECT r.id FROM resolved r)
      LEFT JOIN LATERAL price_in_force(m.id, now()) p ON true
      LEFT JOIN user_preferences pref ON pref.user_id = u.id
     WHERE u.id = p_user_id
       AND u.is_active;
END;
$$;

REVOKE ALL ON FUNCTION model_call_context(uuid, text, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION model_call_context(uuid, text, integer, integer) TO app_user;
