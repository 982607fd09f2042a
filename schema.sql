-- Q Marketplace: the current schema, as a new database has it after every
-- migration in database/migrations/. Generated, do not edit: run `make schema`
-- after adding a migration (the tests fail until schema.sql matches them).
--
-- For reading. migrate.py builds and upgrades every database from the
-- migrations, never from this file. No owner is named: the owner is whoever runs
-- migrate.py, and owns every object. Roles belong to the whole server, so
-- migrate.py creates them, not this file; what each may do is in the grants below:
--   app_user         the service's login: data access only, no DDL; money moves only
--                    through the SECURITY DEFINER functions
--   analytics_user   reads the three views, nothing else

-- ---------------------------------------------------------------- functions

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

CREATE FUNCTION admin_audit_log(p_admin uuid, p_user uuid, p_actor uuid, p_action text, p_from timestamp with time zone, p_to timestamp with time zone, p_before_id bigint, p_limit integer) RETURNS TABLE(id bigint, admin_id uuid, admin_email text, action text, target_user_id uuid, target_email text, target_model text, reason text, details jsonb, created_at timestamp with time zone)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
    SELECT a.id, a.admin_id, actor.email, a.action, a.target_user_id, target.email, a.target_model, a.reason,
           a.details, a.created_at
      FROM admin_actions a
      LEFT JOIN users actor ON actor.id = a.admin_id
      LEFT JOIN users target ON target.id = a.target_user_id
     WHERE EXISTS (SELECT 1 FROM admins ad JOIN users u ON u.id = ad.user_id
                    WHERE ad.user_id = p_admin AND u.is_active)
       AND (p_user IS NULL OR a.target_user_id = p_user)
       AND (p_actor IS NULL OR a.admin_id = p_actor)
       AND (p_action IS NULL OR a.action = p_action)
       AND (p_from IS NULL OR a.created_at >= p_from)
       AND (p_to IS NULL OR a.created_at < p_to)
       AND (p_before_id IS NULL OR a.id < p_before_id)
     ORDER BY a.id DESC
     LIMIT p_limit;
$$;

CREATE FUNCTION admin_drop_alias_list(p_admin uuid, p_alias text, p_reason text, OUT ok boolean, OUT reason text) RETURNS record
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
DECLARE
    before text[];
BEGIN
    reason := admin_refusal(p_admin, NULL, p_reason);
    ok := reason IS NULL;
    IF NOT ok THEN
        RETURN;
    END IF;
    DELETE FROM alias_lists l WHERE l.alias = p_alias RETURNING l.models INTO before;
    IF NOT FOUND THEN
        ok := false;
        reason := 'no_such_alias_list';
        RETURN;
    END IF;
    INSERT INTO admin_actions (admin_id, action, reason, details)
    VALUES (p_admin, 'drop_alias_list', p_reason, jsonb_build_object('alias', p_alias, 'before', to_jsonb(before)));
END;
$$;

CREATE FUNCTION admin_move_money(p_admin uuid, p_user uuid, p_action text, p_amount numeric, p_reason text, p_details jsonb, OUT ok boolean, OUT reason text, OUT transaction_id bigint, OUT available numeric, OUT action_id bigint) RETURNS record
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
DECLARE
    metadata jsonb := coalesce(p_details, '{}') || jsonb_build_object('source', 'admin', 'admin_id', p_admin,
                                                                      'reason', p_reason);
BEGIN
    reason := admin_refusal(p_admin, p_user, p_reason);
    IF reason IS NOT NULL THEN
        ok := false;
        RETURN;
    END IF;
    IF p_action = 'credit' THEN
        SELECT f.ok, f.reason, f.transaction_id, f.available INTO ok, reason, transaction_id, available
          FROM add_user_funds(p_user, p_amount, 'deposit', NULL, left('Admin credit: ' || p_reason, 500), metadata) f;
    ELSIF p_action = 'debit' THEN
        SELECT f.ok, f.reason, f.transaction_id, f.available INTO ok, reason, transaction_id, available
          FROM debit_user_balance(p_user, p_amount, left('Admin debit: ' || p_reason, 500), metadata) f;
    ELSE
        RAISE EXCEPTION 'admin_move_money: unknown action %', p_action USING ERRCODE = 'check_violation';
    END IF;
    IF ok THEN
        INSERT INTO admin_actions (admin_id, action, target_user_id, reason, details)
        VALUES (p_admin, p_action, p_user, p_reason,
                coalesce(p_details, '{}') || jsonb_build_object('amount', p_amount, 'transaction_id', transaction_id))
        RETURNING id INTO action_id;
    END IF;
END;
$$;

CREATE FUNCTION admin_put_alias_list(p_admin uuid, p_action text, p_alias text, p_models text[], p_reason text, OUT ok boolean, OUT reason text) RETURNS record
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
DECLARE
    before text[];
BEGIN
    reason := admin_refusal(p_admin, NULL, p_reason);
    ok := reason IS NULL;
    IF NOT ok THEN
        RETURN;
    END IF;
    SELECT l.models INTO before FROM alias_lists l WHERE l.alias = p_alias FOR UPDATE;
    IF (before IS NULL) <> (p_action = 'add_alias_list') THEN
        ok := false;
        reason := CASE WHEN before IS NULL THEN 'no_such_alias_list' ELSE 'alias_list_exists' END;
        RETURN;
    END IF;
    INSERT INTO alias_lists (alias, models) VALUES (p_alias, p_models)
    ON CONFLICT (alias) DO UPDATE SET models = EXCLUDED.models, updated_at = now();
    INSERT INTO admin_actions (admin_id, action, reason, details)
    VALUES (p_admin, p_action, p_reason,
            jsonb_build_object('alias', p_alias, 'before', to_jsonb(before), 'after', to_jsonb(p_models)));
END;
$$;

CREATE FUNCTION admin_put_model(p_admin uuid, p_action text, p_model jsonb, p_reason text, OUT ok boolean, OUT reason text) RETURNS record
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
DECLARE
    entry models%ROWTYPE := jsonb_populate_record(NULL::models, p_model);
    before jsonb;
BEGIN
    reason := admin_refusal(p_admin, NULL, p_reason);
    ok := reason IS NULL;
    IF NOT ok THEN
        RETURN;
    END IF;
    SELECT to_jsonb(m) INTO before FROM models m WHERE m.id = entry.id FOR UPDATE;
    IF (before IS NULL) <> (p_action = 'add_model') THEN
        ok := false;
        reason := CASE WHEN before IS NULL THEN 'no_such_model' ELSE 'model_exists' END;
        RETURN;
    END IF;
    INSERT INTO models (id, provider, name, description, context_window, max_output_tokens, input_price_per_mtok,
                        output_price_per_mtok, cache_read_price_per_mtok, cache_write_price_per_mtok,
                        cache_write_1h_price_per_mtok, prices_as_of, capabilities, features, input_modalities,
                        aliases, deployments, is_active)
    VALUES (entry.id, entry.provider, entry.name, entry.description, entry.context_window, entry.max_output_tokens,
            entry.input_price_per_mtok, entry.output_price_per_mtok, entry.cache_read_price_per_mtok,
            entry.cache_write_price_per_mtok, entry.cache_write_1h_price_per_mtok, entry.prices_as_of,
            entry.capabilities, entry.features, entry.input_modalities, entry.aliases, entry.deployments,
            entry.is_active)
    ON CONFLICT (id) DO UPDATE
       SET provider = EXCLUDED.provider, name = EXCLUDED.name, description = EXCLUDED.description,
           context_window = EXCLUDED.context_window, max_output_tokens = EXCLUDED.max_output_tokens,
           input_price_per_mtok = EXCLUDED.input_price_per_mtok, output_price_per_mtok = EXCLUDED.output_price_per_mtok,
           cache_read_price_per_mtok = EXCLUDED.cache_read_price_per_mtok,
           cache_write_price_per_mtok = EXCLUDED.cache_write_price_per_mtok,
           cache_write_1h_price_per_mtok = EXCLUDED.cache_write_1h_price_per_mtok,
           prices_as_of = EXCLUDED.prices_as_of, capabilities = EXCLUDED.capabilities,
           features = EXCLUDED.features, input_modalities = EXCLUDED.input_modalities, aliases = EXCLUDED.aliases,
           deployments = EXCLUDED.deployments, is_active = EXCLUDED.is_active;
    INSERT INTO admin_actions (admin_id, action, target_model, reason, details)
    VALUES (p_admin, p_action, entry.id, p_reason,
            jsonb_build_object('before', before, 'after', (SELECT to_jsonb(m) FROM models m WHERE m.id = entry.id)));
END;
$$;

CREATE FUNCTION admin_record(p_admin uuid, p_action text, p_reason text, p_details jsonb, OUT ok boolean, OUT reason text, OUT action_id bigint) RETURNS record
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
BEGIN
    reason := admin_refusal(p_admin, NULL, p_reason);
    ok := reason IS NULL;
    IF ok THEN
        INSERT INTO admin_actions (admin_id, action, reason, details)
        VALUES (p_admin, p_action, p_reason, coalesce(p_details, '{}'))
        RETURNING id INTO action_id;
    END IF;
END;
$$;

CREATE FUNCTION admin_refusal(p_admin uuid, p_user uuid, p_reason text) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM admins a JOIN users u ON u.id = a.user_id WHERE a.user_id = p_admin AND u.is_active)
    THEN
        RETURN 'not_admin';
    END IF;
    PERFORM set_config('app.user_id', p_admin::text, true);
    IF p_reason IS NULL OR length(btrim(p_reason)) NOT BETWEEN 1 AND 400 THEN
        RETURN 'reason_required';
    END IF;
    IF p_user IS NOT NULL THEN
        IF p_user = p_admin THEN
            RETURN 'self_action';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM users WHERE id = p_user) THEN
            RETURN 'no_such_user';
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION admin_schedule_price(p_admin uuid, p_model text, p_effective_from timestamp with time zone, p_prices jsonb, p_reason text, OUT ok boolean, OUT reason text, OUT version_id bigint) RETURNS record
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
DECLARE
    priced model_prices%ROWTYPE := jsonb_populate_record(NULL::model_prices, p_prices);
