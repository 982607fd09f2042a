-- 0013: operators. An admin is a user named in `admins`, which only the owner
-- writes (`flask admin grant|revoke`); the service's login reads it on every
-- admin request, so a revoke acts on the next one. What an admin does goes
-- through the SECURITY DEFINER functions below, each of which checks the admin
-- itself and writes one `admin_actions` row with the admin's reason. The
-- service's login cannot write either table, nor read `admin_actions` but
-- through admin_audit_log, which checks the admin too.
CREATE TABLE admins (
    user_id    uuid PRIMARY KEY REFERENCES users (id),
    granted_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE admin_actions (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- NULL: the database's owner, from the command line (granting and revoking admins).
    admin_id       uuid REFERENCES users (id),
    action         text NOT NULL CHECK (action IN ('grant_admin', 'revoke_admin', 'credit', 'debit', 'disable_user',
                                                   'enable_user', 'add_model', 'change_model', 'disable_model',
                                                   'enable_model', 'schedule_price', 'reconcile')),
    target_user_id uuid REFERENCES users (id),
    target_model   text,
    reason         text NOT NULL CHECK (length(btrim(reason)) BETWEEN 1 AND 400),
    details        jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX admin_actions_newest ON admin_actions (id DESC);
CREATE INDEX admin_actions_by_target ON admin_actions (target_user_id, id DESC) WHERE target_user_id IS NOT NULL;
CREATE INDEX admin_actions_by_admin ON admin_actions (admin_id, id DESC);

GRANT SELECT ON admins TO app_user;

-- A debit takes money back out of a balance (a chargeback, a mistaken credit):
-- it lowers `total_balance`, as a deposit raises it, so `total` is deposits
-- less debits and `spent` stays holds less releases. It is no call, so no
-- spend limit, usage figure or access key counts it.
ALTER TABLE transactions
    DROP CONSTRAINT transactions_type_check,
    ADD CONSTRAINT transactions_type_check CHECK (type IN ('deposit', 'hold', 'release', 'debit'));

-- The money procedure of a debit, in the mould of deduct_user_balance: never
-- below zero available (ok = false, nothing changes). Only admin_debit calls it.
CREATE FUNCTION debit_user_balance(p_user_id uuid, p_amount numeric, p_description text, p_metadata jsonb,
                                   OUT ok boolean, OUT transaction_id bigint, OUT available numeric,
                                   OUT reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
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
REVOKE ALL ON FUNCTION debit_user_balance(uuid, numeric, text, jsonb) FROM PUBLIC;

-- Why `p_admin` may not do this to `p_user` (NULL: it may): not an active
-- admin, acting on their own account, no reason, no such user. Sets the audit
-- triggers' actor to the admin for the rest of the transaction.
CREATE FUNCTION admin_refusal(p_admin uuid, p_user uuid, p_reason text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
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
REVOKE ALL ON FUNCTION admin_refusal(uuid, uuid, text) FROM PUBLIC;

-- A credit or a debit of `p_user`'s balance by an admin: (ok, reason,
-- transaction_id, available, action_id). A credit is a deposit through
-- add_user_funds and so, called by the service's login, within the deposit
-- cap (MAX_TOPUP) like any deposit it makes; above it is the owner's
-- `flask credit`.
CREATE FUNCTION admin_move_money(p_admin uuid, p_user uuid, p_action text, p_amount numeric, p_reason text,
                                 p_details jsonb,
                                 OUT ok boolean, OUT reason text, OUT transaction_id bigint, OUT available numeric,
                                 OUT action_id bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
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
REVOKE ALL ON FUNCTION admin_move_money(uuid, uuid, text, numeric, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION admin_move_money(uuid, uuid, text, numeric, text, jsonb) TO app_user;

-- Disables or enables a user: (ok, reason, changed). A disabled user's tokens
-- and access keys are refused from the next request (both read is_active);
-- their balance and ledger stay, and calls already running settle as usual.
CREATE FUNCTION admin_set_user_active(p_admin uuid, p_user uuid, p_active boolean, p_reason text,
                                      OUT ok boolean, OUT reason text, OUT changed boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
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
REVOKE ALL ON FUNCTION admin_set_user_active(uuid, uuid, boolean, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION admin_set_user_active(uuid, uuid, boolean, text) TO app_user;

-- Adds a catalog model or replaces one, from an entry the service validated as
-- `flask catalog load` validates a file (database/catalog_file.py):
-- (ok, reason). The schema's checks and name triggers hold as for a load.
CREATE FUNCTION admin_put_model(p_admin uuid, p_action text, p_model jsonb, p_reason text,
                                OUT ok boolean, OUT reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
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
REVOKE ALL ON FUNCTION admin_put_model(uuid, text, jsonb, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION admin_put_model(uuid, text, jsonb, text) TO app_user;

-- An action that changes no row of its own (a reconcile run): its audit row
-- alone, once the admin is checked. (ok, reason, action_id).
CREATE FUNCTION admin_record(p_admin uuid, p_action text, p_reason text, p_details jsonb,
                             OUT ok boolean, OUT reason text, OUT action_id bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
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
REVOKE ALL ON FUNCTION admin_record(uuid, text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION admin_record(uuid, text, text, jsonb) TO app_user;

-- The audit log, newest first, for an active admin only (no rows for anyone
-- else): filtered by target user, acting admin, action and time, in pages
-- before `p_before_id`.
CREATE FUNCTION admin_audit_log(p_admin uuid, p_user uuid, p_actor uuid, p_action text, p_from timestamptz,
                                p_to timestamptz, p_before_id bigint, p_limit integer)
RETURNS TABLE (id bigint, admin_id uuid, admin_email text, action text, target_user_id uuid, target_email text,
               target_model text, reason text, details jsonb, created_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
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
REVOKE ALL ON FUNCTION admin_audit_log(uuid, uuid, uuid, text, timestamptz, timestamptz, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION admin_audit_log(uuid, uuid, uuid, text, timestamptz, timestamptz, bigint, integer)
    TO app_user;

-- ---------------------------------------------------------------- the price book
-- Prices are versions: one row per change of a model's prices, in force from
-- `effective_from` until the next one's. A call is priced by the version in
-- force when its hold is taken; its hold and its charge (the release) name
-- that version (metadata `price_version_id`). A version never changes and is
-- never deleted, by anyone: a change is a new row. A model with no version in
-- force is not served (503 model_unpriced), never at $0.
CREATE TABLE model_prices (
    id                            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_id                      text NOT NULL REFERENCES models (id),
    effective_from                timestamptz NOT NULL,
    input_price_per_mtok          numeric(20,10) NOT NULL CHECK (input_price_per_mtok >= 0),
    output_price_per_mtok         numeric(20,10) NOT NULL CHECK (output_price_per_mtok >= 0),
    cache_read_price_per_mtok     numeric(20,10) CHECK (cache_read_price_per_mtok >= 0),
    cache_write_price_per_mtok    numeric(20,10) CHECK (cache_write_price_per_mtok >= 0),
    cache_write_1h_price_per_mtok numeric(20,10) CHECK (cache_write_1h_price_per_mtok >= 0),
    -- NULL: written by the owner (a catalog load, this upgrade).
    admin_id                      uuid REFERENCES users (id),
    created_at                    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (model_id, effective_from)
);
GRANT SELECT ON model_prices TO app_user;

CREATE FUNCTION model_prices_unchangeable() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'a price version never changes: add a new one' USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER model_prices_unchangeable BEFORE UPDATE OR DELETE OR TRUNCATE ON model_prices
    FOR EACH STATEMENT EXECUTE FUNCTION model_prices_unchangeable();

-- The version of `p_model` in force at `p_at`; no row when none is. Without
-- a SET clause (the table named with its schema instead) so that the planner
-- inlines it into each call's context query: one index probe, no call.
CREATE FUNCTION price_in_force(p_model text, p_at timestamptz) RETURNS SETOF model_prices
LANGUAGE sql STABLE AS $$
    SELECT * FROM public.model_prices
     WHERE model_id = p_model AND effective_from <= p_at
     ORDER BY effective_from DESC
     LIMIT 1;
$$;
GRANT EXECUTE ON FUNCTION price_in_force(text, timestamptz) TO app_user;

-- Every write of a model's prices (a catalog load, an admin's change) that
-- differs from the version in force adds a version, in force at once. The
-- models table's price columns keep the last prices written, as catalog.json
-- has them; what a call pays is the book's.
CREATE FUNCTION models_price_version() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
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
CREATE TRIGGER models_price_version AFTER INSERT OR UPDATE OF input_price_per_mtok, output_price_per_mtok,
    cache_read_price_per_mtok, cache_write_price_per_mtok, cache_write_1h_price_per_mtok ON models
    FOR EACH ROW EXECUTE FUNCTION models_price_version();

-- An existing database: each model's current prices become its first
-- version, in force from the model's creation, so past charges read against
-- the prices of their day.
INSERT INTO model_prices (model_id, effective_from, input_price_per_mtok, output_price_per_mtok,
                          cache_read_price_per_mtok, cache_write_price_per_mtok, cache_write_1h_price_per_mtok)
SELECT id, created_at, input_price_per_mtok, output_price_per_mtok, cache_read_price_per_mtok,
       cache_write_price_per_mtok, cache_write_1h_price_per_mtok
  FROM models;

-- A price change an admin schedules: a version in force from a time still to
-- come (ok = false, reason 'not_future' otherwise). (ok, reason, version_id).
CREATE FUNCTION admin_schedule_price(p_admin uuid, p_model text, p_effective_from timestamptz, p_prices jsonb,
                                     p_reason text, OUT ok boolean, OUT reason text, OUT version_id bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
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
REVOKE ALL ON FUNCTION admin_schedule_price(uuid, text, timestamptz, jsonb, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION admin_schedule_price(uuid, text, timestamptz, jsonb, text) TO app_user;


-- A chat session's call context, as 0010 made it, with its model's prices
-- from the version in force (none: NULL prices and price_version_id).
DROP FUNCTION chat_call_context(uuid, uuid, integer, integer, integer, integer);
CREATE FUNCTION chat_call_context(p_user_id uuid, p_session_id uuid, p_max_tokens integer,
                                  p_default_max_tokens integer, p_fixed_tokens integer, p_message_overhead integer)
RETURNS TABLE (token_generation integer, session_id uuid, model_id text, provider text, context_window integer,
               max_output_tokens integer, input_price_per_mtok numeric, output_price_per_mtok numeric,
               cache_read_price_per_mtok numeric, cache_write_price_per_mtok numeric,
               cache_write_1h_price_per_mtok numeric, features text[], is_active boolean, max_tokens integer,
               deployments jsonb, user_keys json, house_key_fallback boolean, history json,
               daily_spend_limit numeric, max_cost_per_message numeric, price_version_id bigint)
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
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
REVOKE ALL ON FUNCTION chat_call_context(uuid, uuid, integer, integer, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chat_call_context(uuid, uuid, integer, integer, integer, integer) TO app_user;
