"""The marketplace: the model catalog with its ratings and usage, the user's
preferences and activity."""

PREFERENCE_COLUMNS = ("default_model_id, preferred_providers, daily_spend_limit, max_cost_per_message, theme, "
                      "house_key_fallback, low_balance_threshold, email_alerts, "
                      "updated_at")


class CatalogSQL:
    """A part of DatabaseService (database/service.py), which gives `_maybe(tx)` and `_alone(tx)`."""

    def catalog(self, model_id=None, tx=None):
        """Active models priced now (the price book's version in force) with
        their rating summary and usage (one model when `model_id` is given), in
        catalog order. A model with no price in force is not offered."""
        with self._alone(tx) as cursor:
            return cursor.all(
                """
                SELECT m.id, m.provider, m.name, m.description, m.context_window, m.max_output_tokens,
                       v.input_price_per_mtok, v.output_price_per_mtok, v.cache_read_price_per_mtok,
                       v.cache_write_price_per_mtok, v.cache_write_1h_price_per_mtok, m.prices_as_of, m.capabilities,
                       m.features, m.input_modalities, m.aliases, m.deployments,
                       coalesce(r.rating_count, 0) AS rating_count, r.rating_average, r.distribution,
                       p.request_count, p.prompt_tokens, p.completion_tokens, p.popularity_rank
                  FROM models m
                  JOIN model_popularity p ON p.model_id = m.id
                  JOIN LATERAL price_in_force(m.id, now()) v ON true
                  LEFT JOIN (SELECT model_id, count(*) AS rating_count, avg(rating) AS rating_average,
                                    jsonb_build_object('1', count(*) FILTER (WHERE rating = 1),
                                                       '2', count(*) FILTER (WHERE rating = 2),
                                                       '3', count(*) FILTER (WHERE rating = 3),
                                                       '4', count(*) FILTER (WHERE rating = 4),
                                                       '5', count(*) FILTER (WHERE rating = 5)) AS distribution
                               FROM model_ratings
                              GROUP BY model_id) r ON r.model_id = m.id
                 WHERE m.is_active
                   AND (%(model_id)s::text IS NULL OR m.id = %(model_id)s)
                 ORDER BY m.id
                """,
                {"model_id": model_id},
            )

    def price_history(self, model_id, tx=None):
        """Every price version of a model, newest first (scheduled ones too),
        with `in_force` on the one that prices calls now; None for no such model."""
        with self._alone(tx) as cursor:
            rows = cursor.all(
                """
                SELECT v.id, v.effective_from, v.input_price_per_mtok, v.output_price_per_mtok,
                       v.cache_read_price_per_mtok, v.cache_write_price_per_mtok, v.cache_write_1h_price_per_mtok,
                       v.created_at, v.id = (SELECT f.id FROM price_in_force(m.id, now()) f) AS in_force
                  FROM models m
                  LEFT JOIN model_prices v ON v.model_id = m.id
                 WHERE m.id = %(model_id)s
                 ORDER BY v.effective_from DESC
                """,
                {"model_id": model_id},
            )
        if not rows:
            return None
        return [row for row in rows if row["id"] is not None]

    def model_usage_by_day(self, model_id, days, tx=None):
        """Requests, tokens and cost per UTC day over the last `days` days."""
        with self._alone(tx) as cursor:
            return cursor.all(
                """
                SELECT day, sum(request_count) AS request_count, sum(prompt_tokens) AS prompt_tokens,
                       sum(completion_tokens) AS completion_tokens
                  FROM model_usage_stats
                 WHERE model_id = %(model_id)s
                   AND day > (now() AT TIME ZONE 'UTC')::date - %(days)s
                 GROUP BY day
                 ORDER BY day DESC
                """,
                {"model_id": model_id, "days": days},
            )

    def rate_model(self, user_id, model_id, rating, review, tx=None):
        """Creates or replaces the user's rating: (row, created), or None for a
        model not in the active catalog."""
        with self._maybe(tx, user_id) as cursor:
            return cursor.one(
                """
                INSERT INTO model_ratings (user_id, model_id, rating, review)
                SELECT %(user_id)s, id, %(rating)s, %(review)s
                  FROM models
                 WHERE id = %(model_id)s
                   AND is_active
                ON CONFLICT (user_id, model_id) DO UPDATE
                   SET rating = EXCLUDED.rating,
                       review = EXCLUDED.review
                RETURNING model_id, rating, review, created_at, updated_at, (xmax = 0) AS created
                """,
                {"user_id": user_id, "model_id": model_id, "rating": rating, "review": review},
            )

    def provider_key_holdings(self, user_id, tx=None):
        with self._alone(tx) as cursor:
            return {row["provider"] for row in cursor.all(
                "SELECT DISTINCT provider FROM api_keys WHERE user_id = %(user_id)s", {"user_id": user_id})}

    def preferences(self, user_id, tx=None):
        """The user's stored preferences, or None when never set."""
        with self._alone(tx) as cursor:
            return cursor.one(
                f"""
                SELECT {PREFERENCE_COLUMNS}
                  FROM user_preferences
                 WHERE user_id = %(user_id)s
                """,
                {"user_id": user_id},
            )

    def replace_preferences(self, user_id, preferences, tx=None):
        """Stores the whole document; None when default_model_id is not an active model."""
        with self._maybe(tx, user_id) as cursor:
            if preferences["default_model_id"] is not None and cursor.one(
                    "SELECT 1 FROM models WHERE id = %(id)s AND is_active",
                    {"id": preferences["default_model_id"]}) is None:
                return None
            return cursor.one(
                f"""
                INSERT INTO user_preferences (user_id, default_model_id, preferred_providers, daily_spend_limit,
                                              max_cost_per_message, theme, house_key_fallback,
                                              low_balance_threshold, email_alerts)
                VALUES (%(user_id)s, %(default_model_id)s, %(preferred_providers)s, %(daily_spend_limit)s,
                        %(max_cost_per_message)s, %(theme)s, %(house_key_fallback)s,
                        %(low_balance_threshold)s, %(email_alerts)s)
                ON CONFLICT (user_id) DO UPDATE
                   SET default_model_id = EXCLUDED.default_model_id,
                       preferred_providers = EXCLUDED.preferred_providers,
                       daily_spend_limit = EXCLUDED.daily_spend_limit,
                       max_cost_per_message = EXCLUDED.max_cost_per_message,
                       theme = EXCLUDED.theme,
                       house_key_fallback = EXCLUDED.house_key_fallback,
                       low_balance_threshold = EXCLUDED.low_balance_threshold,
                       email_alerts = EXCLUDED.email_alerts
                RETURNING {PREFERENCE_COLUMNS}
                """,
                {"user_id": user_id, **preferences},
            )

    def call_activity(self, user_id, limit, before_id=None, tx=None):
        """One row per call and per deposit, newest first, below the ledger id
        `before_id`: a call is its hold, with what its release returned
        (`released`, null while the call runs), its charge by part and the price
        version its hold was priced by. The page's ids are picked first, by
        (user_id, type, id) for each type, so only those rows are built, however
        long the ledger is and whatever the planner guesses of the user's share."""
        after_cursor = "(%(before_id)s::bigint IS NULL OR id < %(before_id)s)"
        with self._alone(tx) as cursor:
            return cursor.all(
                f"""
                WITH page AS (
                    SELECT id
                      FROM ((SELECT id FROM transactions
                              WHERE user_id = %(user_id)s AND type = 'deposit' AND {after_cursor}
                              ORDER BY id DESC
                              LIMIT %(limit)s)
                            UNION ALL
                            (SELECT id FROM transactions
                              WHERE user_id = %(user_id)s AND type = 'hold' AND {after_cursor}
                              ORDER BY id DESC
                              LIMIT %(limit)s)) both_types
                     ORDER BY id DESC
                     LIMIT %(limit)s)
                SELECT t.id, t.type, t.amount, r.amount AS released, t.created_at, t.access_key_id,
                       t.metadata ->> 'session_id' AS session_id,
                       COALESCE(c.served_model_id, t.model_id, t.metadata ->> 'model_id') AS model_id,
                       charge_parts(c.*) AS charge, (t.metadata ->> 'price_version_id')::bigint AS price_version_id
                  FROM page
                  JOIN transactions t ON t.id = page.id
                  LEFT JOIN transactions r ON r.type = 'release' AND r.related_transaction_id = t.id
                  LEFT JOIN call_charges c ON c.hold_id = t.id
                 ORDER BY t.id DESC
                """,
                {"user_id": user_id, "before_id": before_id, "limit": limit},
            )

    def activity(self, user_id, limit, before=None, tx=None):
        """The user's transactions and messages, newest first; `before` is the
        (created_at, kind, item_id) of the previous page's last item. Each half
        picks its page's ids by (user_id, created_at, id) first, so only those
        rows are built from recent_activity, however long the ledger is."""
        created_at, kind, item_id = before or (None, None, None)
        after_cursor = """(%(created_at)s::timestamptz IS NULL
                           OR (created_at <= %(created_at)s
                               AND (created_at, {kind}, id) < (%(created_at)s, %(kind)s, %(item_id)s)))"""
        with self._alone(tx) as cursor:
            return cursor.all(
                f"""
                WITH page AS (
                    SELECT kind, item_id, created_at
                      FROM ((SELECT 'transaction' AS kind, id AS item_id, created_at
                               FROM transactions
                              WHERE user_id = %(user_id)s AND {after_cursor.format(kind="'transaction'")}
                              ORDER BY created_at DESC, id DESC
                              LIMIT %(limit)s)
                            UNION ALL
                            (SELECT 'message', id, created_at
                               FROM chat_history
                              WHERE user_id = %(user_id)s AND {after_cursor.format(kind="'message'")}
                              ORDER BY created_at DESC, id DESC
                              LIMIT %(limit)s)) both_halves
                     ORDER BY created_at DESC, kind DESC, item_id DESC
                     LIMIT %(limit)s)
                SELECT kind, item_id, action, amount, prompt_tokens, completion_tokens, session_id, model_id,
                       access_key_id, created_at, charge
                  FROM recent_activity
                 WHERE user_id = %(user_id)s
                   AND ((kind = 'transaction'
                         AND item_id = ANY (ARRAY(SELECT item_id FROM page WHERE kind = 'transaction')))
                        OR (kind = 'message'
                            AND item_id = ANY (ARRAY(SELECT item_id FROM page WHERE kind = 'message'))))
                 ORDER BY created_at DESC, kind DESC, item_id DESC
                """,
                {"user_id": user_id, "created_at": created_at, "kind": kind, "item_id": item_id, "limit": limit},
            )