BEGIN
    reason := admin_refusal(p_admin, NULL, p_reason);
    IF reason IS NULL AND NOT EXISTS (SELECT 1 FROM models WHERE id = p_model) THEN
        reason := 'no_such_model';
    END IF;
    IF reason IS NULL AND p_effective_from <= now() THEN
        reason := 'not_future';
    END IF;
    IF reason IS NULL AND EXISTS (SELECT 1 FROM model_prices WHERE model_id = p_model
                                                               AND effective_from = p_effective_from) THEN
        reason := 'version_exists';
    END IF;
    ok := reason IS NULL;
    IF NOT ok THEN
        RETURN;
    END IF;
    INSERT INTO model_prices (model_id, effective_from, input_price_per_mtok, output_price_per_mtok,
                              cache_read_price_per_mtok, cache_write_price_per_mtok, cache_write_1h_price_per_mtok,
                              admin_id)
    VALUES (p_model, p_effective_from, priced.input_price_per_mtok, priced.output_price_per_mtok,
            priced.cache_read_price_per_mtok, priced.cache_write_price_per_mtok, priced.cache_write_1h_price_per_mtok,
            p_admin)
    RETURNING id INTO version_id;
    INSERT INTO admin_actions (admin_id, action, target_model, reason, details)
    VALUES (p_admin, 'schedule_price', p_model, p_reason,
            p_prices || jsonb_build_object('version_id', version_id, 'effective_from', p_effective_from));
END;
$$;

CREATE FUNCTION admin_set_user_active(p_admin uuid, p_user uuid, p_active boolean, p_reason text, OUT ok boolean, OUT reason text, OUT changed boolean) RETURNS record
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
BEGIN
    reason := admin_refusal(p_admin, p_user, p_reason);
    ok := reason IS NULL;
    IF NOT ok THEN
        RETURN;
    END IF;
    UPDATE users SET is_active = p_active, updated_at = now() WHERE id = p_user AND is_active <> p_active;
    changed := FOUND;
    INSERT INTO admin_actions (admin_id, action, target_user_id, reason, details)
    VALUES (p_admin, CASE WHEN p_active THEN 'enable_user' ELSE 'disable_user' END, p_user, p_reason,
            jsonb_build_object('changed', changed));
END;
$$;

CREATE FUNCTION alias_lists_check() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    AS $$
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

CREATE FUNCTION audit_row_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
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

-- ---------------------------------------------------------------- tables and views

CREATE TABLE call_charges (
    hold_id bigint NOT NULL,
    input_tokens integer NOT NULL,
    cached_input_tokens integer NOT NULL,
    cache_write_tokens integer NOT NULL,
    cache_write_1h_tokens integer NOT NULL,
    output_tokens integer NOT NULL,
    reasoning_tokens integer,
    input_cost numeric(20,10) NOT NULL,
    cached_input_cost numeric(20,10) NOT NULL,
    cache_write_cost numeric(20,10) NOT NULL,
    output_cost numeric(20,10) NOT NULL,
    served_model_id text NOT NULL,
    served_provider text NOT NULL,
    CONSTRAINT call_charges_cache_write_1h_tokens_check CHECK ((cache_write_1h_tokens >= 0)),
    CONSTRAINT call_charges_cache_write_cost_check CHECK ((cache_write_cost >= (0)::numeric)),
    CONSTRAINT call_charges_cache_write_tokens_check CHECK ((cache_write_tokens >= 0)),
    CONSTRAINT call_charges_cached_input_cost_check CHECK ((cached_input_cost >= (0)::numeric)),
    CONSTRAINT call_charges_cached_input_tokens_check CHECK ((cached_input_tokens >= 0)),
    CONSTRAINT call_charges_check CHECK (((reasoning_tokens >= 0) AND (reasoning_tokens <= output_tokens))),
    CONSTRAINT call_charges_input_cost_check CHECK ((input_cost >= (0)::numeric)),
    CONSTRAINT call_charges_input_tokens_check CHECK ((input_tokens >= 0)),
    CONSTRAINT call_charges_output_cost_check CHECK ((output_cost >= (0)::numeric)),
    CONSTRAINT call_charges_output_tokens_check CHECK ((output_tokens >= 0))
);

-- ---------------------------------------------------------------- functions

CREATE FUNCTION charge_parts(c call_charges) RETURNS json
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT CASE WHEN c.hold_id IS NOT NULL THEN json_build_object(
        'input_tokens', c.input_tokens, 'cached_input_tokens', c.cached_input_tokens,
        'cache_write_tokens', c.cache_write_tokens, 'cache_write_1h_tokens', c.cache_write_1h_tokens,
        'output_tokens', c.output_tokens, 'reasoning_tokens', c.reasoning_tokens,
        'input_cost', c.input_cost::text, 'cached_input_cost', c.cached_input_cost::text,
        'cache_write_cost', c.cache_write_cost::text, 'output_cost', c.output_cost::text,
        'model_id', c.served_model_id, 'provider', c.served_provider) END
$$;

