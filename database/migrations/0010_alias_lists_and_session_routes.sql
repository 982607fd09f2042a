-- 0010: an alias that stands for an ordered list of models (catalog.json's
-- `alias_lists`), and chat sessions routed as /v1 calls are (at the end).
-- A call naming an alias list is a call naming its first model with the
-- others as fallbacks, leaving out any the caller cannot use for it.
--   - Its name is no model's id, bare name or alias, so a name still resolves
--     one way; constraint triggers on both tables check this at commit, so one
--     catalog load may move a name from a model to a list.
--   - Its models are ids of the catalog's models, each once.
CREATE TABLE alias_lists (
    alias      text PRIMARY KEY CHECK (alias ~ '^[A-Za-z0-9._:-]+$' AND length(alias) <= 100),
    models     text[] NOT NULL CHECK (cardinality(models) BETWEEN 1 AND 6),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION alias_lists_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    problem text;
BEGIN
    SELECT CASE WHEN m.id IS NULL THEN format('the alias list %s names %s, which is no model', l.alias, listed.id)
                ELSE format('the alias list %s names %s twice', l.alias, listed.id) END
      INTO problem
      FROM alias_lists l
     CROSS JOIN LATERAL unnest(l.models) WITH ORDINALITY AS listed(id, place)
      LEFT JOIN models m ON m.id = listed.id
     WHERE l.alias = NEW.alias
       AND (m.id IS NULL OR listed.id = ANY (l.models[:listed.place - 1]))
     LIMIT 1;
    IF problem IS NULL THEN
        SELECT format('the alias list %s is also a name of %s', l.alias, m.id)
          INTO problem
          FROM alias_lists l
          JOIN models m ON l.alias IN (m.id, split_part(m.id, '/', 2)) OR l.alias = ANY (m.aliases)
         WHERE l.alias = NEW.alias
         LIMIT 1;
    END IF;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'catalog refused: %', problem USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER alias_lists_valid
    AFTER INSERT OR UPDATE ON alias_lists
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION alias_lists_check();

-- A model's new id or alias may not take a list's name.
CREATE FUNCTION models_list_names_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    clash text;
BEGIN
    SELECT l.alias INTO clash
      FROM alias_lists l
     WHERE l.alias IN (NEW.id, split_part(NEW.id, '/', 2)) OR l.alias = ANY (NEW.aliases)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'catalog refused: % is the name of an alias list, and also a name of %', clash, NEW.id
              USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER models_list_names_unique
    AFTER INSERT OR UPDATE OF id, aliases ON models
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION models_list_names_check();

GRANT SELECT ON alias_lists TO app_user;

-- A chat session's call goes where the /v1 calls go: chat_call_context gives
-- the model's deployments, every key the user stored (sealed, newest first,
-- as model_call_context gives them) and the house_key_fallback preference, in
-- place of the one key it gave for the model's own provider.
DROP FUNCTION chat_call_context(uuid, uuid, integer, integer, integer, integer);
CREATE FUNCTION chat_call_context(p_user_id uuid, p_session_id uuid, p_max_tokens integer,
                                  p_default_max_tokens integer, p_fixed_tokens integer, p_message_overhead integer)
RETURNS TABLE (token_generation integer, session_id uuid, model_id text, provider text, context_window integer,
               max_output_tokens integer, input_price_per_mtok numeric, output_price_per_mtok numeric,
               cache_read_price_per_mtok numeric, cache_write_price_per_mtok numeric,
               cache_write_1h_price_per_mtok numeric, features text[], is_active boolean, max_tokens integer,
               deployments jsonb, user_keys json, house_key_fallback boolean, history json,
               daily_spend_limit numeric, max_cost_per_message numeric)
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH target AS (
        SELECT s.id AS session_id, m.id AS model_id, m.provider, m.context_window, m.max_output_tokens,
               m.input_price_per_mtok, m.output_price_per_mtok, m.cache_read_price_per_mtok,
               m.cache_write_price_per_mtok, m.cache_write_1h_price_per_mtok, m.features, m.is_active,
               coalesce(p_max_tokens, least(m.max_output_tokens, p_default_max_tokens)) AS max_tokens,
               m.deployments
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
           t.deployments,
           (SELECT coalesce(json_agg(json_build_object(
                       'id', a.id, 'provider', a.provider, 'encryption_kid', a.encryption_kid,
                       'nonce', encode(a.nonce, 'base64'), 'encrypted_key', encode(a.encrypted_key, 'base64'))
                       ORDER BY a.created_at DESC, a.id), '[]')
              FROM api_keys a
             WHERE a.user_id = u.id),
           coalesce(pref.house_key_fallback, false),
           (SELECT coalesce(json_agg(json_build_object('role', h.role, 'content', h.content) ORDER BY h.id), '[]')
              FROM history h
             WHERE h.running <= t.context_window - t.max_tokens - p_fixed_tokens),
           pref.daily_spend_limit, pref.max_cost_per_message
      FROM users u
      LEFT JOIN target t ON true
      LEFT JOIN user_preferences pref ON pref.user_id = u.id
     WHERE u.id = p_user_id
       AND u.is_active;
END;
$$;
REVOKE ALL ON FUNCTION chat_call_context(uuid, uuid, integer, integer, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chat_call_context(uuid, uuid, integer, integer, integer, integer) TO app_user;
