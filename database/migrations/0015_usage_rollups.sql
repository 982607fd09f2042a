-- 0015: daily usage rollups, per user, UTC day, model and access key (NULL: the
-- account's own token or the console), which GET /api/v1/usage reads instead
-- of summing the ledger.
--   - usage_calls is the definition, written once: one row per settled call
--     that charged something (a release below its hold), dated by the release,
--     with its token counts when the settle kept them in call_charges.
--     usage_from_ledger sums it per day; usage_rollup_differences is every
--     rollup row that differs from it (`flask usage verify`, README's ledger check).
--   - Triggers keep usage_daily as calls settle, in the settle's own
--     transaction: the release adds the call (requests, cost), the call's
--     charges, written after it by settle_chat_call, add its tokens. Triggers
--     rather than the settle statement, because every release counts, whoever
--     writes it (settle, a failed call's return, reconcile), and a trigger
--     function runs as the owner, so the service's login may read the rollups
--     but never write them. Each rollup row is one user's, and every release of
--     a user is written under that user's user_balance lock (hold and settle
--     both take it first), so two calls of one user never wait on each other's
--     rollup rows in opposite orders.
--   - The owner changing or deleting ledger rows or charges (a correction)
--     recounts the days they touch from the ledger.
--   - Existing databases get their rollups from their ledger here: cost and
--     requests always, tokens from call_charges where the settle kept them
--     (none before 0008), NULL otherwise. Rollups are derived from money rows
--     and, like them, never pruned.

CREATE TABLE usage_daily (
    user_id              uuid NOT NULL REFERENCES users (id),
    day                  date NOT NULL,
    model_id             text,
    access_key_id        uuid,
    requests             bigint NOT NULL CHECK (requests > 0),
    cost                 numeric(20,10) NOT NULL CHECK (cost > 0),
    -- Tokens of the calls whose settle kept them; NULL when none did.
    input_tokens         bigint,
    cached_input_tokens  bigint,
    cache_write_tokens   bigint,
    output_tokens        bigint,
    CONSTRAINT usage_daily_key UNIQUE NULLS NOT DISTINCT (user_id, day, model_id, access_key_id)
);

CREATE VIEW usage_calls AS
SELECT rel.id AS release_id,
       hold.id AS hold_id,
       rel.user_id,
       (rel.created_at AT TIME ZONE 'UTC')::date AS day,
       coalesce(hold.model_id, hold.metadata ->> 'model_id') AS model_id,
       hold.access_key_id,
       hold.amount - rel.amount AS cost,
       c.input_tokens,
       c.cached_input_tokens,
       c.cache_write_tokens + c.cache_write_1h_tokens AS cache_write_tokens,
       c.output_tokens
  FROM transactions rel
  JOIN transactions hold ON hold.id = rel.related_transaction_id
  LEFT JOIN call_charges c ON c.hold_id = hold.id
 WHERE rel.type = 'release'
   AND rel.amount < hold.amount;

CREATE VIEW usage_from_ledger AS
SELECT user_id, day, model_id, access_key_id,
       count(*) AS requests,
       sum(cost) AS cost,
       sum(input_tokens) AS input_tokens,
       sum(cached_input_tokens) AS cached_input_tokens,
       sum(cache_write_tokens) AS cache_write_tokens,
       sum(output_tokens) AS output_tokens
  FROM usage_calls
 GROUP BY user_id, day, model_id, access_key_id;

-- Grouped rather than joined: a NULL model or key is a key like any other.
CREATE VIEW usage_rollup_differences AS
SELECT user_id, day, model_id, access_key_id,
       (array_agg(counts) FILTER (WHERE source = 'rollup'))[1] AS rollup,
       (array_agg(counts) FILTER (WHERE source = 'ledger'))[1] AS ledger
  FROM (SELECT 'rollup' AS source, user_id, day, model_id, access_key_id,
               jsonb_build_object('requests', requests, 'cost', cost, 'input_tokens', input_tokens,
                                  'cached_input_tokens', cached_input_tokens,
                                  'cache_write_tokens', cache_write_tokens, 'output_tokens', output_tokens) AS counts
          FROM usage_daily
        UNION ALL
        SELECT 'ledger', user_id, day, model_id, access_key_id,
               jsonb_build_object('requests', requests, 'cost', cost, 'input_tokens', input_tokens,
                                  'cached_input_tokens', cached_input_tokens,
                                  'cache_write_tokens', cache_write_tokens, 'output_tokens', output_tokens)
          FROM usage_from_ledger) sides
 GROUP BY user_id, day, model_id, access_key_id
HAVING (array_agg(counts) FILTER (WHERE source = 'rollup'))[1]
       IS DISTINCT FROM (array_agg(counts) FILTER (WHERE source = 'ledger'))[1];

-- A release: its call counted, with its tokens if its charges came first.
CREATE FUNCTION usage_count_release() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
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

-- A call's charges, written after its release by the same settle: its tokens.
CREATE FUNCTION usage_count_charges() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
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

-- The days of `p_user_ids[i]`, `p_days[i]` counted again from the ledger.
CREATE FUNCTION usage_recount(p_user_ids uuid[], p_days date[]) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
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

-- Ledger rows changed or deleted (only the owner may): the days of the
-- releases they were or are, and of the releases of the holds they were or are.
CREATE FUNCTION usage_recount_ledger() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
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

-- Charges changed or deleted (only the owner may): their calls' days.
CREATE FUNCTION usage_recount_charges() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
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

-- Writers wait until the rollups below are built (and then are counted by the
-- triggers): none is counted twice or missed.
LOCK TABLE transactions, call_charges IN SHARE ROW EXCLUSIVE MODE;

CREATE TRIGGER usage_count_release AFTER INSERT ON transactions
    FOR EACH ROW WHEN (NEW.type = 'release') EXECUTE FUNCTION usage_count_release();
CREATE TRIGGER usage_count_charges AFTER INSERT ON call_charges
    FOR EACH ROW EXECUTE FUNCTION usage_count_charges();
CREATE TRIGGER usage_recount_ledger_update AFTER UPDATE ON transactions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION usage_recount_ledger();
CREATE TRIGGER usage_recount_ledger_delete AFTER DELETE ON transactions
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION usage_recount_ledger();
CREATE TRIGGER usage_recount_charges_update AFTER UPDATE ON call_charges
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION usage_recount_charges();
CREATE TRIGGER usage_recount_charges_delete AFTER DELETE ON call_charges
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION usage_recount_charges();

INSERT INTO usage_daily (user_id, day, model_id, access_key_id, requests, cost, input_tokens, cached_input_tokens,
                         cache_write_tokens, output_tokens)
SELECT user_id, day, model_id, access_key_id, requests, cost, input_tokens, cached_input_tokens, cache_write_tokens,
       output_tokens
  FROM usage_from_ledger;

REVOKE ALL ON usage_daily, usage_calls, usage_from_ledger, usage_rollup_differences FROM PUBLIC;
GRANT SELECT ON usage_daily, usage_calls, usage_from_ledger, usage_rollup_differences TO app_user;
REVOKE ALL ON FUNCTION usage_count_release(), usage_count_charges(), usage_recount_ledger(),
                       usage_recount_charges(), usage_recount(uuid[], date[]) FROM PUBLIC;