CREATE FUNCTION chat_call_context(p_user_id uuid, p_session_id uuid, p_max_tokens integer, p_default_max_tokens integer, p_fixed_tokens integer, p_message_overhead integer) RETURNS TABLE(token_generation integer, session_id uuid, model_id text, provider text, context_window integer, max_output_tokens integer, input_price_per_mtok numeric, output_price_per_mtok numeric, cache_read_price_per_mtok numeric, cache_write_price_per_mtok numeric, cache_write_1h_price_per_mtok numeric, features text[], is_active boolean, max_tokens integer, deployments jsonb, user_keys json, house_key_fallback boolean, history json, daily_spend_limit numeric, max_cost_per_message numeric, price_version_id bigint)
    LANGUAGE plpgsql STABLE
    SET search_path TO 'public', 'pg_temp'
    AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH target AS (
        SELECT s.id AS session_id, m.id AS model_id, m.provider, m.context_window, m.max_output_tokens,
               p.input_price_per_mtok, p.output_price_per_mtok, p.cache_read_price_per_mtok,
               p.cache_write_price_per_mtok, p.cache_write_1h_price_per_mtok, m.features, m.is_active,
               coalesce(p_max_tokens, least(m.max_output_tokens, p_default_max_tokens)) AS max_tokens,
               m.deployments, p.id AS price_version_id
          FROM chat_sessions s
          JOIN models m ON m.id = s.model_id
          LEFT JOIN LATERAL price_in_force(m.id, now()) p ON true
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
           pref.daily_spend_limit, pref.max_cost_per_message, t.price_version_id
      FROM users u
      LEFT JOIN target t ON true
      LEFT JOIN user_preferences pref ON pref.user_id = u.id
     WHERE u.id = p_user_id
       AND u.is_active;
END;
$$;

CREATE FUNCTION create_user_balance() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
BEGIN
    INSERT INTO user_balance (user_id) VALUES (NEW.id);
    RETURN NULL;
END;
$$;

CREATE FUNCTION debit_user_balance(p_user_id uuid, p_amount numeric, p_description text, p_metadata jsonb, OUT ok boolean, OUT transaction_id bigint, OUT available numeric, OUT reason text) RETURNS record
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
DECLARE
    balance user_balance%ROWTYPE;
BEGIN
    IF p_amount IS NULL OR p_amount <= 0 OR p_amount <> round(p_amount, 10) THEN
        RAISE EXCEPTION 'debit_user_balance: amount must be positive with at most 10 decimals, got %', p_amount
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT * INTO balance FROM user_balance WHERE user_id = p_user_id FOR UPDATE;
    IF NOT FOUND THEN
        ok := false; available := 0; reason := 'no_such_user';
        RETURN;
    END IF;
    available := balance.total_balance - balance.spent_balance;
    IF available < p_amount THEN
        ok := false; reason := 'insufficient_funds';
        RETURN;
    END IF;
    UPDATE user_balance
       SET total_balance = total_balance - p_amount,
           updated_at = now()
     WHERE user_id = p_user_id;
    available := available - p_amount;
    INSERT INTO transactions (user_id, type, amount, available_after, description, metadata)
    VALUES (p_user_id, 'debit', p_amount, available, coalesce(p_description, ''), coalesce(p_metadata, '{}'))
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

CREATE FUNCTION deposit_with_receipt(p_user_id uuid, p_amount numeric, p_description text, p_metadata jsonb) RETURNS TABLE(ok boolean, reason text, id bigint, type text, amount numeric, available_after numeric, related_transaction_id bigint, description text, model_id text, access_key_id uuid, created_at timestamp with time zone, total_balance numeric, spent_balance numeric, held_balance numeric, available_balance numeric, currency character)
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    AS $$
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

CREATE FUNCTION key_period_start(p_period text, p_at timestamp with time zone) RETURNS timestamp with time zone
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT CASE p_period
               WHEN 'day' THEN date_trunc('day', p_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
               WHEN 'month' THEN date_trunc('month', p_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
               ELSE '-infinity'::timestamptz
           END
$$;

CREATE FUNCTION live_access_key(p_key_hash bytea) RETURNS TABLE(user_id uuid, id uuid, name text, last4 text, allowed_models text[], spend_limit numeric, spend_limit_period text, spent numeric, expires_at timestamp with time zone, created_at timestamp with time zone, last_used_at timestamp with time zone)
    LANGUAGE plpgsql STABLE
    SET search_path TO 'public', 'pg_temp'
    AS $$
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

CREATE FUNCTION model_call_context(p_user_id uuid, p_model_name text, p_max_tokens integer, p_default_max_tokens integer) RETURNS TABLE(token_generation integer, model_id text, provider text, context_window integer, max_output_tokens integer, price_version_id bigint, input_price_per_mtok numeric, output_price_per_mtok numeric, cache_read_price_per_mtok numeric, cache_write_price_per_mtok numeric, cache_write_1h_price_per_mtok numeric, is_active boolean, features text[], input_modalities text[], deployments jsonb, max_tokens integer, daily_spend_limit numeric, max_cost_per_message numeric, house_key_fallback boolean, listed_models text[], user_keys json)
    LANGUAGE plpgsql STABLE
    SET search_path TO 'public', 'pg_temp'
    AS $$
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

CREATE FUNCTION model_prices_unchangeable() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    AS $$
BEGIN
    RAISE EXCEPTION 'a price version never changes: add a new one' USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE FUNCTION models_list_names_check() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    AS $$
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

CREATE FUNCTION models_names_check() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    AS $$
DECLARE
    clash record;
BEGIN
    SELECT a.alias, m.id AS model_id, o.id AS other_id
      INTO clash
      FROM models m
     CROSS JOIN LATERAL unnest(m.aliases) a(alias)
      JOIN models o
        ON o.id <> m.id
       AND (a.alias IN (o.id, split_part(o.id, '/', 2)) OR a.alias = ANY (o.aliases))
     WHERE NEW.id IN (m.id, o.id)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'catalog refused: the alias % of % is also a name of %',
                        clash.alias, clash.model_id, clash.other_id
              USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION models_price_version() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM price_in_force(NEW.id, now()) p
                    WHERE (p.input_price_per_mtok, p.output_price_per_mtok, p.cache_read_price_per_mtok,
                           p.cache_write_price_per_mtok, p.cache_write_1h_price_per_mtok)
                          IS NOT DISTINCT FROM
                          (NEW.input_price_per_mtok, NEW.output_price_per_mtok, NEW.cache_read_price_per_mtok,
                           NEW.cache_write_price_per_mtok, NEW.cache_write_1h_price_per_mtok)) THEN
        INSERT INTO model_prices (model_id, effective_from, input_price_per_mtok, output_price_per_mtok,
                                  cache_read_price_per_mtok, cache_write_price_per_mtok, cache_write_1h_price_per_mtok,
                                  admin_id)
        VALUES (NEW.id, now(), NEW.input_price_per_mtok, NEW.output_price_per_mtok, NEW.cache_read_price_per_mtok,
                NEW.cache_write_price_per_mtok, NEW.cache_write_1h_price_per_mtok,
                nullif(current_setting('app.user_id', true), '')::uuid)
        ON CONFLICT (model_id, effective_from) DO NOTHING;
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION note_spend_limit_reached(p_user_id uuid, p_amount numeric, p_daily_limit numeric, p_access_key_id uuid) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
DECLARE
    access_key access_keys%ROWTYPE;
    spent      numeric;
    raised     integer := 0;
    today      timestamptz := date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
BEGIN
    IF p_access_key_id IS NOT NULL THEN
        SELECT * INTO access_key FROM access_keys WHERE id = p_access_key_id AND user_id = p_user_id;
        IF FOUND AND access_key.spend_limit IS NOT NULL THEN
            SELECT coalesce(sum(hold.amount - coalesce(rel.amount, 0)), 0) INTO spent
              FROM transactions hold
              LEFT JOIN transactions rel ON rel.related_transaction_id = hold.id AND rel.type = 'release'
             WHERE hold.access_key_id = p_access_key_id AND hold.type = 'hold'
               AND hold.created_at >= key_period_start(access_key.spend_limit_period, now());
            IF spent + p_amount > access_key.spend_limit AND raise_alert(
                    p_user_id, access_key.id::text, 'key_spend_100',
                    key_period_start(access_key.spend_limit_period, now())::text,
                    jsonb_build_object('access_key_id', access_key.id, 'name', access_key.name,
                                       'spent', spent::text, 'spend_limit', access_key.spend_limit::text,
                                       'spend_limit_period', access_key.spend_limit_period)) THEN
                raised := raised + 1;
            END IF;
        END IF;
    END IF;
    IF p_daily_limit IS NOT NULL THEN
        SELECT coalesce(sum(hold.amount - coalesce(rel.amount, 0)), 0) INTO spent
          FROM transactions hold
          LEFT JOIN transactions rel ON rel.related_transaction_id = hold.id AND rel.type = 'release'
         WHERE hold.user_id = p_user_id AND hold.type = 'hold' AND hold.created_at >= today;
        IF spent + p_amount > p_daily_limit AND raise_alert(
                p_user_id, p_user_id::text, 'daily_limit_reached', today::text,
                jsonb_build_object('spent_today', spent::text, 'daily_spend_limit', p_daily_limit::text)) THEN
            raised := raised + 1;
        END IF;
    END IF;
    RETURN raised;
END;
$$;

-- ---------------------------------------------------------------- tables and views

CREATE TABLE model_prices (
    id bigint NOT NULL,
    model_id text NOT NULL,
    effective_from timestamp with time zone NOT NULL,
    input_price_per_mtok numeric(20,10) NOT NULL,
    output_price_per_mtok numeric(20,10) NOT NULL,
    cache_read_price_per_mtok numeric(20,10),
    cache_write_price_per_mtok numeric(20,10),
    cache_write_1h_price_per_mtok numeric(20,10),
    admin_id uuid,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT model_prices_cache_read_price_per_mtok_check CHECK ((cache_read_price_per_mtok >= (0)::numeric)),
    CONSTRAINT model_prices_cache_write_1h_price_per_mtok_check CHECK ((cache_write_1h_price_per_mtok >= (0)::numeric)),
    CONSTRAINT model_prices_cache_write_price_per_mtok_check CHECK ((cache_write_price_per_mtok >= (0)::numeric)),
    CONSTRAINT model_prices_input_price_per_mtok_check CHECK ((input_price_per_mtok >= (0)::numeric)),
    CONSTRAINT model_prices_output_price_per_mtok_check CHECK ((output_price_per_mtok >= (0)::numeric))
);

-- ---------------------------------------------------------------- functions

CREATE FUNCTION price_in_force(p_model text, p_at timestamp with time zone) RETURNS SETOF model_prices
    LANGUAGE sql STABLE
    AS $$
    SELECT * FROM public.model_prices
     WHERE model_id = p_model AND effective_from <= p_at
     ORDER BY effective_from DESC
     LIMIT 1;
$$;

CREATE FUNCTION raise_alert(p_user_id uuid, p_subject text, p_kind text, p_period text, p_details jsonb) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    AS $$
DECLARE
    payload jsonb;
BEGIN
    INSERT INTO alert_marks (subject, kind, period) VALUES (p_subject, p_kind, p_period)
        ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    payload := jsonb_build_object('type', p_kind, 'user_id', p_user_id, 'created_at', now(), 'data', p_details);
    INSERT INTO alert_deliveries (user_id, channel, webhook_id, kind, payload)
    SELECT p_user_id, 'webhook', w.id, p_kind, payload FROM webhooks w WHERE w.user_id = p_user_id;
    INSERT INTO alert_deliveries (user_id, channel, kind, payload)
    SELECT p_user_id, 'email', p_kind, payload
      FROM user_preferences p WHERE p.user_id = p_user_id AND p.email_alerts;
    RETURN true;
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

CREATE FUNCTION touch_updated_at() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE FUNCTION transactions_alerts() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
DECLARE
    threshold  numeric;
    hold       transactions%ROWTYPE;
    access_key access_keys%ROWTYPE;
    started    timestamptz;
    charged    numeric;
BEGIN
    IF NEW.type IN ('hold', 'deposit') THEN
        SELECT low_balance_threshold INTO threshold FROM user_preferences WHERE user_id = NEW.user_id;
        IF threshold IS NOT NULL AND NEW.type = 'hold' AND NEW.available_after < threshold THEN
            PERFORM raise_alert(NEW.user_id, NEW.user_id::text, 'low_balance', '',
                                jsonb_build_object('available_balance', NEW.available_after::text,
                                                   'threshold', threshold::text));
        ELSIF threshold IS NOT NULL AND NEW.type = 'deposit' AND NEW.available_after >= threshold THEN
            DELETE FROM alert_marks WHERE subject = NEW.user_id::text AND kind = 'low_balance';
        END IF;
    ELSIF NEW.access_key_id IS NOT NULL THEN  -- a release: the call is settled or returned
        SELECT * INTO access_key FROM access_keys WHERE id = NEW.access_key_id;
        IF access_key.spend_limit IS NULL THEN
            RETURN NULL;
        END IF;
        SELECT * INTO hold FROM transactions WHERE id = NEW.related_transaction_id;
        IF hold.amount = NEW.amount THEN
            RETURN NULL;  -- returned whole: nothing charged
        END IF;
        started := key_period_start(access_key.spend_limit_period, hold.created_at);
        INSERT INTO access_key_period_spend AS s (access_key_id, period_start, charged)
        VALUES (access_key.id, started, hold.amount - NEW.amount)
        ON CONFLICT (access_key_id, period_start) DO UPDATE SET charged = s.charged + EXCLUDED.charged
        RETURNING s.charged INTO charged;
        IF charged >= access_key.spend_limit * 0.8 THEN
            PERFORM raise_alert(NEW.user_id, access_key.id::text, 'key_spend_80', started::text,
                                jsonb_build_object('access_key_id', access_key.id, 'name', access_key.name,
                                                   'spent', charged::text,
                                                   'spend_limit', access_key.spend_limit::text,
                                                   'spend_limit_period', access_key.spend_limit_period));
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION usage_count_charges() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
BEGIN
    UPDATE usage_daily u
       SET input_tokens = coalesce(u.input_tokens, 0) + c.input_tokens,
           cached_input_tokens = coalesce(u.cached_input_tokens, 0) + c.cached_input_tokens,
           cache_write_tokens = coalesce(u.cache_write_tokens, 0) + c.cache_write_tokens,
           output_tokens = coalesce(u.output_tokens, 0) + c.output_tokens
      FROM usage_calls c
     WHERE c.hold_id = NEW.hold_id
       AND u.user_id = c.user_id AND u.day = c.day
       AND u.model_id IS NOT DISTINCT FROM c.model_id AND u.access_key_id IS NOT DISTINCT FROM c.access_key_id;
    RETURN NULL;
END;
$$;

CREATE FUNCTION usage_count_release() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
BEGIN
    INSERT INTO usage_daily AS u (user_id, day, model_id, access_key_id, requests, cost, input_tokens,
                                  cached_input_tokens, cache_write_tokens, output_tokens)
    SELECT user_id, day, model_id, access_key_id, 1, cost, input_tokens, cached_input_tokens, cache_write_tokens,
           output_tokens
      FROM usage_calls
     WHERE release_id = NEW.id
    ON CONFLICT ON CONSTRAINT usage_daily_key DO UPDATE
       SET requests = u.requests + 1,
           cost = u.cost + EXCLUDED.cost,
           input_tokens = CASE WHEN EXCLUDED.input_tokens IS NULL THEN u.input_tokens
                               ELSE coalesce(u.input_tokens, 0) + EXCLUDED.input_tokens END,
           cached_input_tokens = CASE WHEN EXCLUDED.cached_input_tokens IS NULL THEN u.cached_input_tokens
                                      ELSE coalesce(u.cached_input_tokens, 0) + EXCLUDED.cached_input_tokens END,
           cache_write_tokens = CASE WHEN EXCLUDED.cache_write_tokens IS NULL THEN u.cache_write_tokens
                                     ELSE coalesce(u.cache_write_tokens, 0) + EXCLUDED.cache_write_tokens END,
           output_tokens = CASE WHEN EXCLUDED.output_tokens IS NULL THEN u.output_tokens
                                ELSE coalesce(u.output_tokens, 0) + EXCLUDED.output_tokens END;
    RETURN NULL;
END;
$$;

CREATE FUNCTION usage_recount(p_user_ids uuid[], p_days date[]) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    AS $$
DECLARE
    touched record;
BEGIN
    FOR touched IN SELECT DISTINCT t.user_id, t.day FROM unnest(p_user_ids, p_days) AS t (user_id, day)
                    WHERE t.user_id IS NOT NULL LOOP
        DELETE FROM usage_daily WHERE user_id = touched.user_id AND day = touched.day;
        INSERT INTO usage_daily (user_id, day, model_id, access_key_id, requests, cost, input_tokens,
                                 cached_input_tokens, cache_write_tokens, output_tokens)
        SELECT user_id, day, model_id, access_key_id, requests, cost, input_tokens, cached_input_tokens,
               cache_write_tokens, output_tokens
          FROM usage_from_ledger
         WHERE user_id = touched.user_id AND day = touched.day;
    END LOOP;
END;
$$;

CREATE FUNCTION usage_recount_charges() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
DECLARE
    user_ids uuid[];
    days     date[];
BEGIN
    IF TG_OP = 'UPDATE' THEN
        SELECT array_agg(r.user_id), array_agg((r.created_at AT TIME ZONE 'UTC')::date) INTO user_ids, days
          FROM (SELECT hold_id FROM old_rows UNION ALL SELECT hold_id FROM new_rows) changed
          JOIN transactions r ON r.related_transaction_id = changed.hold_id AND r.type = 'release';
    ELSE
        SELECT array_agg(r.user_id), array_agg((r.created_at AT TIME ZONE 'UTC')::date) INTO user_ids, days
          FROM old_rows changed
          JOIN transactions r ON r.related_transaction_id = changed.hold_id AND r.type = 'release';
    END IF;
    PERFORM usage_recount(user_ids, days);
    RETURN NULL;
END;
$$;

CREATE FUNCTION usage_recount_ledger() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
DECLARE
    user_ids uuid[];
    days     date[];
BEGIN
    IF TG_OP = 'UPDATE' THEN
        SELECT array_agg(r.user_id), array_agg((r.created_at AT TIME ZONE 'UTC')::date) INTO user_ids, days
          FROM (SELECT * FROM old_rows UNION ALL SELECT * FROM new_rows) changed
          JOIN transactions r ON (changed.type = 'release' AND r.id = changed.id)
                              OR (changed.type = 'hold' AND r.related_transaction_id = changed.id
                                  AND r.type = 'release');
        SELECT user_ids || array_agg(user_id), days || array_agg((created_at AT TIME ZONE 'UTC')::date)
          INTO user_ids, days
          FROM old_rows WHERE type = 'release';
    ELSE
        SELECT array_agg(r.user_id), array_agg((r.created_at AT TIME ZONE 'UTC')::date) INTO user_ids, days
          FROM (SELECT * FROM old_rows WHERE type = 'release'
                UNION ALL
                SELECT r.* FROM old_rows h JOIN transactions r ON r.related_transaction_id = h.id
                                                              AND r.type = 'release') r;
    END IF;
    PERFORM usage_recount(user_ids, days);
    RETURN NULL;
END;
$$;

-- ---------------------------------------------------------------- tables and views

CREATE TABLE access_key_period_spend (
    access_key_id uuid NOT NULL,
    period_start timestamp with time zone NOT NULL,
    charged numeric(20,10) DEFAULT 0 NOT NULL
);

CREATE TABLE access_keys (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    user_id uuid NOT NULL,
    name text NOT NULL,
    key_hash bytea NOT NULL,
    last4 text NOT NULL,
    allowed_models text[],
    spend_limit numeric(20,10),
    spend_limit_period text,
    spent numeric(20,10) DEFAULT 0 NOT NULL,
    expires_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    last_used_at timestamp with time zone,
    revoked_at timestamp with time zone,
    CONSTRAINT access_keys_key_hash_check CHECK ((length(key_hash) = 32)),
    CONSTRAINT access_keys_last4_check CHECK ((length(last4) = 4)),
    CONSTRAINT access_keys_limit_has_period CHECK (((spend_limit IS NULL) = (spend_limit_period IS NULL))),
    CONSTRAINT access_keys_name_check CHECK (((length(name) >= 1) AND (length(name) <= 100))),
    CONSTRAINT access_keys_spend_limit_check CHECK ((spend_limit > (0)::numeric)),
    CONSTRAINT access_keys_spend_limit_period_check CHECK ((spend_limit_period = ANY (ARRAY['day'::text, 'month'::text, 'total'::text]))),
    CONSTRAINT access_keys_spent_check CHECK ((spent >= (0)::numeric))
);

CREATE TABLE admin_actions (
    id bigint NOT NULL,
    admin_id uuid,
    action text NOT NULL,
    target_user_id uuid,
    target_model text,
    reason text NOT NULL,
    details jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT admin_actions_action_check CHECK ((action = ANY (ARRAY['grant_admin'::text, 'revoke_admin'::text, 'credit'::text, 'debit'::text, 'disable_user'::text, 'enable_user'::text, 'add_model'::text, 'change_model'::text, 'disable_model'::text, 'enable_model'::text, 'schedule_price'::text, 'reconcile'::text, 'add_alias_list'::text, 'change_alias_list'::text, 'drop_alias_list'::text]))),
    CONSTRAINT admin_actions_reason_check CHECK (((length(btrim(reason)) >= 1) AND (length(btrim(reason)) <= 400)))
);

ALTER TABLE admin_actions ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME admin_actions_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE admins (
    user_id uuid NOT NULL,
    granted_at timestamp with time zone DEFAULT now() NOT NULL
);

CREATE TABLE alert_deliveries (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    user_id uuid NOT NULL,
    channel text NOT NULL,
    webhook_id uuid,
    kind text NOT NULL,
    payload jsonb NOT NULL,
    status text DEFAULT 'pending'::text NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    next_attempt_at timestamp with time zone DEFAULT now() NOT NULL,
    last_status integer,
    last_error text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    delivered_at timestamp with time zone,
    CONSTRAINT alert_deliveries_channel_check CHECK ((channel = ANY (ARRAY['webhook'::text, 'email'::text]))),
    CONSTRAINT alert_deliveries_check CHECK (((channel = 'webhook'::text) = (webhook_id IS NOT NULL))),
    CONSTRAINT alert_deliveries_kind_check CHECK ((kind = ANY (ARRAY['low_balance'::text, 'key_spend_80'::text, 'key_spend_100'::text, 'daily_limit_reached'::text]))),
    CONSTRAINT alert_deliveries_last_error_check CHECK ((length(last_error) <= 500)),
    CONSTRAINT alert_deliveries_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'delivered'::text, 'failed'::text])))
);

