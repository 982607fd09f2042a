"""Accounts: users, login throttling, token generations and refresh tokens."""


class AccountsSQL:
    """A part of DatabaseService (database/service.py), which gives `_maybe(tx)` and `_alone(tx)`."""

    def create_user(self, email, username, password_hash, tx=None):
        """The new user (with its balance row, made by a trigger), or the name of
        the unique field that is taken: ("email" | "username", None).

        A taken field is found without a failing INSERT: PostgreSQL would log
        that statement, the new password's hash with it."""
        with self._maybe(tx) as cursor:
            user = cursor.one(
                """
                INSERT INTO users (email, username, password_hash)
                VALUES (%(email)s, %(username)s, %(password_hash)s)
                ON CONFLICT DO NOTHING
                RETURNING id, email, username, created_at
                """,
                {"email": email, "username": username, "password_hash": password_hash},
            )
            if user is not None:
                return None, user
            # A new statement sees the conflicting row: ON CONFLICT waited for it to commit.
            email_taken = cursor.one(
                "SELECT EXISTS (SELECT 1 FROM users WHERE email = %(email)s) AS taken", {"email": email})["taken"]
            return ("email" if email_taken else "username"), None

    def login_attempt(self, email, threshold, window_seconds, tx=None):
        """Counts a login attempt for the email (whether or not it has an
        account) before its password is checked, so that parallel guesses are
        counted one after another; the threshold-th attempt within the window
        locks the email. A success clears the count (`clear_login_failures`).

        Returns the active user with this email (id None when there is none),
        whether this attempt is refused, and then the lock's seconds left."""
        params = {"email": email, "threshold": threshold, "window": window_seconds}
        with self._maybe(tx) as cursor:
            # The email's row, locked until commit; started afresh once its lock
            # or its window is over.
            cursor.run(
                """
                INSERT INTO login_attempts AS a (email)
                VALUES (%(email)s)
                ON CONFLICT (email) DO UPDATE
                   SET failures = 0,
                       window_start = now(),
                       locked_until = NULL
                 WHERE a.locked_until <= now()
                    OR (a.locked_until IS NULL AND a.window_start < now() - make_interval(secs => %(window)s))
                """,
                params,
            )
            # statement_timestamp(), not now(): the transaction may have begun
            # well before it got the row.
            return cursor.one(
                """
                WITH counted AS (
                    UPDATE login_attempts
                       SET failures = failures + 1,
                           locked_until = CASE WHEN failures + 1 >= %(threshold)s
                                               THEN statement_timestamp() + make_interval(secs => %(window)s) END
                     WHERE email = %(email)s
                       AND locked_until IS NULL
                    RETURNING email
                )
                SELECT u.id, u.email, u.username, u.password_hash, u.token_generation, u.created_at,
                       NOT EXISTS (SELECT FROM counted) AS refused,
                       greatest(1, ceil(extract(epoch FROM a.locked_until - statement_timestamp())))::integer
                           AS retry_after
                  FROM login_attempts a
                  LEFT JOIN users u ON u.email = a.email AND u.is_active
                 WHERE a.email = %(email)s
                """,
                params,
            )

    def prune_login_attempts(self, window_seconds, tx=None):
        """Forgets failure counts whose window and lock have both passed."""
        with self._maybe(tx) as cursor:
            return cursor.run(
                """
                DELETE FROM login_attempts
                 WHERE window_start < now() - make_interval(secs => %(window)s)
                   AND (locked_until IS NULL OR locked_until < now())
                """,
                {"window": window_seconds},
            )

    def clear_login_failures(self, email, tx=None):
        with self._maybe(tx) as cursor:
            cursor.run("DELETE FROM login_attempts WHERE email = %(email)s", {"email": email})

    def replace_password_hash(self, user_id, old_hash, new_hash, tx=None):
        """Rehash on login; a concurrent password change wins over the rehash."""
        with self._maybe(tx, user_id) as cursor:
            cursor.run(
                """
                UPDATE users
                   SET password_hash = %(new)s
                 WHERE id = %(id)s
                   AND password_hash = %(old)s
                """,
                {"id": user_id, "old": old_hash, "new": new_hash},
            )

    def token_generation(self, user_id, tx=None):
        """The user's current token generation, or None for no such active user."""
        with self._alone(tx) as cursor:
            row = cursor.one(
                """
                SELECT token_generation
                  FROM users
                 WHERE id = %(id)s
                   AND is_active
                """,
                {"id": user_id},
            )
        return None if row is None else row["token_generation"]

    def revoke_tokens(self, user_id, tx=None):
        """Every token issued before now stops working (logout, refresh reuse)."""
        with self._maybe(tx, user_id) as cursor:
            return cursor.one(
                """
                UPDATE users
                   SET token_generation = token_generation + 1
                 WHERE id = %(id)s
             RETURNING token_generation
                """,
                {"id": user_id},
            )["token_generation"]

    def store_refresh_token(self, jti, user_id, generation, expires_at, tx=None):
        with self._maybe(tx) as cursor:
            cursor.run(
                """
                INSERT INTO refresh_tokens (jti, user_id, generation, expires_at)
                VALUES (%(jti)s, %(user_id)s, %(generation)s, %(expires_at)s)
                """,
                {"jti": jti, "user_id": user_id, "generation": generation, "expires_at": expires_at},
            )

    def spend_refresh_token(self, jti, user_id, replaced_by, generation, expires_at, tx=None):
        """Marks a refresh token used and stores its successor, atomically.
        Returns "ok", "reused" (already spent: the caller revokes everything) or
        "unknown" (never issued, expired, or of a revoked generation)."""
        with self._maybe(tx, user_id) as cursor:
            row = cursor.one(
                """
                SELECT r.used_at, r.generation = u.token_generation AS current, r.expires_at > now() AS live
                  FROM refresh_tokens r
                  JOIN users u ON u.id = r.user_id
                 WHERE r.jti = %(jti)s
                   AND r.user_id = %(user_id)s
                   AND u.is_active
                   FOR UPDATE OF r
                """,
                {"jti": jti, "user_id": user_id},
            )
            if row is None or not row["current"] or not row["live"]:
                return "unknown"
            if row["used_at"] is not None:
                return "reused"
            cursor.run(
                """
                UPDATE refresh_tokens
                   SET used_at = now(),
                       replaced_by = %(replaced_by)s
                 WHERE jti = %(jti)s
                """,
                {"jti": jti, "replaced_by": replaced_by},
            )
            self.store_refresh_token(replaced_by, user_id, generation, expires_at, tx=cursor)
            return "ok"

    def profile(self, user_id, tx=None):
        with self._alone(tx) as cursor:
            return cursor.one(
                """
                SELECT u.id, u.email, u.username, u.created_at,
                       EXISTS (SELECT 1 FROM admins a WHERE a.user_id = u.id) AS is_admin,
                       b.total_balance, b.spent_balance, b.held_balance, b.available_balance, b.currency
                  FROM users u
                  JOIN user_with_balance b ON b.id = u.id
                 WHERE u.id = %(id)s
                """,
                {"id": user_id},
            )

    def user_id_by_email(self, email, tx=None):
        with self._alone(tx) as cursor:
            row = cursor.one("SELECT id FROM users WHERE email = %(email)s", {"email": email})
        return None if row is None else row["id"]

