"""Access keys: issued to a user's programs for the inference API. Only a
SHA-256 of each key is stored; `spent` is kept by the money procedures alone."""

ACCESS_KEY_COLUMNS = ("id, name, last4, allowed_models, spend_limit, spend_limit_period, spent, expires_at, "
                      "created_at, last_used_at")


class AccessKeysSQL:
    """A part of DatabaseService (database/service.py), which gives `_maybe(tx)` and `_alone(tx)`."""

    def create_access_key(self, user_id, name, key_hash, last4, allowed_models=None, spend_limit=None,
                          spend_limit_period=None, expires_at=None, tx=None):
        """The new key's row (never its hash)."""
        with self._maybe(tx, user_id) as cursor:
            return cursor.one(
                f"""
                INSERT INTO access_keys (user_id, name, key_hash, last4, allowed_models, spend_limit,
                                         spend_limit_period, expires_at)
                VALUES (%(user_id)s, %(name)s, %(key_hash)s, %(last4)s, %(allowed_models)s, %(spend_limit)s,
                        %(spend_limit_period)s, %(expires_at)s)
             RETURNING {ACCESS_KEY_COLUMNS}
                """,
                {"user_id": user_id, "name": name, "key_hash": key_hash, "last4": last4,
                 "allowed_models": allowed_models, "spend_limit": spend_limit,
                 "spend_limit_period": spend_limit_period, "expires_at": expires_at},
            )

    def count_live_access_keys(self, user_id, tx=None):
        with self._alone(tx) as cursor:
            return cursor.one(
                "SELECT count(*) AS n FROM access_keys WHERE user_id = %(user_id)s AND revoked_at IS NULL",
                {"user_id": user_id},
            )["n"]

    def list_access_keys(self, user_id, limit, after=None, tx=None):
        """The user's unrevoked keys, newest first; `after` is the (created_at, id)
        of the previous page's last. Expired keys stay listed, so they can be seen."""
        created_at, key_id = after or (None, None)
        with self._alone(tx) as cursor:
            return cursor.all(
                f"""
                SELECT {ACCESS_KEY_COLUMNS}
                  FROM access_keys
                 WHERE user_id = %(user_id)s
                   AND revoked_at IS NULL
                   AND (%(created_at)s::timestamptz IS NULL OR (created_at, id) < (%(created_at)s, %(id)s))
                 ORDER BY created_at DESC, id DESC
                 LIMIT %(limit)s
                """,
                {"user_id": user_id, "created_at": created_at, "id": key_id, "limit": limit},
            )

    def revoke_access_key(self, user_id, key_id, tx=None):
        """Stops the key at once (its row stays, for the ledger); False when the
        user has no such unrevoked key."""
        with self._maybe(tx, user_id) as cursor:
            return cursor.run(
                """
                UPDATE access_keys
                   SET revoked_at = now()
                 WHERE id = %(id)s
                   AND user_id = %(user_id)s
                   AND revoked_at IS NULL
                """,
                {"id": key_id, "user_id": user_id},
            ) == 1

    def live_access_key(self, key_hash, tx=None):
        """The key whose SHA-256 is `key_hash` with its user_id, when it is
        unrevoked, unexpired and its user active; else None. Looking up by the hash
        of a high-entropy key is the constant-time compare: nothing about the key
        itself is compared byte by byte. A function of the schema's, whose plan
        its connection keeps."""
        with self._alone(tx) as cursor:
            return cursor.one("SELECT * FROM live_access_key(%(key_hash)s)", {"key_hash": key_hash})

    def touch_access_key(self, key_id, tx=None):
        """Records that the key was used just now."""
        with self._alone(tx) as cursor:
            cursor.run("UPDATE access_keys SET last_used_at = now() WHERE id = %(id)s", {"id": key_id})

    def models_not_in_catalog(self, model_ids, tx=None):
        """Those of `model_ids` that are no active catalog model, in the order given."""
        with self._alone(tx) as cursor:
            offered = {row["id"] for row in cursor.all(
                "SELECT id FROM models WHERE id = ANY(%(ids)s) AND is_active", {"ids": list(model_ids)})}
        return [model_id for model_id in model_ids if model_id not in offered]
