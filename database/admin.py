"""What operators read and do. Reads are plain queries under the service's
login; every change goes through an admin_* function of the schema, which
checks the admin itself and writes the `admin_actions` row
(database/migrations/0013_operators.sql). Granting and revoking admins is
the database owner's alone: those take the owner's transaction."""
import json

from psycopg2.extras import Json

from database.access_keys import ACCESS_KEY_COLUMNS
from database.money import LEDGER_COLUMNS

USER_COLUMNS = ("u.id, u.email, u.username, u.is_active, u.created_at, "
                "EXISTS (SELECT 1 FROM admins a WHERE a.user_id = u.id) AS is_admin")


class AdminSQL:
    """A part of DatabaseService (database/service.py), which gives `_maybe(tx)` and `_alone(tx)`."""

    def admin_standing(self, user_id, tx=None):
        """(token_generation, is_admin) of an active user, read on every admin
        request; None for no such active user."""
        with self._alone(tx) as cursor:
            return cursor.one(
                """
                SELECT u.token_generation, EXISTS (SELECT 1 FROM admins a WHERE a.user_id = u.id) AS is_admin
                  FROM users u
                 WHERE u.id = %(id)s
                   AND u.is_active
                """,
                {"id": user_id},
            )

    # ------------------------------------------------------------- the owner's

    def grant_admin(self, email, reason, tx):
        """Makes the user with `email` an admin (as the owner): the user's id,
        or None for no such user. Granting an admin again changes nothing."""
        return self._owner_sets_admin(email, reason, "grant_admin", """
            INSERT INTO admins (user_id) SELECT id FROM target ON CONFLICT DO NOTHING RETURNING user_id""", tx)

    def revoke_admin(self, email, reason, tx):
        return self._owner_sets_admin(email, reason, "revoke_admin", """
            DELETE FROM admins WHERE user_id IN (SELECT id FROM target) RETURNING user_id""", tx)

    def _owner_sets_admin(self, email, reason, action, change, tx):
        row = tx.one(
            f"""
            WITH target AS (SELECT id FROM users WHERE email = %(email)s),
                 changed AS ({change}),
                 logged AS (INSERT INTO admin_actions (action, target_user_id, reason, details)
                            SELECT %(action)s, id, %(reason)s,
                                   jsonb_build_object('changed', EXISTS (SELECT 1 FROM changed))
                              FROM target
                            RETURNING target_user_id)
            SELECT target_user_id AS id FROM logged
            """,
            {"email": email, "reason": reason, "action": action},
        )
        return row and row["id"]

    # ------------------------------------------------------------- users

    def search_users(self, query, limit, after=None, tx=None):
        """Users whose email or username contains `query` (every user when it
        is empty), newest first, after the (created_at, id) `after`."""
        created_at, user_id = after or (None, None)
        pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._alone(tx) as cursor:
            return cursor.all(
                f"""
                SELECT {USER_COLUMNS}
                  FROM users u
                 WHERE (u.email ILIKE %(pattern)s OR u.username ILIKE %(pattern)s)
                   AND (%(created_at)s::timestamptz IS NULL OR (u.created_at, u.id) < (%(created_at)s, %(id)s))
                 ORDER BY u.created_at DESC, u.id DESC
                 LIMIT %(limit)s
                """,
                {"pattern": pattern, "created_at": created_at, "id": user_id, "limit": limit},
            )

    def user_file(self, user_id, recent, tx=None):
        """One user as support reads them: the user with their balance, their
        `recent` latest ledger entries, access keys (never a secret or its hash)
        and calls. None for no such user."""
        with self._maybe(tx) as cursor:
            found = cursor.one(
                f"""
                SELECT {USER_COLUMNS}, b.total_balance, b.spent_balance, b.held_balance,
                       b.total_balance - b.spent_balance AS available_balance, b.currency
                  FROM users u
                  JOIN user_balance b ON b.user_id = u.id
                 WHERE u.id = %(id)s
                """,
                {"id": user_id},
            )
            if found is None:
                return None
            ledger = cursor.all(
                f"""
                SELECT {LEDGER_COLUMNS}
                  FROM transactions t
                  LEFT JOIN call_charges c ON t.type = 'release' AND c.hold_id = t.related_transaction_id
                 WHERE t.user_id = %(id)s
                 ORDER BY t.id DESC
                 LIMIT %(limit)s
                """,
                {"id": user_id, "limit": recent},
            )
            keys = cursor.all(
                f"""
                SELECT {ACCESS_KEY_COLUMNS}, revoked_at
                  FROM access_keys
                 WHERE user_id = %(id)s
                 ORDER BY created_at DESC, id DESC
                """,
                {"id": user_id},
            )
            calls = cursor.all(
                """
                SELECT hold.id AS hold_id, coalesce(hold.model_id, hold.metadata ->> 'model_id') AS model_id,
                       hold.access_key_id, hold.amount AS held, hold.amount - rel.amount AS charged,
                       rel.id IS NULL AS open, hold.created_at, hold.call_deadline
                  FROM transactions hold
                  LEFT JOIN transactions rel ON rel.related_transaction_id = hold.id AND rel.type = 'release'
                 WHERE hold.user_id = %(id)s
                   AND hold.type = 'hold'
                 ORDER BY hold.id DESC
                 LIMIT %(limit)s
                """,
                {"id": user_id, "limit": recent},
            )
        return {"user": found, "ledger": ledger, "access_keys": keys, "calls": calls}

    def admin_move_money(self, admin_id, user_id, action, amount, reason, details, tx=None):
        """A credit or debit ('credit' | 'debit'): (ok, reason, transaction_id, available, action_id)."""
        with self._maybe(tx, admin_id) as cursor:
            return cursor.one(
                """
                SELECT ok, reason, transaction_id, available, action_id
                  FROM admin_move_money(%(admin)s, %(user)s, %(action)s, %(amount)s, %(reason)s, %(details)s)
                """,
                {"admin": admin_id, "user": user_id, "action": action, "amount": amount, "reason": reason,
                 "details": Json(details)},
            )

    def admin_set_user_active(self, admin_id, user_id, active, reason, tx=None):
        """(ok, reason, changed)."""
        with self._maybe(tx, admin_id) as cursor:
            return cursor.one(
                "SELECT ok, reason, changed FROM admin_set_user_active(%(admin)s, %(user)s, %(active)s, %(reason)s)",
                {"admin": admin_id, "user": user_id, "active": active, "reason": reason},
            )

    # ------------------------------------------------------------- the catalog

    def admin_models(self, tx=None):
        """Every catalog model, disabled ones too, by id: what an admin edits."""
        with self._alone(tx) as cursor:
            return cursor.all(
                """
                SELECT id, name, is_active AS active, input_price_per_mtok, output_price_per_mtok
                  FROM models
                 ORDER BY id
                """
            )

    def admin_model_row(self, model_id, tx=None):
        """A catalog model's row as catalog.json writes an entry (`active`, not
        is_active; prices as decimal text, never a float); None if unknown."""
        with self._alone(tx) as cursor:
            row = cursor.one(
                """
                SELECT to_jsonb(m) - 'created_at' - 'updated_at'
                       || jsonb_build_object(
                              'input_price_per_mtok', m.input_price_per_mtok::text,
                              'output_price_per_mtok', m.output_price_per_mtok::text,
                              'cache_read_price_per_mtok', m.cache_read_price_per_mtok::text,
                              'cache_write_price_per_mtok', m.cache_write_price_per_mtok::text,
                              'cache_write_1h_price_per_mtok', m.cache_write_1h_price_per_mtok::text) AS entry
                  FROM models m
                 WHERE m.id = %(id)s
                """,
                {"id": model_id},
            )
        if row is None:
            return None
        entry = row["entry"]
        entry["active"] = entry.pop("is_active")
        return entry

    def admin_put_model(self, admin_id, action, entry, reason, tx=None):
        """Adds or replaces a validated catalog entry: (ok, reason)."""
        row = {("is_active" if column == "active" else column): value for column, value in entry.items()}
        with self._maybe(tx, admin_id) as cursor:
            return cursor.one(
                "SELECT ok, reason FROM admin_put_model(%(admin)s, %(action)s, %(entry)s, %(reason)s)",
                {"admin": admin_id, "action": action, "entry": Json(row, dumps=_json_text), "reason": reason},
            )

    def alias_lists(self, tx=None):
        """Every alias list, by name."""
        with self._alone(tx) as cursor:
            return cursor.all("SELECT alias, models, updated_at FROM alias_lists ORDER BY alias")

    def admin_put_alias_list(self, admin_id, action, alias, models, reason, tx=None):
        """Makes (`action` add_alias_list) or replaces (change_alias_list) an
        alias list: (ok, reason); the schema checks its models and name at commit."""
        with self._maybe(tx, admin_id) as cursor:
            return cursor.one(
                "SELECT ok, reason FROM admin_put_alias_list(%(admin)s, %(action)s, %(alias)s, %(models)s, %(reason)s)",
                {"admin": admin_id, "action": action, "alias": alias, "models": models, "reason": reason})

    def admin_drop_alias_list(self, admin_id, alias, reason, tx=None):
        """Removes an alias list: (ok, reason)."""
        with self._maybe(tx, admin_id) as cursor:
            return cursor.one("SELECT ok, reason FROM admin_drop_alias_list(%(admin)s, %(alias)s, %(reason)s)",
                              {"admin": admin_id, "alias": alias, "reason": reason})

    def admin_schedule_price(self, admin_id, model_id, effective_from, prices, reason, tx=None):
        """A price version in force from `effective_from`: (ok, reason, version_id)."""
        with self._maybe(tx, admin_id) as cursor:
            return cursor.one(
                """
                SELECT ok, reason, version_id
                  FROM admin_schedule_price(%(admin)s, %(model)s, %(effective_from)s, %(prices)s, %(reason)s)
                """,
                {"admin": admin_id, "model": model_id, "effective_from": effective_from,
                 "prices": Json(prices, dumps=_json_text), "reason": reason},
            )

    # ------------------------------------------------------------- operations

    def admin_record(self, admin_id, action, reason, details, tx=None):
        """An audit row for an action with no row of its own: (ok, reason, action_id)."""
        with self._maybe(tx, admin_id) as cursor:
            return cursor.one(
                "SELECT ok, reason, action_id FROM admin_record(%(admin)s, %(action)s, %(reason)s, %(details)s)",
                {"admin": admin_id, "action": action, "reason": reason, "details": Json(details)},
            )

    def note_house_key_failure(self, provider, setting, status, tx=None):
        """That `provider` refused the house key in `setting` with `status` now."""
        with self._alone(tx) as cursor:
            cursor.run(
                """
                INSERT INTO house_key_failures (provider, setting, status)
                VALUES (%(provider)s, %(setting)s, %(status)s)
                ON CONFLICT (provider, setting) DO UPDATE
                   SET status = EXCLUDED.status, failed_at = now(),
                       failures = house_key_failures.failures + 1
                """,
                {"provider": provider, "setting": setting, "status": status},
            )

    def house_key_failures(self, tx=None):
        """{(provider, setting): row} of every house key's last failure."""
        with self._alone(tx) as cursor:
            return {(row["provider"], row["setting"]): row for row in cursor.all(
                "SELECT provider, setting, status, failed_at, failures FROM house_key_failures")}

    def overdue_holds(self, limit, tx=None):
        """Open holds whose call's deadline has passed, oldest first."""
        with self._alone(tx) as cursor:
            return cursor.all(
                """
                SELECT hold.id, hold.user_id, u.email, hold.amount,
                       coalesce(hold.model_id, hold.metadata ->> 'model_id') AS model_id,
                       hold.access_key_id, hold.created_at, hold.call_deadline
                  FROM transactions hold
                  JOIN users u ON u.id = hold.user_id
                 WHERE hold.type = 'hold'
                   AND hold.call_deadline < now()
                   AND NOT EXISTS (SELECT 1 FROM transactions rel
                                    WHERE rel.related_transaction_id = hold.id AND rel.type = 'release')
                 ORDER BY hold.id
                 LIMIT %(limit)s
                """,
                {"limit": limit},
            )

    def admin_audit_log(self, admin_id, limit, before_id=None, user_id=None, actor_id=None, action=None,
                        since=None, until=None, tx=None):
        """Admin actions, newest first, as admin_audit_log (the schema) filters them."""
        with self._alone(tx) as cursor:
            return cursor.all(
                """
                SELECT * FROM admin_audit_log(%(admin)s, %(user)s, %(actor)s, %(action)s, %(since)s, %(until)s,
                                              %(before)s, %(limit)s)
                """,
                {"admin": admin_id, "user": user_id, "actor": actor_id, "action": action, "since": since,
                 "until": until, "before": before_id, "limit": limit},
            )


def _json_text(value):
    """JSON with Decimals and dates as text, which jsonb_populate_record reads back exactly."""
    return json.dumps(value, default=str)
