"""Idempotency records: a request with an Idempotency-Key runs once, and its
retries are answered from the stored answer."""
from database.errors import DatabaseUnavailable


class IdempotencySQL:
    """A part of DatabaseService (database/service.py), which gives `_maybe(tx)` and `_alone(tx)`."""

    def claim_idempotency_key(self, user_id, key, request_hash, stale_after_seconds, tx=None):
        """("claimed", None) when this request may run; else the existing record
        ("in_progress" | "done" | "mismatch", row). A record older than 24 h, or
        an in-progress one for the same request past its stale_at, is taken over.
        A claim's stale_at is `stale_after_seconds` after it, stored so that a
        retry served with other settings still waits as long."""
        for _ in range(3):
            with self._maybe(tx) as cursor:
                claimed = cursor.one(
                    """
                    INSERT INTO idempotency_keys (user_id, key, request_hash, stale_at)
                    VALUES (%(user_id)s, %(key)s, %(hash)s, now() + make_interval(secs => %(stale)s))
                    ON CONFLICT (user_id, key) DO UPDATE
                       SET request_hash = EXCLUDED.request_hash,
                           state = 'in_progress',
                           response_status = NULL,
                           response_body = NULL,
                           stale_at = EXCLUDED.stale_at,
                           created_at = now(),
                           updated_at = now()
                     WHERE idempotency_keys.created_at < now() - interval '24 hours'
                        OR (idempotency_keys.state = 'in_progress'
                            AND idempotency_keys.request_hash = EXCLUDED.request_hash
                            AND coalesce(idempotency_keys.stale_at,
                                         idempotency_keys.updated_at + make_interval(secs => %(stale)s)) < now())
                    RETURNING true AS claimed
                    """,
                    {"user_id": user_id, "key": key, "hash": request_hash, "stale": stale_after_seconds},
                )
                if claimed:
                    return "claimed", None
                record = cursor.one(
                    """
                    SELECT request_hash, state, response_status, response_body
                      FROM idempotency_keys
                     WHERE user_id = %(user_id)s
                       AND key = %(key)s
                    """,
                    {"user_id": user_id, "key": key},
                )
            if record is not None:
                state = "mismatch" if record["request_hash"] != request_hash else record["state"]
                return state, record
        raise DatabaseUnavailable("The idempotency record kept changing; try again.")

    def complete_idempotency_key(self, user_id, key, status, body_text, tx=None):
        """Stores the answer; given the caller's transaction, the answer and the
        effect it describes commit together (the write goes out with the COMMIT)."""
        with self._maybe(tx, user_id) as cursor:
            cursor.run_at_commit(
                """
                UPDATE idempotency_keys
                   SET state = 'done',
                       response_status = %(status)s,
                       response_body = %(body)s,
                       updated_at = now()
                 WHERE user_id = %(user_id)s
                   AND key = %(key)s
                """,
                {"user_id": user_id, "key": key, "status": status, "body": body_text},
            )

    def release_idempotency_key(self, user_id, key, tx=None):
        """Forgets an unfinished record, so a retry runs anew."""
        with self._maybe(tx) as cursor:
            cursor.run(
                """
                DELETE FROM idempotency_keys
                 WHERE user_id = %(user_id)s
                   AND key = %(key)s
                   AND state = 'in_progress'
                """,
                {"user_id": user_id, "key": key},
            )

    def prune_idempotency_keys(self, tx=None):
        with self._maybe(tx) as cursor:
            return cursor.run("DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'")