CREATE TABLE alert_marks (
    subject text NOT NULL,
    kind text NOT NULL,
    period text NOT NULL,
    made_at timestamp with time zone DEFAULT now() NOT NULL
);

CREATE TABLE alias_lists (
    alias text NOT NULL,
    models text[] NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT alias_lists_alias_check CHECK (((alias ~ '^[A-Za-z0-9._:-]+$'::text) AND (length(alias) <= 100))),
    CONSTRAINT alias_lists_models_check CHECK (((cardinality(models) >= 1) AND (cardinality(models) <= 6)))
);

CREATE TABLE api_keys (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    user_id uuid NOT NULL,
    provider text NOT NULL,
    label text,
    encrypted_key bytea NOT NULL,
    nonce bytea NOT NULL,
    encryption_kid text NOT NULL,
    key_fingerprint bytea NOT NULL,
    last4 text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    last_used_at timestamp with time zone,
    CONSTRAINT api_keys_label_check CHECK ((length(label) <= 100)),
    CONSTRAINT api_keys_last4_check CHECK ((length(last4) <= 4)),
    CONSTRAINT api_keys_nonce_check CHECK ((length(nonce) = 12)),
    CONSTRAINT api_keys_provider_check CHECK (((provider ~ '^[a-z0-9-]{1,32}$'::text) AND (provider <> 'local'::text)))
);

CREATE TABLE audit_log (
    id bigint NOT NULL,
    table_name text NOT NULL,
    operation text NOT NULL,
    row_id text NOT NULL,
    acting_user_id uuid,
    old_row jsonb,
    new_row jsonb,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT audit_log_operation_check CHECK ((operation = ANY (ARRAY['INSERT'::text, 'UPDATE'::text, 'DELETE'::text])))
);

ALTER TABLE audit_log ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME audit_log_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE chat_history (
    id bigint NOT NULL,
    session_id uuid NOT NULL,
    user_id uuid NOT NULL,
    role text NOT NULL,
    content text NOT NULL,
    prompt_tokens integer DEFAULT 0 NOT NULL,
    completion_tokens integer DEFAULT 0 NOT NULL,
    cost numeric(20,10) DEFAULT 0 NOT NULL,
    transaction_id bigint,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT chat_history_completion_tokens_check CHECK ((completion_tokens >= 0)),
    CONSTRAINT chat_history_cost_check CHECK ((cost >= (0)::numeric)),
    CONSTRAINT chat_history_prompt_tokens_check CHECK ((prompt_tokens >= 0)),
    CONSTRAINT chat_history_role_check CHECK ((role = ANY (ARRAY['system'::text, 'user'::text, 'assistant'::text])))
);

ALTER TABLE chat_history ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME chat_history_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE chat_sessions (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    user_id uuid NOT NULL,
    model_id text NOT NULL,
    title text DEFAULT ''::text NOT NULL,
    message_count integer DEFAULT 0 NOT NULL,
    total_prompt_tokens bigint DEFAULT 0 NOT NULL,
    total_completion_tokens bigint DEFAULT 0 NOT NULL,
    total_cost numeric(20,10) DEFAULT 0 NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT chat_sessions_message_count_check CHECK ((message_count >= 0)),
    CONSTRAINT chat_sessions_title_check CHECK ((length(title) <= 200)),
    CONSTRAINT chat_sessions_total_completion_tokens_check CHECK ((total_completion_tokens >= 0)),
    CONSTRAINT chat_sessions_total_cost_check CHECK ((total_cost >= (0)::numeric)),
    CONSTRAINT chat_sessions_total_prompt_tokens_check CHECK ((total_prompt_tokens >= 0))
);

CREATE TABLE deposit_cap (
    only_row boolean DEFAULT true NOT NULL,
    max_amount numeric(20,10) NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT deposit_cap_max_amount_check CHECK ((max_amount > (0)::numeric)),
    CONSTRAINT deposit_cap_only_row_check CHECK (only_row)
);

CREATE TABLE house_key_failures (
    provider text NOT NULL,
    setting text NOT NULL,
    status smallint NOT NULL,
    failed_at timestamp with time zone DEFAULT now() NOT NULL,
    failures bigint DEFAULT 1 NOT NULL
);

CREATE TABLE idempotency_keys (
    user_id uuid NOT NULL,
    key text NOT NULL,
    request_hash text NOT NULL,
    state text DEFAULT 'in_progress'::text NOT NULL,
    response_status integer,
    response_body text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    stale_at timestamp with time zone,
    CONSTRAINT idempotency_keys_key_check CHECK (((length(key) >= 1) AND (length(key) <= 292))),
    CONSTRAINT idempotency_keys_state_check CHECK ((state = ANY (ARRAY['in_progress'::text, 'done'::text])))
);

CREATE TABLE login_attempts (
    email text NOT NULL,
    failures integer DEFAULT 0 NOT NULL,
    window_start timestamp with time zone DEFAULT now() NOT NULL,
    locked_until timestamp with time zone,
    CONSTRAINT login_attempts_failures_check CHECK ((failures >= 0))
);

