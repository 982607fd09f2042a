"""The key vault's storage: API keys are stored and given back sealed, as the
vault's (kid, nonce, ciphertext); sealing and opening them is the caller's."""

API_KEY_COLUMNS = "id, provider, label, last4, created_at, last_used_at"


class KeysSQL:
    """A part of DatabaseService (database/service.py), which gives `_maybe(tx)` and `_alone(tx)`."""

    def store_api_key(self, user_id, provider, label, sealed, fingerprint, last4, tx=None):
        """The stored key's public fields, or None when the user already holds
        this key (same fingerprint). `sealed` is the vault's (kid, nonce, ciphertext).
        A duplicate is no failing INSERT: PostgreSQL would log it, ciphertext included."""
        kid, nonce, ciphertext = sealed
        with self._maybe(tx, user_id) as cursor:
            return cursor.one(
                f"""
                INSERT INTO api_keys (user_id, provider, label, encrypted_key, nonce, encryption_kid,
                                      key_fingerprint, last4)
                VALUES (%(user_id)s, %(provider)s, %(label)s, %(ciphertext)s, %(nonce)s, %(kid)s,
                        %(fingerprint)s, %(last4)s)
                ON CONFLICT (user_id, key_fingerprint) DO NOTHING
                RETURNING {API_KEY_COLUMNS}
                """,
                {"user_id": user_id, "provider": provider, "label": label, "ciphertext": ciphertext,
                 "nonce": nonce, "kid": kid, "fingerprint": fingerprint, "last4": last4},
            )

    def count_api_keys(self, user_id, tx=None):
        with self._alone(tx) as cursor:
            return cursor.one("SELECT count(*) AS n FROM api_keys WHERE user_id = %(user_id)s",
                              {"user_id": user_id})["n"]

    def list_api_keys(self, user_id, tx=None):
        with self._alone(tx) as cursor:
            return cursor.all(
                f"""
                SELECT {API_KEY_COLUMNS}
                  FROM api_keys
                 WHERE user_id = %(user_id)s
                 ORDER BY created_at DESC, id
                """,
                {"user_id": user_id},
            )

    def delete_api_key(self, user_id, key_id, tx=None):
        """Destroys the key and its ciphertext; False when the user has no such key."""
        with self._maybe(tx, user_id) as cursor:
            return cursor.run(
                "DELETE FROM api_keys WHERE id = %(id)s AND user_id = %(user_id)s",
                {"id": key_id, "user_id": user_id},
            ) == 1

    def keys_to_reseal(self, newest_kid, tx=None):
        """The stored keys not under the encryption key `newest_kid` (id,
        user_id, provider, sealed), and how many already are, read together."""
        with self._maybe(tx) as cursor:
            stale = cursor.all(
                """
                SELECT id, user_id, provider, encryption_kid, nonce, encrypted_key
                  FROM api_keys
                 WHERE encryption_kid <> %(newest)s
                """,
                {"newest": newest_kid},
            )
            current = cursor.one("SELECT count(*) AS n FROM api_keys WHERE encryption_kid = %(newest)s",
                                 {"newest": newest_kid})["n"]
        for row in stale:
            row["sealed"] = sealed_key(row)
        return stale, current

    def reseal_api_key(self, key_id, old, new, tx=None):
        """Replaces the key's sealed form `old` by `new` (the vault's (kid, nonce,
        ciphertext)): False, and the key left as it is, when someone changed it
        meanwhile."""
        (old_kid, old_nonce, _), (kid, nonce, ciphertext) = old, new
        with self._maybe(tx) as cursor:
            return cursor.run(
                """
                UPDATE api_keys
                   SET encryption_kid = %(kid)s,
                       nonce = %(nonce)s,
                       encrypted_key = %(ciphertext)s
                 WHERE id = %(id)s
                   AND encryption_kid = %(old_kid)s
                   AND nonce = %(old_nonce)s
                """,
                {"kid": kid, "nonce": nonce, "ciphertext": ciphertext, "id": key_id,
                 "old_kid": old_kid, "old_nonce": old_nonce},
            ) == 1


def sealed_key(row):
    """Takes a stored key's columns out of `row`: the vault's (kid, nonce,
    ciphertext), or None when the row holds no key. Decrypting is the caller's."""
    kid, nonce, ciphertext = row.pop("encryption_kid"), row.pop("nonce"), row.pop("encrypted_key")
    return None if kid is None else (kid, nonce, ciphertext)
