-- 0018: admins write alias lists, as they write models: through functions that
-- check the admin and write the audit row. The schema's alias_lists_valid
-- trigger still checks a list at commit (its models exist, its name is no
-- model's), as for a catalog load.
ALTER TABLE admin_actions DROP CONSTRAINT admin_actions_action_check;
ALTER TABLE admin_actions ADD CONSTRAINT admin_actions_action_check
    CHECK (action IN ('grant_admin', 'revoke_admin', 'credit', 'debit', 'disable_user', 'enable_user', 'add_model',
                      'change_model', 'disable_model', 'enable_model', 'schedule_price', 'reconcile',
                      'add_alias_list', 'change_alias_list', 'drop_alias_list'));

-- Makes the alias list `p_alias` of `p_models` (`p_action` add_alias_list) or
-- replaces its models (change_alias_list): (ok, reason); 'alias_list_exists'
-- or 'no_such_alias_list' when the list is there, or not, against the action.
CREATE FUNCTION admin_put_alias_list(p_admin uuid, p_action text, p_alias text, p_models text[], p_reason text,
                                     OUT ok boolean, OUT reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
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
REVOKE ALL ON FUNCTION admin_put_alias_list(uuid, text, text, text[], text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION admin_put_alias_list(uuid, text, text, text[], text) TO app_user;

-- Removes the alias list `p_alias`: (ok, reason); 'no_such_alias_list' when there is none.
CREATE FUNCTION admin_drop_alias_list(p_admin uuid, p_alias text, p_reason text, OUT ok boolean, OUT reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
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
REVOKE ALL ON FUNCTION admin_drop_alias_list(uuid, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION admin_drop_alias_list(uuid, text, text) TO app_user;