CREATE TABLE model_usage_stats (
    model_id text NOT NULL,
    day date NOT NULL,
    bucket smallint NOT NULL,
    request_count bigint DEFAULT 0 NOT NULL,
    prompt_tokens bigint DEFAULT 0 NOT NULL,
    completion_tokens bigint DEFAULT 0 NOT NULL,
    total_cost numeric(20,10) DEFAULT 0 NOT NULL,
    CONSTRAINT model_usage_stats_bucket_check CHECK (((bucket >= 0) AND (bucket <= 15))),
    CONSTRAINT model_usage_stats_completion_tokens_check CHECK ((completion_tokens >= 0)),
    CONSTRAINT model_usage_stats_prompt_tokens_check CHECK ((prompt_tokens >= 0)),
    CONSTRAINT model_usage_stats_request_count_check CHECK ((request_count >= 0)),
    CONSTRAINT model_usage_stats_total_cost_check CHECK ((total_cost >= (0)::numeric))
);

CREATE TABLE models (
    id text NOT NULL,
    provider text NOT NULL,
    name text NOT NULL,
    description text DEFAULT ''::text NOT NULL,
    context_window integer NOT NULL,
    max_output_tokens integer NOT NULL,
    input_price_per_mtok numeric(20,10) NOT NULL,
    output_price_per_mtok numeric(20,10) NOT NULL,
    prices_as_of date NOT NULL,
    capabilities text[] DEFAULT '{}'::text[] NOT NULL,
    is_active boolean DEFAULT true NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    features text[] DEFAULT '{}'::text[] NOT NULL,
    input_modalities text[] DEFAULT '{text}'::text[] NOT NULL,
    aliases text[] DEFAULT '{}'::text[] NOT NULL,
    cache_read_price_per_mtok numeric(20,10),
    cache_write_price_per_mtok numeric(20,10),
    cache_write_1h_price_per_mtok numeric(20,10),
    deployments jsonb DEFAULT '[]'::jsonb NOT NULL,
    CONSTRAINT models_aliases_check CHECK ((NOT (split_part(id, '/'::text, 2) = ANY (aliases)))),
    CONSTRAINT models_cache_prices_check CHECK (
CASE
    WHEN ('caching'::text = ANY (features)) THEN (cache_read_price_per_mtok IS NOT NULL)
    ELSE (num_nulls(cache_read_price_per_mtok, cache_write_price_per_mtok, cache_write_1h_price_per_mtok) = 3)
END),
    CONSTRAINT models_cache_read_price_check CHECK ((cache_read_price_per_mtok >= (0)::numeric)),
    CONSTRAINT models_cache_write_1h_price_check CHECK ((cache_write_1h_price_per_mtok >= (0)::numeric)),
    CONSTRAINT models_cache_write_price_check CHECK ((cache_write_price_per_mtok >= (0)::numeric)),
    CONSTRAINT models_check CHECK ((split_part(id, '/'::text, 1) = provider)),
    CONSTRAINT models_context_window_check CHECK ((context_window > 0)),
    CONSTRAINT models_deployments_check CHECK ((jsonb_typeof(deployments) = 'array'::text)),
    CONSTRAINT models_description_check CHECK ((length(description) <= 2000)),
    CONSTRAINT models_features_check CHECK ((features <@ ARRAY['tools'::text, 'structured_output'::text, 'images'::text, 'caching'::text, 'reasoning'::text])),
    CONSTRAINT models_id_check CHECK (((id ~ '^[a-z0-9-]+/[A-Za-z0-9._:-]+$'::text) AND (length(id) <= 100))),
    CONSTRAINT models_image_input_check CHECK ((('images'::text = ANY (features)) = ('image'::text = ANY (input_modalities)))),
    CONSTRAINT models_input_modalities_check CHECK (((input_modalities <@ ARRAY['text'::text, 'image'::text]) AND ('text'::text = ANY (input_modalities)))),
    CONSTRAINT models_input_price_per_mtok_check CHECK ((input_price_per_mtok >= (0)::numeric)),
    CONSTRAINT models_max_output_tokens_check CHECK ((max_output_tokens > 0)),
    CONSTRAINT models_name_check CHECK (((length(name) >= 1) AND (length(name) <= 100))),
    CONSTRAINT models_output_price_per_mtok_check CHECK ((output_price_per_mtok >= (0)::numeric)),
    CONSTRAINT models_provider_check CHECK ((provider ~ '^[a-z0-9-]{1,32}$'::text))
);

CREATE VIEW model_popularity AS
 SELECT m.id AS model_id,
    m.provider,
    m.name,
    (COALESCE(sum(s.request_count), (0)::numeric))::bigint AS request_count,
    (COALESCE(sum(s.prompt_tokens), (0)::numeric))::bigint AS prompt_tokens,
    (COALESCE(sum(s.completion_tokens), (0)::numeric))::bigint AS completion_tokens,
    COALESCE(sum(s.total_cost), (0)::numeric) AS total_cost,
    max(s.day) AS last_used_day,
    rank() OVER (ORDER BY COALESCE(sum(s.request_count), (0)::numeric) DESC) AS popularity_rank
   FROM (models m
     LEFT JOIN model_usage_stats s ON ((s.model_id = m.id)))
  GROUP BY m.id, m.provider, m.name;

ALTER TABLE model_prices ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME model_prices_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE model_ratings (
    user_id uuid NOT NULL,
    model_id text NOT NULL,
    rating smallint NOT NULL,
    review text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT model_ratings_rating_check CHECK (((rating >= 1) AND (rating <= 5))),
    CONSTRAINT model_ratings_review_check CHECK ((length(review) <= 2000))
);

CREATE TABLE transactions (
    id bigint NOT NULL,
    user_id uuid NOT NULL,
    type text NOT NULL,
    amount numeric(20,10) NOT NULL,
    available_after numeric(20,10) NOT NULL,
    related_transaction_id bigint,
    description text DEFAULT ''::text NOT NULL,
    metadata jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    call_deadline timestamp with time zone,
    model_id text,
    access_key_id uuid,
    hold_token uuid,
    CONSTRAINT transactions_amount_check CHECK ((amount >= (0)::numeric)),
    CONSTRAINT transactions_available_after_check CHECK ((available_after >= (0)::numeric)),
    CONSTRAINT transactions_check CHECK (((type = 'release'::text) OR (amount > (0)::numeric))),
    CONSTRAINT transactions_check1 CHECK (((type = 'release'::text) = (related_transaction_id IS NOT NULL))),
    CONSTRAINT transactions_description_check CHECK ((length(description) <= 500)),
    CONSTRAINT transactions_hold_token_check CHECK (((hold_token IS NULL) OR (type = 'hold'::text))),
    CONSTRAINT transactions_type_check CHECK ((type = ANY (ARRAY['deposit'::text, 'hold'::text, 'release'::text, 'debit'::text])))
);

CREATE VIEW recent_activity AS
 SELECT t.user_id,
    'transaction'::text AS kind,
    t.id AS item_id,
    t.type AS action,
    t.amount,
    NULL::integer AS prompt_tokens,
    NULL::integer AS completion_tokens,
    (t.metadata ->> 'session_id'::text) AS session_id,
    COALESCE(t.model_id, (t.metadata ->> 'model_id'::text)) AS model_id,
    t.access_key_id,
    t.created_at,
    charge_parts(c.*) AS charge
   FROM (transactions t
     LEFT JOIN call_charges c ON (((t.type = 'release'::text) AND (c.hold_id = t.related_transaction_id))))
UNION ALL
 SELECT h.user_id,
    'message'::text AS kind,
    h.id AS item_id,
    h.role AS action,
    h.cost AS amount,
    h.prompt_tokens,
    h.completion_tokens,
    (h.session_id)::text AS session_id,
    s.model_id,
    NULL::uuid AS access_key_id,
    h.created_at,
    NULL::json AS charge
   FROM (chat_history h
     JOIN chat_sessions s ON ((s.id = h.session_id)));

CREATE TABLE reconcile_schedule (
    only_row boolean DEFAULT true NOT NULL,
    next_run_at timestamp with time zone NOT NULL,
    reconciled_until timestamp with time zone,
    CONSTRAINT reconcile_schedule_only_row_check CHECK (only_row)
);

CREATE TABLE refresh_tokens (
    jti uuid NOT NULL,
    user_id uuid NOT NULL,
    generation integer NOT NULL,
    issued_at timestamp with time zone DEFAULT now() NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    used_at timestamp with time zone,
    replaced_by uuid
);

CREATE TABLE schema_version (
    version integer NOT NULL,
    description text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);

ALTER TABLE transactions ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME transactions_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE VIEW usage_calls AS
 SELECT rel.id AS release_id,
    hold.id AS hold_id,
    rel.user_id,
    ((rel.created_at AT TIME ZONE 'UTC'::text))::date AS day,
    COALESCE(hold.model_id, (hold.metadata ->> 'model_id'::text)) AS model_id,
    hold.access_key_id,
    (hold.amount - rel.amount) AS cost,
    c.input_tokens,
    c.cached_input_tokens,
    (c.cache_write_tokens + c.cache_write_1h_tokens) AS cache_write_tokens,
    c.output_tokens
   FROM ((transactions rel
     JOIN transactions hold ON ((hold.id = rel.related_transaction_id)))
     LEFT JOIN call_charges c ON ((c.hold_id = hold.id)))
  WHERE ((rel.type = 'release'::text) AND (rel.amount < hold.amount));

CREATE TABLE usage_daily (
    user_id uuid NOT NULL,
    day date NOT NULL,
    model_id text,
    access_key_id uuid,
    requests bigint NOT NULL,
    cost numeric(20,10) NOT NULL,
    input_tokens bigint,
    cached_input_tokens bigint,
    cache_write_tokens bigint,
    output_tokens bigint,
    CONSTRAINT usage_daily_cost_check CHECK ((cost > (0)::numeric)),
    CONSTRAINT usage_daily_requests_check CHECK ((requests > 0))
);

CREATE VIEW usage_from_ledger AS
 SELECT usage_calls.user_id,
    usage_calls.day,
    usage_calls.model_id,
    usage_calls.access_key_id,
    count(*) AS requests,
    sum(usage_calls.cost) AS cost,
    sum(usage_calls.input_tokens) AS input_tokens,
    sum(usage_calls.cached_input_tokens) AS cached_input_tokens,
    sum(usage_calls.cache_write_tokens) AS cache_write_tokens,
    sum(usage_calls.output_tokens) AS output_tokens
   FROM usage_calls
  GROUP BY usage_calls.user_id, usage_calls.day, usage_calls.model_id, usage_calls.access_key_id;

