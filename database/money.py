"""The balance and its ledger. Money moves only inside the stored procedures
(deduct_user_balance, add_user_funds); these methods call them."""
import json
from decimal import Decimal

from psycopg2.extras import Json

TRANSACTION_COLUMNS = ("id, type, amount, available_after, related_transaction_id, description, model_id, "
                       "access_key_id, created_at")
# A ledger entry: its transaction, a settle's charge by part (call_charges; null for other entries) and the
# price book's version a hold or its charge was priced by (null for other entries, and those made before it).
LEDGER_COLUMNS = (", ".join(f"t.{column}" for column in TRANSACTION_COLUMNS.split(", "))
                  + ", charge_parts(c) AS charge, (t.metadata ->> 'price_version_id')::bigint AS price_version_id")
BALANCE_COLUMNS = "total_balance, spent_balance, held_balance, available_balance, currency"
# A hold's commit does not wait for its WAL to reach the disk: a database crash
# may lose the last holds, whose calls then go unbilled, and never lets anyone
# spend more than their balance (BENCHMARKS.md, "Capacity": the argument).
WITHOUT_WAITING_FOR_THE_DISK = "SELECT set_config('synchronous_commit', 'off', true);\n"


class MoneySQL:
    """A part of DatabaseService (database/service.py), which gives `_maybe(tx)` and `_alone(tx)`."""

    def balance(self, user_id, tx=None):
        with self._alone(tx) as cursor:
            return cursor.one(
                f"""
                SELECT {BALANCE_COLUMNS}
                  FROM user_with_balance
                 WHERE id = %(id)s
                """,
                {"id": user_id},
            )

    def add_funds(self, user_id, amount, description, metadata, tx=None):
        """A deposit: (ok, transaction_id, available, reason)."""
        with self._maybe(tx) as cursor:
            return cursor.one(
                """
                SELECT ok, transaction_id, available, reason
                  FROM add_user_funds(%(user_id)s, %(amount)s, 'deposit', NULL, %(description)s, %(metadata)s)
                """,
                {"user_id": user_id, "amount": amount, "description": description, "metadata": Json(metadata)},
            )

    def deposit(self, user_id, amount, description, metadata, tx=None):
        """A deposit and what its receipt shows, in one round trip: (the ledger
        entry, the balance after it), or None when there is no such user."""
        with self._maybe(tx) as cursor:
            row = cursor.one(
                """
                SELECT *
                  FROM deposit_with_receipt(%(user_id)s, %(amount)s, %(description)s, %(metadata)s)
                """,
                {"user_id": user_id, "amount": amount, "description": description, "metadata": Json(metadata)},
            )
        if not row["ok"]:
            return None
        return ({column: row[column] for column in TRANSACTION_COLUMNS.split(", ")},
                {column: row[column] for column in BALANCE_COLUMNS.split(", ")})

    def hold_funds(self, user_id, amount, description, metadata, daily_limit=None, call_timeout=None, tx=None,
                   model_id=None, access_key_id=None, hold_token=None):
        """Holds `amount`: (ok, transaction_id, available, reason); ok is false and
        nothing changes when the balance (or the daily limit) does not allow it.
        The hold's call ends within `call_timeout` seconds: it is stored as its deadline.
        `model_id` and `access_key_id` are stored on the hold; with a key, the
        key must be the user's and live ('invalid_access_key'), and within its
        spend limit ('spend_limit_reached'). `hold_token` (a random UUID) is
        stored with it: only a release that gives it closes the hold, and the
        same token asked again answers the same hold. Without `tx`, a hold with
        a token is one statement, committed in its own round trip (the user
        its acting user), and so safe to send again."""
        statement = """
            SELECT ok, transaction_id, available, reason
              FROM deduct_user_balance(%(user_id)s, %(amount)s, %(description)s, %(metadata)s, %(daily_limit)s,
                                       %(call_timeout)s, %(model_id)s, %(access_key_id)s, %(hold_token)s)
            """
        params = {"user_id": user_id, "amount": amount, "description": description,
                  "metadata": Json(metadata), "daily_limit": daily_limit, "call_timeout": call_timeout,
                  "model_id": model_id, "access_key_id": access_key_id, "hold_token": hold_token}
        if tx is None and hold_token is not None:
            with self._alone(None, user_id) as cursor:
                return cursor.one(WITHOUT_WAITING_FOR_THE_DISK + statement, params)
        with self._maybe(tx) as cursor:
            return cursor.one(statement, params)

    def release_hold(self, user_id, hold_id, amount, description, metadata, tx=None, hold_token=None):
        """Returns `amount` of hold `hold_id` (0 closes it without returning
        anything); at most once per hold, and given `hold_token`, only if the
        hold carries it: (ok, transaction_id, available, reason)."""
        with self._maybe(tx) as cursor:
            return cursor.one(
                """
                SELECT ok, transaction_id, available, reason
                  FROM add_user_funds(%(user_id)s, %(amount)s, 'release', %(hold_id)s, %(description)s, %(metadata)s,
                                      %(hold_token)s)
                """,
                {"user_id": user_id, "amount": amount, "hold_id": hold_id, "hold_token": hold_token,
                 "description": description, "metadata": Json(metadata)},
            )

    def list_transactions(self, user_id, limit, before_id=None, kind=None, tx=None):
        """Newest first: up to `limit` entries older than `before_id`, of type `kind`, each with its `charge`."""
        with self._alone(tx) as cursor:
            return cursor.all(
                f"""
                SELECT {LEDGER_COLUMNS}
                  FROM transactions t
                  LEFT JOIN call_charges c ON t.type = 'release' AND c.hold_id = t.related_transaction_id
                 WHERE t.user_id = %(user_id)s
                   AND (%(before_id)s::bigint IS NULL OR t.id < %(before_id)s)
                   AND (%(kind)s::text IS NULL OR t.type = %(kind)s)
                 ORDER BY t.id DESC
                 LIMIT %(limit)s
                """,
                {"user_id": user_id, "before_id": before_id, "kind": kind, "limit": limit},
            )

    def charges(self, user_id, first_day, last_day, by_day, by_model, tx=None):
        """What the user paid, per UTC day and/or model, from `first_day` to
        `last_day` inclusive, read from the daily rollups (usage_daily, kept by
        the settle): each settled hold's amount less what its release returned,
        dated by the release. An open hold has no release yet and a hold
        returned whole charged nothing, so neither counts. Token counts sum the
        calls whose settle kept them; null when none did."""
        with self._alone(tx) as cursor:
            return cursor.all(
                """
                SELECT CASE WHEN %(by_day)s THEN day END AS day,
                       CASE WHEN %(by_model)s THEN model_id END AS model_id,
                       sum(cost) AS cost,
                       sum(requests)::bigint AS requests,
                       sum(input_tokens)::bigint AS input_tokens,
                       sum(cached_input_tokens)::bigint AS cached_input_tokens,
                       sum(cache_write_tokens)::bigint AS cache_write_tokens,
                       sum(output_tokens)::bigint AS output_tokens
                  FROM usage_daily
                 WHERE user_id = %(user_id)s
                   AND day BETWEEN %(first_day)s AND %(last_day)s
                 GROUP BY 1, 2
                 ORDER BY 1, 2
                """,
                {"user_id": user_id, "first_day": first_day, "last_day": last_day,
                 "by_day": by_day, "by_model": by_model},
            )

    def usage_differences(self, user_id=None, tx=None):
        """Every rollup row (user, day, model, key) that differs from what the
        ledger adds up to, with both counts (null: no row on that side), and
        how many rollup rows were compared: (differences, rows)."""
        with self._maybe(tx) as cursor:
            differences = cursor.all(
                """
                SELECT u.email, d.day, d.model_id, d.access_key_id, d.rollup::text, d.ledger::text
                  FROM usage_rollup_differences d
                  JOIN users u ON u.id = d.user_id
                 WHERE %(user_id)s::uuid IS NULL OR d.user_id = %(user_id)s
                 ORDER BY u.email, d.day, d.model_id, d.access_key_id
                """,
                {"user_id": user_id},
            )
            rows = cursor.one(
                "SELECT count(*) AS rows FROM usage_daily WHERE %(user_id)s::uuid IS NULL OR user_id = %(user_id)s",
                {"user_id": user_id},
            )["rows"]
        for row in differences:  # costs exact, as Decimal
            for side in ("rollup", "ledger"):
                row[side] = None if row[side] is None else json.loads(row[side], parse_float=Decimal)
        return differences, rows

    def stale_holds(self, call_timeout, grace_seconds, made_within=None, tx=None):
        """Holds never settled (their call's process died) whose call's deadline is
        more than `grace_seconds` past, oldest first. A hold without a stored
        deadline (made before holds had one) ends `call_timeout` after it was made.
        `made_within` (seconds): only holds made that recently, not the whole ledger."""
        with self._alone(tx) as cursor:
            return cursor.all(
                """
                SELECT hold.id, hold.user_id, hold.amount
                  FROM transactions hold
                 WHERE hold.type = 'hold'
                   AND (%(within)s IS NULL OR hold.created_at >= now() - make_interval(secs => %(within)s))
                   AND coalesce(hold.call_deadline, hold.created_at + make_interval(secs => %(call_timeout)s))
                       < now() - make_interval(secs => %(grace)s)
                   AND NOT EXISTS (SELECT 1 FROM transactions rel
                                    WHERE rel.related_transaction_id = hold.id AND rel.type = 'release')
                 ORDER BY hold.id
                """,
                {"call_timeout": call_timeout, "grace": grace_seconds, "within": made_within},
            )

