-- 0014: alerts, once per crossing, delivered from a durable outbox after the commit.
--   - A user's low-balance threshold and email opt-in are preferences (both off by default).
--   - Webhooks per user, each with its own secret (sealed by the key vault, like provider keys).
--   - alert_deliveries is the outbox: one row per alert and destination, written in the
--     transaction that moved the money (a trigger on transactions), or in the refusal's own
--     (`note_spend_limit_reached`). Workers claim rows with SKIP LOCKED and deliver at least
--     once; the row's id is the delivery id a receiver deduplicates on.
--   - alert_marks makes each crossing alert once: a mark is inserted (ON CONFLICT DO NOTHING)
--     per subject, kind and period, and the low-balance mark is removed by a deposit that
--     lifts the balance to the threshold again, so the next fall alerts anew.
--   - access_key_period_spend counts what each limited key was charged per period, kept by
--     the same trigger as each call settles, so the 80% check reads one row.
ALTER TABLE user_preferences
    ADD COLUMN low_balance_threshold numeric(20,10) CHECK (low_balance_threshold > 0),
    ADD COLUMN email_alerts boolean NOT NULL DEFAULT false;

CREATE TABLE webhooks (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id           uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    url               text NOT NULL CHECK (length(url) <= 2000),
    encryption_kid    text NOT NULL,
    nonce             bytea NOT NULL,
    encrypted_secret  bytea NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_user_idx ON webhooks (user_id, created_at DESC, id DESC);

CREATE TABLE alert_deliveries (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    channel          text NOT NULL CHECK (channel IN ('webhook', 'email')),
    webhook_id       uuid REFERENCES webhooks (id) ON DELETE CASCADE,
    kind             text NOT NULL CHECK (kind IN ('low_balance', 'key_spend_80', 'key_spend_100',
                                                   'daily_limit_reached')),
    payload          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status      integer,
    last_error       text CHECK (length(last_error) <= 500),
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    CHECK ((channel = 'webhook') = (webhook_id IS NOT NULL))
);
CREATE INDEX alert_deliveries_due_idx ON alert_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX alert_deliveries_user_idx ON alert_deliveries (user_id, created_at DESC, id);

CREATE TABLE alert_marks (
    subject  text NOT NULL,
    kind     text NOT NULL,
    period   text NOT NULL,
    made_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, kind, period)
);

CREATE TABLE access_key_period_spend (
    access_key_id  uuid NOT NULL REFERENCES access_keys (id) ON DELETE CASCADE,
    period_start   timestamptz NOT NULL,
    charged        numeric(20,10) NOT NULL DEFAULT 0,
    PRIMARY KEY (access_key_id, period_start)
);

-- One delivery per webhook of the user, and one email when they opted in; the
-- mark makes it once per (subject, kind, period). True when it was new.
CREATE FUNCTION raise_alert(p_user_id uuid, p_subject text, p_kind text, p_period text, p_details jsonb)
RETURNS boolean
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
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

CREATE FUNCTION key_period_start(p_period text, p_at timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_period
               WHEN 'day' THEN date_trunc('day', p_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
               WHEN 'month' THEN date_trunc('month', p_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
               ELSE '-infinity'::timestamptz
           END
$$;

-- After each ledger row: a hold that takes the balance below the user's
-- threshold, a deposit that lifts it back (re-arming), a settle that takes a
-- limited key to 80% of its limit in its period. A few primary-key reads; no
-- sums over the ledger.
CREATE FUNCTION transactions_alerts() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
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

CREATE TRIGGER transactions_alerts AFTER INSERT ON transactions
    FOR EACH ROW EXECUTE FUNCTION transactions_alerts();

-- A hold refused by a spend limit (nothing was written to the ledger): which
-- limit it passed, worked out as deduct_user_balance does, alerts once per
-- period. Called by the service in its own transaction after the refusal.
CREATE FUNCTION note_spend_limit_reached(p_user_id uuid, p_amount numeric, p_daily_limit numeric,
                                         p_access_key_id uuid) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
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

REVOKE ALL ON webhooks, alert_deliveries, alert_marks, access_key_period_spend FROM PUBLIC;
GRANT SELECT, INSERT, DELETE ON webhooks TO app_user;
GRANT SELECT ON alert_deliveries TO app_user;
GRANT UPDATE (status, attempts, next_attempt_at, last_status, last_error, delivered_at) ON alert_deliveries TO app_user;
REVOKE ALL ON FUNCTION raise_alert(uuid, text, text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION transactions_alerts() FROM PUBLIC;
REVOKE ALL ON FUNCTION note_spend_limit_reached(uuid, numeric, numeric, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION note_spend_limit_reached(uuid, numeric, numeric, uuid) TO app_user;

-- Retention (`flask prune`): old chat messages, audit rows and finished
-- deliveries are found by age without reading the tables whole.
CREATE INDEX chat_history_created_idx ON chat_history (created_at);
CREATE INDEX alert_deliveries_finished_idx ON alert_deliveries (created_at) WHERE status <> 'pending';

-- A big ledger (bench/data.py): the usage report reads a user's releases in
-- a span of days through this index instead of filtering all the user's rows.
CREATE INDEX transactions_user_releases_idx ON transactions (user_id, created_at) WHERE type = 'release';