CREATE VIEW usage_rollup_differences AS
 SELECT sides.user_id,
    sides.day,
    sides.model_id,
    sides.access_key_id,
    (array_agg(sides.counts) FILTER (WHERE (sides.source = 'rollup'::text)))[1] AS rollup,
    (array_agg(sides.counts) FILTER (WHERE (sides.source = 'ledger'::text)))[1] AS ledger
   FROM ( SELECT 'rollup'::text AS source,
            usage_daily.user_id,
            usage_daily.day,
            usage_daily.model_id,
            usage_daily.access_key_id,
            jsonb_build_object('requests', usage_daily.requests, 'cost', usage_daily.cost, 'input_tokens', usage_daily.input_tokens, 'cached_input_tokens', usage_daily.cached_input_tokens, 'cache_write_tokens', usage_daily.cache_write_tokens, 'output_tokens', usage_daily.output_tokens) AS counts
           FROM usage_daily
        UNION ALL
         SELECT 'ledger'::text,
            usage_from_ledger.user_id,
            usage_from_ledger.day,
            usage_from_ledger.model_id,
            usage_from_ledger.access_key_id,
            jsonb_build_object('requests', usage_from_ledger.requests, 'cost', usage_from_ledger.cost, 'input_tokens', usage_from_ledger.input_tokens, 'cached_input_tokens', usage_from_ledger.cached_input_tokens, 'cache_write_tokens', usage_from_ledger.cache_write_tokens, 'output_tokens', usage_from_ledger.output_tokens) AS jsonb_build_object
           FROM usage_from_ledger) sides
  GROUP BY sides.user_id, sides.day, sides.model_id, sides.access_key_id
 HAVING ((array_agg(sides.counts) FILTER (WHERE (sides.source = 'rollup'::text)))[1] IS DISTINCT FROM (array_agg(sides.counts) FILTER (WHERE (sides.source = 'ledger'::text)))[1]);

CREATE TABLE user_balance (
    user_id uuid NOT NULL,
    total_balance numeric(20,10) DEFAULT 0 NOT NULL,
    spent_balance numeric(20,10) DEFAULT 0 NOT NULL,
    held_balance numeric(20,10) DEFAULT 0 NOT NULL,
    currency character(3) DEFAULT 'USD'::bpchar NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT user_balance_available_non_negative CHECK (((total_balance - spent_balance) >= (0)::numeric)),
    CONSTRAINT user_balance_held_balance_check CHECK ((held_balance >= (0)::numeric)),
    CONSTRAINT user_balance_held_within_spent CHECK ((held_balance <= spent_balance)),
    CONSTRAINT user_balance_spent_balance_check CHECK ((spent_balance >= (0)::numeric)),
    CONSTRAINT user_balance_total_balance_check CHECK ((total_balance >= (0)::numeric))
);

CREATE TABLE user_preferences (
    user_id uuid NOT NULL,
    default_model_id text,
    preferred_providers text[] DEFAULT '{}'::text[] NOT NULL,
    daily_spend_limit numeric(20,10),
    max_cost_per_message numeric(20,10),
    theme text DEFAULT 'system'::text NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    house_key_fallback boolean DEFAULT false NOT NULL,
    low_balance_threshold numeric(20,10),
    email_alerts boolean DEFAULT false NOT NULL,
    CONSTRAINT user_preferences_daily_spend_limit_check CHECK ((daily_spend_limit >= (0)::numeric)),
    CONSTRAINT user_preferences_low_balance_threshold_check CHECK ((low_balance_threshold > (0)::numeric)),
    CONSTRAINT user_preferences_max_cost_per_message_check CHECK ((max_cost_per_message >= (0)::numeric)),
    CONSTRAINT user_preferences_theme_check CHECK ((theme = ANY (ARRAY['system'::text, 'light'::text, 'dark'::text])))
);

CREATE TABLE users (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    email text NOT NULL,
    username text NOT NULL,
    password_hash text NOT NULL,
    token_generation integer DEFAULT 0 NOT NULL,
    is_active boolean DEFAULT true NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT users_email_check CHECK (((email = lower(email)) AND ((length(email) >= 3) AND (length(email) <= 254)))),
    CONSTRAINT users_username_check CHECK (((length(username) >= 3) AND (length(username) <= 32)))
);

CREATE VIEW user_with_balance AS
 SELECT u.id,
    u.username,
    u.is_active,
    u.created_at,
    b.total_balance,
    b.spent_balance,
    (b.total_balance - b.spent_balance) AS available_balance,
    b.held_balance,
    b.currency
   FROM (users u
     JOIN user_balance b ON ((b.user_id = u.id)));

CREATE TABLE webhooks (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    user_id uuid NOT NULL,
    url text NOT NULL,
    encryption_kid text NOT NULL,
    nonce bytea NOT NULL,
    encrypted_secret bytea NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT webhooks_url_check CHECK ((length(url) <= 2000))
);

-- ---------------------------------------------------------------- primary keys and unique constraints

ALTER TABLE ONLY access_key_period_spend
    ADD CONSTRAINT access_key_period_spend_pkey PRIMARY KEY (access_key_id, period_start);

ALTER TABLE ONLY access_keys
    ADD CONSTRAINT access_keys_key_hash_key UNIQUE (key_hash);

ALTER TABLE ONLY access_keys
    ADD CONSTRAINT access_keys_pkey PRIMARY KEY (id);

ALTER TABLE ONLY admin_actions
    ADD CONSTRAINT admin_actions_pkey PRIMARY KEY (id);

ALTER TABLE ONLY admins
    ADD CONSTRAINT admins_pkey PRIMARY KEY (user_id);

ALTER TABLE ONLY alert_deliveries
    ADD CONSTRAINT alert_deliveries_pkey PRIMARY KEY (id);

ALTER TABLE ONLY alert_marks
    ADD CONSTRAINT alert_marks_pkey PRIMARY KEY (subject, kind, period);

ALTER TABLE ONLY alias_lists
    ADD CONSTRAINT alias_lists_pkey PRIMARY KEY (alias);

ALTER TABLE ONLY api_keys
    ADD CONSTRAINT api_keys_pkey PRIMARY KEY (id);

ALTER TABLE ONLY audit_log
    ADD CONSTRAINT audit_log_pkey PRIMARY KEY (id);

ALTER TABLE ONLY call_charges
    ADD CONSTRAINT call_charges_pkey PRIMARY KEY (hold_id);

ALTER TABLE ONLY chat_history
    ADD CONSTRAINT chat_history_pkey PRIMARY KEY (id);

ALTER TABLE ONLY chat_sessions
    ADD CONSTRAINT chat_sessions_pkey PRIMARY KEY (id);

ALTER TABLE ONLY deposit_cap
    ADD CONSTRAINT deposit_cap_pkey PRIMARY KEY (only_row);

ALTER TABLE ONLY house_key_failures
    ADD CONSTRAINT house_key_failures_pkey PRIMARY KEY (provider, setting);

ALTER TABLE ONLY idempotency_keys
    ADD CONSTRAINT idempotency_keys_pkey PRIMARY KEY (user_id, key);

ALTER TABLE ONLY login_attempts
    ADD CONSTRAINT login_attempts_pkey PRIMARY KEY (email);

ALTER TABLE ONLY model_prices
    ADD CONSTRAINT model_prices_model_id_effective_from_key UNIQUE (model_id, effective_from);

ALTER TABLE ONLY model_prices
    ADD CONSTRAINT model_prices_pkey PRIMARY KEY (id);

ALTER TABLE ONLY model_ratings
    ADD CONSTRAINT model_ratings_pkey PRIMARY KEY (user_id, model_id);

ALTER TABLE ONLY model_usage_stats
    ADD CONSTRAINT model_usage_stats_pkey PRIMARY KEY (model_id, day, bucket);

ALTER TABLE ONLY models
    ADD CONSTRAINT models_pkey PRIMARY KEY (id);

ALTER TABLE ONLY reconcile_schedule
    ADD CONSTRAINT reconcile_schedule_pkey PRIMARY KEY (only_row);

ALTER TABLE ONLY refresh_tokens
    ADD CONSTRAINT refresh_tokens_pkey PRIMARY KEY (jti);

ALTER TABLE ONLY schema_version
    ADD CONSTRAINT schema_version_pkey PRIMARY KEY (version);

ALTER TABLE ONLY transactions
    ADD CONSTRAINT transactions_pkey PRIMARY KEY (id);

ALTER TABLE ONLY usage_daily
    ADD CONSTRAINT usage_daily_key UNIQUE NULLS NOT DISTINCT (user_id, day, model_id, access_key_id);

ALTER TABLE ONLY user_balance
    ADD CONSTRAINT user_balance_pkey PRIMARY KEY (user_id);

ALTER TABLE ONLY user_preferences
    ADD CONSTRAINT user_preferences_pkey PRIMARY KEY (user_id);

ALTER TABLE ONLY users
    ADD CONSTRAINT users_pkey PRIMARY KEY (id);

ALTER TABLE ONLY webhooks
    ADD CONSTRAINT webhooks_pkey PRIMARY KEY (id);

-- ---------------------------------------------------------------- indexes

CREATE INDEX access_keys_user_live_idx ON access_keys USING btree (user_id, created_at DESC, id DESC) WHERE (revoked_at IS NULL);

CREATE INDEX admin_actions_by_admin ON admin_actions USING btree (admin_id, id DESC);

CREATE INDEX admin_actions_by_target ON admin_actions USING btree (target_user_id, id DESC) WHERE (target_user_id IS NOT NULL);

CREATE INDEX admin_actions_newest ON admin_actions USING btree (id DESC);

CREATE INDEX alert_deliveries_due_idx ON alert_deliveries USING btree (next_attempt_at) WHERE (status = 'pending'::text);

CREATE INDEX alert_deliveries_finished_idx ON alert_deliveries USING btree (created_at) WHERE (status <> 'pending'::text);

CREATE INDEX alert_deliveries_user_idx ON alert_deliveries USING btree (user_id, created_at DESC, id);

CREATE INDEX alert_deliveries_webhook_idx ON alert_deliveries USING btree (webhook_id, created_at DESC, id);

CREATE UNIQUE INDEX api_keys_user_fingerprint_key ON api_keys USING btree (user_id, key_fingerprint);

CREATE INDEX api_keys_user_provider_idx ON api_keys USING btree (user_id, provider, created_at DESC);

CREATE INDEX audit_log_created_idx ON audit_log USING btree (created_at);

CREATE INDEX audit_log_table_row_idx ON audit_log USING btree (table_name, row_id);

CREATE INDEX chat_history_created_idx ON chat_history USING btree (created_at);

CREATE INDEX chat_history_session_idx ON chat_history USING btree (session_id, id);

CREATE INDEX chat_history_user_idx ON chat_history USING btree (user_id, id DESC);

CREATE INDEX chat_history_user_time_idx ON chat_history USING btree (user_id, created_at, id);

CREATE INDEX chat_sessions_user_idx ON chat_sessions USING btree (user_id, created_at DESC, id DESC);

CREATE INDEX idempotency_keys_created_idx ON idempotency_keys USING btree (created_at);

CREATE INDEX model_ratings_model_idx ON model_ratings USING btree (model_id);

CREATE INDEX models_provider_idx ON models USING btree (provider) WHERE is_active;

CREATE INDEX refresh_tokens_expires_idx ON refresh_tokens USING btree (expires_at);

CREATE INDEX refresh_tokens_user_idx ON refresh_tokens USING btree (user_id);

CREATE INDEX transactions_access_key_idx ON transactions USING btree (access_key_id, created_at) WHERE (access_key_id IS NOT NULL);

CREATE UNIQUE INDEX transactions_hold_token_key ON transactions USING btree (hold_token) WHERE (hold_token IS NOT NULL);

CREATE INDEX transactions_holds_idx ON transactions USING btree (created_at) WHERE (type = 'hold'::text);

CREATE UNIQUE INDEX transactions_one_release_per_hold ON transactions USING btree (related_transaction_id) WHERE (type = 'release'::text);

CREATE INDEX transactions_user_idx ON transactions USING btree (user_id, id DESC);

CREATE INDEX transactions_user_time_idx ON transactions USING btree (user_id, created_at, id);

CREATE INDEX transactions_user_type_idx ON transactions USING btree (user_id, type, id DESC);

CREATE UNIQUE INDEX users_email_key ON users USING btree (email);

CREATE UNIQUE INDEX users_username_key ON users USING btree (lower(username));

CREATE INDEX webhooks_user_idx ON webhooks USING btree (user_id, created_at DESC, id DESC);

-- ---------------------------------------------------------------- triggers

CREATE CONSTRAINT TRIGGER alias_lists_valid AFTER INSERT OR UPDATE ON alias_lists DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION alias_lists_check();

CREATE TRIGGER audit_access_keys AFTER INSERT OR DELETE OR UPDATE ON access_keys FOR EACH ROW EXECUTE FUNCTION audit_row_change('id');

CREATE TRIGGER audit_api_keys AFTER INSERT OR DELETE OR UPDATE ON api_keys FOR EACH ROW EXECUTE FUNCTION audit_row_change('id');

CREATE TRIGGER audit_model_ratings AFTER INSERT OR DELETE OR UPDATE ON model_ratings FOR EACH ROW EXECUTE FUNCTION audit_row_change('user_id');

CREATE TRIGGER audit_transactions AFTER INSERT OR DELETE OR UPDATE ON transactions FOR EACH ROW EXECUTE FUNCTION audit_row_change('id');

CREATE TRIGGER audit_user_balance AFTER INSERT OR DELETE OR UPDATE ON user_balance FOR EACH ROW EXECUTE FUNCTION audit_row_change('user_id');

CREATE TRIGGER audit_user_preferences AFTER INSERT OR DELETE OR UPDATE ON user_preferences FOR EACH ROW EXECUTE FUNCTION audit_row_change('user_id');

CREATE TRIGGER audit_users AFTER INSERT OR DELETE OR UPDATE ON users FOR EACH ROW EXECUTE FUNCTION audit_row_change('id');

CREATE TRIGGER model_prices_unchangeable BEFORE DELETE OR UPDATE OR TRUNCATE ON model_prices FOR EACH STATEMENT EXECUTE FUNCTION model_prices_unchangeable();

CREATE CONSTRAINT TRIGGER models_list_names_unique AFTER INSERT OR UPDATE OF id, aliases ON models DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION models_list_names_check();

CREATE CONSTRAINT TRIGGER models_names_unique AFTER INSERT OR UPDATE OF id, aliases ON models DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION models_names_check();

CREATE TRIGGER models_price_version AFTER INSERT OR UPDATE OF input_price_per_mtok, output_price_per_mtok, cache_read_price_per_mtok, cache_write_price_per_mtok, cache_write_1h_price_per_mtok ON models FOR EACH ROW EXECUTE FUNCTION models_price_version();

CREATE TRIGGER touch_chat_sessions BEFORE UPDATE ON chat_sessions FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TRIGGER touch_model_ratings BEFORE UPDATE ON model_ratings FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TRIGGER touch_models BEFORE UPDATE ON models FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TRIGGER touch_user_preferences BEFORE UPDATE ON user_preferences FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TRIGGER touch_users BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TRIGGER transactions_alerts AFTER INSERT ON transactions FOR EACH ROW EXECUTE FUNCTION transactions_alerts();

CREATE TRIGGER usage_count_charges AFTER INSERT ON call_charges FOR EACH ROW EXECUTE FUNCTION usage_count_charges();

CREATE TRIGGER usage_count_release AFTER INSERT ON transactions FOR EACH ROW WHEN ((new.type = 'release'::text)) EXECUTE FUNCTION usage_count_release();

CREATE TRIGGER usage_recount_charges_delete AFTER DELETE ON call_charges REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_recount_charges();

CREATE TRIGGER usage_recount_charges_update AFTER UPDATE ON call_charges REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_recount_charges();

CREATE TRIGGER usage_recount_ledger_delete AFTER DELETE ON transactions REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_recount_ledger();

CREATE TRIGGER usage_recount_ledger_update AFTER UPDATE ON transactions REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_recount_ledger();

CREATE TRIGGER users_create_balance AFTER INSERT ON users FOR EACH ROW EXECUTE FUNCTION create_user_balance();

-- ---------------------------------------------------------------- foreign keys

ALTER TABLE ONLY access_key_period_spend
    ADD CONSTRAINT access_key_period_spend_access_key_id_fkey FOREIGN KEY (access_key_id) REFERENCES access_keys(id) ON DELETE CASCADE;

ALTER TABLE ONLY access_keys
    ADD CONSTRAINT access_keys_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE;

ALTER TABLE ONLY admin_actions
    ADD CONSTRAINT admin_actions_admin_id_fkey FOREIGN KEY (admin_id) REFERENCES users(id);

ALTER TABLE ONLY admin_actions
    ADD CONSTRAINT admin_actions_target_user_id_fkey FOREIGN KEY (target_user_id) REFERENCES users(id);

ALTER TABLE ONLY admins
    ADD CONSTRAINT admins_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(id);

ALTER TABLE ONLY alert_deliveries
    ADD CONSTRAINT alert_deliveries_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE;

ALTER TABLE ONLY alert_deliveries
    ADD CONSTRAINT alert_deliveries_webhook_id_fkey FOREIGN KEY (webhook_id) REFERENCES webhooks(id) ON DELETE CASCADE;

ALTER TABLE ONLY api_keys
    ADD CONSTRAINT api_keys_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE;

ALTER TABLE ONLY call_charges
    ADD CONSTRAINT call_charges_hold_id_fkey FOREIGN KEY (hold_id) REFERENCES transactions(id);

ALTER TABLE ONLY chat_history
    ADD CONSTRAINT chat_history_session_id_fkey FOREIGN KEY (session_id) REFERENCES chat_sessions(id) ON DELETE CASCADE;

ALTER TABLE ONLY chat_history
    ADD CONSTRAINT chat_history_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE;

ALTER TABLE ONLY chat_sessions
    ADD CONSTRAINT chat_sessions_model_id_fkey FOREIGN KEY (model_id) REFERENCES models(id);

ALTER TABLE ONLY chat_sessions
    ADD CONSTRAINT chat_sessions_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE;

ALTER TABLE ONLY idempotency_keys
    ADD CONSTRAINT idempotency_keys_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE;

ALTER TABLE ONLY model_prices
    ADD CONSTRAINT model_prices_admin_id_fkey FOREIGN KEY (admin_id) REFERENCES users(id);

ALTER TABLE ONLY model_prices
    ADD CONSTRAINT model_prices_model_id_fkey FOREIGN KEY (model_id) REFERENCES models(id);

ALTER TABLE ONLY model_ratings
    ADD CONSTRAINT model_ratings_model_id_fkey FOREIGN KEY (model_id) REFERENCES models(id);

ALTER TABLE ONLY model_ratings
    ADD CONSTRAINT model_ratings_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE;

ALTER TABLE ONLY model_usage_stats
    ADD CONSTRAINT model_usage_stats_model_id_fkey FOREIGN KEY (model_id) REFERENCES models(id);

ALTER TABLE ONLY refresh_tokens
    ADD CONSTRAINT refresh_tokens_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE;

ALTER TABLE ONLY transactions
    ADD CONSTRAINT transactions_access_key_id_fkey FOREIGN KEY (access_key_id) REFERENCES access_keys(id) ON DELETE RESTRICT;

ALTER TABLE ONLY transactions
    ADD CONSTRAINT transactions_related_transaction_id_fkey FOREIGN KEY (related_transaction_id) REFERENCES transactions(id);

ALTER TABLE ONLY transactions
    ADD CONSTRAINT transactions_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(id);

ALTER TABLE ONLY usage_daily
    ADD CONSTRAINT usage_daily_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(id);

ALTER TABLE ONLY user_balance
    ADD CONSTRAINT user_balance_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(id);

ALTER TABLE ONLY user_preferences
    ADD CONSTRAINT user_preferences_default_model_id_fkey FOREIGN KEY (default_model_id) REFERENCES models(id);

ALTER TABLE ONLY user_preferences
    ADD CONSTRAINT user_preferences_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE;

ALTER TABLE ONLY webhooks
    ADD CONSTRAINT webhooks_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE;

-- ---------------------------------------------------------------- grants

GRANT USAGE ON SCHEMA public TO app_user;
GRANT USAGE ON SCHEMA public TO analytics_user;

REVOKE ALL ON FUNCTION add_user_funds(p_user_id uuid, p_amount numeric, p_type text, p_related_id bigint, p_description text, p_metadata jsonb, p_hold_token uuid, OUT ok boolean, OUT transaction_id bigint, OUT available numeric, OUT reason text) FROM PUBLIC;
GRANT ALL ON FUNCTION add_user_funds(p_user_id uuid, p_amount numeric, p_type text, p_related_id bigint, p_description text, p_metadata jsonb, p_hold_token uuid, OUT ok boolean, OUT transaction_id bigint, OUT available numeric, OUT reason text) TO app_user;

REVOKE ALL ON FUNCTION admin_audit_log(p_admin uuid, p_user uuid, p_actor uuid, p_action text, p_from timestamp with time zone, p_to timestamp with time zone, p_before_id bigint, p_limit integer) FROM PUBLIC;
GRANT ALL ON FUNCTION admin_audit_log(p_admin uuid, p_user uuid, p_actor uuid, p_action text, p_from timestamp with time zone, p_to timestamp with time zone, p_before_id bigint, p_limit integer) TO app_user;

REVOKE ALL ON FUNCTION admin_drop_alias_list(p_admin uuid, p_alias text, p_reason text, OUT ok boolean, OUT reason text) FROM PUBLIC;
GRANT ALL ON FUNCTION admin_drop_alias_list(p_admin uuid, p_alias text, p_reason text, OUT ok boolean, OUT reason text) TO app_user;

REVOKE ALL ON FUNCTION admin_move_money(p_admin uuid, p_user uuid, p_action text, p_amount numeric, p_reason text, p_details jsonb, OUT ok boolean, OUT reason text, OUT transaction_id bigint, OUT available numeric, OUT action_id bigint) FROM PUBLIC;
GRANT ALL ON FUNCTION admin_move_money(p_admin uuid, p_user uuid, p_action text, p_amount numeric, p_reason text, p_details jsonb, OUT ok boolean, OUT reason text, OUT transaction_id bigint, OUT available numeric, OUT action_id bigint) TO app_user;

REVOKE ALL ON FUNCTION admin_put_alias_list(p_admin uuid, p_action text, p_alias text, p_models text[], p_reason text, OUT ok boolean, OUT reason text) FROM PUBLIC;
GRANT ALL ON FUNCTION admin_put_alias_list(p_admin uuid, p_action text, p_alias text, p_models text[], p_reason text, OUT ok boolean, OUT reason text) TO app_user;

REVOKE ALL ON FUNCTION admin_put_model(p_admin uuid, p_action text, p_model jsonb, p_reason text, OUT ok boolean, OUT reason text) FROM PUBLIC;
GRANT ALL ON FUNCTION admin_put_model(p_admin uuid, p_action text, p_model jsonb, p_reason text, OUT ok boolean, OUT reason text) TO app_user;

REVOKE ALL ON FUNCTION admin_record(p_admin uuid, p_action text, p_reason text, p_details jsonb, OUT ok boolean, OUT reason text, OUT action_id bigint) FROM PUBLIC;
GRANT ALL ON FUNCTION admin_record(p_admin uuid, p_action text, p_reason text, p_details jsonb, OUT ok boolean, OUT reason text, OUT action_id bigint) TO app_user;

REVOKE ALL ON FUNCTION admin_refusal(p_admin uuid, p_user uuid, p_reason text) FROM PUBLIC;

REVOKE ALL ON FUNCTION admin_schedule_price(p_admin uuid, p_model text, p_effective_from timestamp with time zone, p_prices jsonb, p_reason text, OUT ok boolean, OUT reason text, OUT version_id bigint) FROM PUBLIC;
GRANT ALL ON FUNCTION admin_schedule_price(p_admin uuid, p_model text, p_effective_from timestamp with time zone, p_prices jsonb, p_reason text, OUT ok boolean, OUT reason text, OUT version_id bigint) TO app_user;

REVOKE ALL ON FUNCTION admin_set_user_active(p_admin uuid, p_user uuid, p_active boolean, p_reason text, OUT ok boolean, OUT reason text, OUT changed boolean) FROM PUBLIC;
GRANT ALL ON FUNCTION admin_set_user_active(p_admin uuid, p_user uuid, p_active boolean, p_reason text, OUT ok boolean, OUT reason text, OUT changed boolean) TO app_user;

GRANT SELECT,INSERT ON TABLE call_charges TO app_user;

REVOKE ALL ON FUNCTION chat_call_context(p_user_id uuid, p_session_id uuid, p_max_tokens integer, p_default_max_tokens integer, p_fixed_tokens integer, p_message_overhead integer) FROM PUBLIC;
GRANT ALL ON FUNCTION chat_call_context(p_user_id uuid, p_session_id uuid, p_max_tokens integer, p_default_max_tokens integer, p_fixed_tokens integer, p_message_overhead integer) TO app_user;

REVOKE ALL ON FUNCTION debit_user_balance(p_user_id uuid, p_amount numeric, p_description text, p_metadata jsonb, OUT ok boolean, OUT transaction_id bigint, OUT available numeric, OUT reason text) FROM PUBLIC;

REVOKE ALL ON FUNCTION deduct_user_balance(p_user_id uuid, p_amount numeric, p_description text, p_metadata jsonb, p_daily_limit numeric, p_call_timeout numeric, p_model_id text, p_access_key_id uuid, p_hold_token uuid, OUT ok boolean, OUT transaction_id bigint, OUT available numeric, OUT reason text) FROM PUBLIC;
GRANT ALL ON FUNCTION deduct_user_balance(p_user_id uuid, p_amount numeric, p_description text, p_metadata jsonb, p_daily_limit numeric, p_call_timeout numeric, p_model_id text, p_access_key_id uuid, p_hold_token uuid, OUT ok boolean, OUT transaction_id bigint, OUT available numeric, OUT reason text) TO app_user;

REVOKE ALL ON FUNCTION deposit_with_receipt(p_user_id uuid, p_amount numeric, p_description text, p_metadata jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION deposit_with_receipt(p_user_id uuid, p_amount numeric, p_description text, p_metadata jsonb) TO app_user;

REVOKE ALL ON FUNCTION live_access_key(p_key_hash bytea) FROM PUBLIC;
GRANT ALL ON FUNCTION live_access_key(p_key_hash bytea) TO app_user;

REVOKE ALL ON FUNCTION model_call_context(p_user_id uuid, p_model_name text, p_max_tokens integer, p_default_max_tokens integer) FROM PUBLIC;
GRANT ALL ON FUNCTION model_call_context(p_user_id uuid, p_model_name text, p_max_tokens integer, p_default_max_tokens integer) TO app_user;

REVOKE ALL ON FUNCTION note_spend_limit_reached(p_user_id uuid, p_amount numeric, p_daily_limit numeric, p_access_key_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION note_spend_limit_reached(p_user_id uuid, p_amount numeric, p_daily_limit numeric, p_access_key_id uuid) TO app_user;

GRANT SELECT ON TABLE model_prices TO app_user;

GRANT ALL ON FUNCTION price_in_force(p_model text, p_at timestamp with time zone) TO app_user;

REVOKE ALL ON FUNCTION raise_alert(p_user_id uuid, p_subject text, p_kind text, p_period text, p_details jsonb) FROM PUBLIC;

REVOKE ALL ON FUNCTION settle_chat_call(p_user_id uuid, p_session_id uuid, p_model_id text, p_api_key_id uuid, p_hold_id bigint, p_hold_amount numeric, p_question text, p_prompt_tokens integer, p_input_cost numeric, p_answer text, p_completion_tokens integer, p_output_cost numeric, p_usage_bucket smallint, p_release_metadata jsonb, p_cached_input_tokens integer, p_cache_write_tokens integer, p_cache_write_1h_tokens integer, p_reasoning_tokens integer, p_cached_input_cost numeric, p_cache_write_cost numeric, p_served_provider text, p_hold_token uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION settle_chat_call(p_user_id uuid, p_session_id uuid, p_model_id text, p_api_key_id uuid, p_hold_id bigint, p_hold_amount numeric, p_question text, p_prompt_tokens integer, p_input_cost numeric, p_answer text, p_completion_tokens integer, p_output_cost numeric, p_usage_bucket smallint, p_release_metadata jsonb, p_cached_input_tokens integer, p_cache_write_tokens integer, p_cache_write_1h_tokens integer, p_reasoning_tokens integer, p_cached_input_cost numeric, p_cache_write_cost numeric, p_served_provider text, p_hold_token uuid) TO app_user;

REVOKE ALL ON FUNCTION transactions_alerts() FROM PUBLIC;

REVOKE ALL ON FUNCTION usage_count_charges() FROM PUBLIC;

REVOKE ALL ON FUNCTION usage_count_release() FROM PUBLIC;

REVOKE ALL ON FUNCTION usage_recount(p_user_ids uuid[], p_days date[]) FROM PUBLIC;

REVOKE ALL ON FUNCTION usage_recount_charges() FROM PUBLIC;

REVOKE ALL ON FUNCTION usage_recount_ledger() FROM PUBLIC;

GRANT SELECT ON TABLE access_keys TO app_user;

GRANT INSERT(user_id) ON TABLE access_keys TO app_user;

GRANT INSERT(name) ON TABLE access_keys TO app_user;

GRANT INSERT(key_hash) ON TABLE access_keys TO app_user;

GRANT INSERT(last4) ON TABLE access_keys TO app_user;

GRANT INSERT(allowed_models) ON TABLE access_keys TO app_user;

GRANT INSERT(spend_limit) ON TABLE access_keys TO app_user;

GRANT INSERT(spend_limit_period) ON TABLE access_keys TO app_user;

GRANT INSERT(expires_at) ON TABLE access_keys TO app_user;

GRANT UPDATE(last_used_at) ON TABLE access_keys TO app_user;

GRANT UPDATE(revoked_at) ON TABLE access_keys TO app_user;

GRANT SELECT ON TABLE admins TO app_user;

GRANT SELECT ON TABLE alert_deliveries TO app_user;

GRANT UPDATE(status) ON TABLE alert_deliveries TO app_user;

GRANT UPDATE(attempts) ON TABLE alert_deliveries TO app_user;

GRANT UPDATE(next_attempt_at) ON TABLE alert_deliveries TO app_user;

GRANT UPDATE(last_status) ON TABLE alert_deliveries TO app_user;

GRANT UPDATE(last_error) ON TABLE alert_deliveries TO app_user;

GRANT UPDATE(delivered_at) ON TABLE alert_deliveries TO app_user;

GRANT SELECT ON TABLE alias_lists TO app_user;

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE api_keys TO app_user;

GRANT SELECT,INSERT,DELETE ON TABLE chat_history TO app_user;

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE chat_sessions TO app_user;

GRANT SELECT,INSERT,UPDATE ON TABLE house_key_failures TO app_user;

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE idempotency_keys TO app_user;

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE login_attempts TO app_user;

GRANT SELECT,INSERT,UPDATE ON TABLE model_usage_stats TO app_user;

GRANT SELECT ON TABLE models TO app_user;

GRANT SELECT ON TABLE model_popularity TO app_user;
GRANT SELECT ON TABLE model_popularity TO analytics_user;

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE model_ratings TO app_user;

GRANT SELECT ON TABLE transactions TO app_user;

GRANT SELECT ON TABLE recent_activity TO app_user;
GRANT SELECT ON TABLE recent_activity TO analytics_user;

GRANT SELECT,INSERT,UPDATE ON TABLE reconcile_schedule TO app_user;

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE refresh_tokens TO app_user;

GRANT SELECT ON TABLE schema_version TO app_user;

GRANT SELECT ON TABLE usage_calls TO app_user;

GRANT SELECT ON TABLE usage_daily TO app_user;

GRANT SELECT ON TABLE usage_from_ledger TO app_user;

GRANT SELECT ON TABLE usage_rollup_differences TO app_user;

GRANT SELECT ON TABLE user_balance TO app_user;

GRANT SELECT,INSERT,UPDATE ON TABLE user_preferences TO app_user;

GRANT SELECT,INSERT,UPDATE ON TABLE users TO app_user;

GRANT SELECT ON TABLE user_with_balance TO app_user;
GRANT SELECT ON TABLE user_with_balance TO analytics_user;

GRANT SELECT,INSERT,DELETE ON TABLE webhooks TO app_user;
