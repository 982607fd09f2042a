"""DatabaseService: the process's one connection pool and every SQL statement.

A connection is borrowed for one unit of work (`with db.transaction() as tx:`)
and given back when it ends, committed or rolled back; never held across a call
to another service. The pool is made lazily, once per process (a forked worker
makes its own), so the service starts and answers /readyz while the database is
down."""
import logging
import os
import random
import threading
from contextlib import contextmanager

import psycopg2
import psycopg2.extras
from psycopg2.extensions import TRANSACTION_STATUS_IDLE
from psycopg2.extras import Json
from flask import current_app

from database.errors import DatabaseUnavailable
from database.vault import VaultError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5
API_KEY_COLUMNS = "id, provider, label, last4, created_at, last_used_at"
SESSION_COLUMNS = ("id, model_id, title, message_count, total_prompt_tokens, total_completion_tokens, total_cost, "
                   "created_at, updated_at")
MESSAGE_COLUMNS = "id, role, content, prompt_tokens, completion_tokens, cost, created_at"
# Usage counters per model and day are spread over this many rows, so parallel
# settles do not queue on one.
USAGE_BUCKETS = 16
PREFERENCE_COLUMNS = ("default_model_id, preferred_providers, daily_spend_limit, max_cost_per_message, theme, "
                      "updated_at")
TRANSACTION_COLUMNS = "id, type, amount, available_after, related_transaction_id, description, created_at"


class Cursor:
    """The transaction helper's small vocabulary over a cursor of one connection.

    Connections run in autocommit mode and the helper opens the transaction
    itself: BEGIN, and the acting user for the audit triggers, travel in the
    same round trip as the transaction's first statement, not in their own.
    So a pooled connection found dead at that first statement can be swapped
    for a fresh one with nothing lost (SQLAlchemy's pool_pre_ping, without the
    ping on every borrow)."""

    BEGIN = "BEGIN;\n"
    SET_ACTOR = "SELECT set_config('app.user_id', %(_acting_user_id)s, true);\n"
    # Statements go with bind parameters, so a literal % is written %%.

    def __init__(self, connection, acting_user_id=None, replace_connection=None):
        """`replace_connection(dead)` gives a fresh connection for one that was
        idle in the pool and is found dead at the first statement; None when
        `connection` is itself fresh (then a failure is the server's answer)."""
        self.connection = connection
        self._cursor = connection.cursor()
        self._replace_connection = replace_connection
        self._opening = self.BEGIN + (self.SET_ACTOR if acting_user_id is not None else "")
        self._opening_params = {} if acting_user_id is None else {"_acting_user_id": str(acting_user_id)}
        self.began = False

    def _execute(self, sql, params):
        if self.began:
            self._cursor.execute(sql, params)
            return
        sql = self._opening + sql
        if self._opening_params:
            params = {**(params or {}), **self._opening_params}
        self.began = True
        try:
            self._cursor.execute(sql, params)
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            if self._replace_connection is None or not self.connection.closed:
                raise
            # It died while idle (the server restarted). Nothing of this transaction
            # can have run: BEGIN travelled with this statement, and no COMMIT did.
            log.info("a pooled connection was found dead; the transaction starts on a fresh one")
            self._cursor.close()
            self.connection = self._replace_connection(self.connection)
            self._replace_connection = None
            self._cursor = self.connection.cursor()
            self._cursor.execute(sql, params)

    def commit(self):
        if self.began:
            self._cursor.execute("COMMIT")

    def close(self):
        self._cursor.close()

    def run(self, sql, params=None):
        self._execute(sql, params)
        return self._cursor.rowcount

    def one(self, sql, params=None):
        self._execute(sql, params)
        return self._cursor.fetchone()

    def all(self, sql, params=None):
        self._execute(sql, params)
        return self._cursor.fetchall()


class _ProcessPool:
    """Up to `size` connections, opened on demand and kept while idle (newest
    first). A semaphore bounds check-outs, so an exhausted pool makes callers
    wait up to `timeout` and then answers 503 instead of failing at once."""

    def __init__(self, dsn, size, timeout):
        self.pid = os.getpid()
        self.dsn = dsn
        self.timeout = timeout
        self._slots = threading.BoundedSemaphore(size)
        self._idle = []
        self._lock = threading.Lock()

    def borrow(self):
        """(connection, whether it was idle here): an idle one may have died
        unnoticed since, which only its first statement will tell."""
        if not self._slots.acquire(timeout=self.timeout):
            raise DatabaseUnavailable("All database connections are busy; try again shortly.")
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is not None and not conn.closed:
            return conn, True
        try:
            return self._connect(), False
        except DatabaseUnavailable:
            self._slots.release()
            raise

    def replace(self, dead):
        """A fresh connection in the dead one's slot. It died with its server,
        and so did the idle ones: they are dropped, not tried one by one."""
        dead.close()
        self.close()
        return self._connect()

    def _connect(self):
        try:
            conn = psycopg2.connect(self.dsn, connect_timeout=CONNECT_TIMEOUT_SECONDS, application_name="qmarket",
                                    cursor_factory=psycopg2.extras.RealDictCursor)
        except psycopg2.Error as exc:
            log.warning("database connection failed: %s", type(exc).__name__)
            raise DatabaseUnavailable() from None
        conn.autocommit = True  # Cursor opens each transaction in its first round trip
        return conn

    def give_back(self, conn, broken):
        try:
            if broken:
                # Lost during a transaction: usually a restarted server, so the
                # idle ones are dead too.
                conn.close()
                self.close()
            elif conn.closed or conn.info.transaction_status != TRANSACTION_STATUS_IDLE:
                conn.close()
            else:
                with self._lock:
                    self._idle.append(conn)
        finally:
            self._slots.release()

    def close(self):
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _PoolHolder:
    def __init__(self, dsn, size, timeout):
        self.dsn, self.size, self.timeout = dsn, size, timeout
        self._lock = threading.Lock()
        self._pool = None

    def get(self):
        pool = self._pool
        if pool is None or pool.pid != os.getpid():
            with self._lock:
                if self._pool is None or self._pool.pid != os.getpid():
                    self._pool = _ProcessPool(self.dsn, self.size, self.timeout)
                pool = self._pool
        return pool

    def close(self):
        with self._lock:
            if self._pool is not None and self._pool.pid == os.getpid():
                self._pool.close()
            self._pool = None


class DatabaseService:
    """Made once (`db = DatabaseService()`), bound to an app with `init_app`; its
    state lives in `app.extensions["database"]`."""

    def __init__(self, app=None):
        if app is not None:
            self.init_app(app)

    def init_app(self, app):
        # uuid.UUID in and out of queries; registration is process-wide and idempotent.
        psycopg2.extras.register_uuid()
        app.extensions["database"] = _PoolHolder(
            app.config["DATABASE_URL"], app.config["DB_POOL_SIZE"], app.config["DB_POOL_TIMEOUT"])

    @property
    def _holder(self):
        return current_app.extensions["database"]

    def close(self):
        self._holder.close()

    @contextmanager
    def transaction(self, acting_user_id=None):
        """One unit of work: commits when the block ends, rolls back on error.
        `acting_user_id` is what the audit triggers record as the actor."""
        pool = self._holder.get()
        conn, was_idle = pool.borrow()
        cursor = Cursor(conn, acting_user_id, replace_connection=pool.replace if was_idle else None)
        broken = False
        try:
            yield cursor
            cursor.commit()
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            # Lost connection, server shutting down, or statement timeout.
            broken = not _rollback(cursor.connection)
            log.warning("database unavailable during a transaction: %s", type(exc).__name__)
            raise DatabaseUnavailable() from None
        except BaseException:
            broken = not _rollback(cursor.connection)
            raise
        finally:
            cursor.close()
            pool.give_back(cursor.connection, broken)

    def ping(self):
        with self.transaction() as tx:
            tx.one("SELECT 1 AS ok")

    # ------------------------------------------------------------- accounts

    def create_user(self, email, username, password_hash):
        """The new user (with its balance row, made by a trigger), or the name of
        the unique field that is taken: ("email" | "username", None).

        A taken field is found without a failing INSERT: PostgreSQL would log
        that statement, the new password's hash with it."""
        with self.transaction() as tx:
            user = tx.one(
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
            email_taken = tx.one(
                "SELECT EXISTS (SELECT 1 FROM users WHERE email = %(email)s) AS taken", {"email": email})["taken"]
            return ("email" if email_taken else "username"), None

    def login_attempt(self, email, threshold, window_seconds):
        """Counts a login attempt for the email (whether or not it has an
        account) before its password is checked, so that parallel guesses are
        counted one after another; the threshold-th attempt within the window
        locks the email. A success clears the count (`clear_login_failures`).

        Returns the active user with this email (id None when there is none),
        whether this attempt is refused, and then the lock's seconds left."""
        params = {"email": email, "threshold": threshold, "window": window_seconds}
        with self.transaction() as tx:
            # The email's row, locked until commit; started afresh once its lock
            # or its window is over.
            tx.run(
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
            return tx.one(
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

    def prune_login_attempts(self, window_seconds):
        """Forgets failure counts whose window and lock have both passed."""
        with self.transaction() as tx:
            return tx.run(
                """
                DELETE FROM login_attempts
                 WHERE window_start < now() - make_interval(secs => %(window)s)
                   AND (locked_until IS NULL OR locked_until < now())
                """,
                {"window": window_seconds},
            )

    def clear_login_failures(self, email):
        with self.transaction() as tx:
            tx.run("DELETE FROM login_attempts WHERE email = %(email)s", {"email": email})

    def replace_password_hash(self, user_id, old_hash, new_hash):
        """Rehash on login; a concurrent password change wins over the rehash."""
        with self.transaction(acting_user_id=user_id) as tx:
            tx.run(
                """
                UPDATE users
                   SET password_hash = %(new)s
                 WHERE id = %(id)s
                   AND password_hash = %(old)s
                """,
                {"id": user_id, "old": old_hash, "new": new_hash},
            )

    def token_generation(self, user_id):
        """The user's current token generation, or None for no such active user."""
        with self.transaction() as tx:
            row = tx.one(
                """
                SELECT token_generation
                  FROM users
                 WHERE id = %(id)s
                   AND is_active
                """,
                {"id": user_id},
            )
        return None if row is None else row["token_generation"]

    def revoke_tokens(self, user_id):
        """Every token issued before now stops working (logout, refresh reuse)."""
        with self.transaction(acting_user_id=user_id) as tx:
            return tx.one(
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

    def spend_refresh_token(self, jti, user_id, replaced_by, generation, expires_at):
        """Marks a refresh token used and stores its successor, atomically.
        Returns "ok", "reused" (already spent: the caller revokes everything) or
        "unknown" (never issued, expired, or of a revoked generation)."""
        with self.transaction(acting_user_id=user_id) as tx:
            row = tx.one(
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
            tx.run(
                """
                UPDATE refresh_tokens
                   SET used_at = now(),
                       replaced_by = %(replaced_by)s
                 WHERE jti = %(jti)s
                """,
                {"jti": jti, "replaced_by": replaced_by},
            )
            self.store_refresh_token(replaced_by, user_id, generation, expires_at, tx=tx)
            return "ok"

    def profile(self, user_id):
        with self.transaction() as tx:
            return tx.one(
                """
                SELECT u.id, u.email, u.username, u.created_at,
                       b.total_balance, b.spent_balance, b.held_balance, b.available_balance, b.currency
                  FROM users u
                  JOIN user_with_balance b ON b.id = u.id
                 WHERE u.id = %(id)s
                """,
                {"id": user_id},
            )

    # ------------------------------------------------------------- money
    # These take an optional cursor `tx` so a caller can join a money movement
    # and its other writes (an idempotency record, chat messages) in one commit.

    def balance(self, user_id, tx=None):
        with self._maybe(tx) as cursor:
            return cursor.one(
                """
                SELECT total_balance, spent_balance, held_balance, available_balance, currency
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

    def hold_funds(self, user_id, amount, description, metadata, daily_limit=None, call_timeout=None, tx=None):
        """Holds `amount`: (ok, transaction_id, available, reason); ok is false and
        nothing changes when the balance (or the daily limit) does not allow it.
        The hold's call ends within `call_timeout` seconds: it is stored as its deadline."""
        with self._maybe(tx) as cursor:
            return cursor.one(
                """
                SELECT ok, transaction_id, available, reason
                  FROM deduct_user_balance(%(user_id)s, %(amount)s, %(description)s, %(metadata)s, %(daily_limit)s,
                                           %(call_timeout)s)
                """,
                {"user_id": user_id, "amount": amount, "description": description,
                 "metadata": Json(metadata), "daily_limit": daily_limit, "call_timeout": call_timeout},
            )

    def release_hold(self, user_id, hold_id, amount, description, metadata, tx=None):
        """Returns `amount` of hold `hold_id` (0 closes it without returning
        anything); at most once per hold: (ok, transaction_id, available, reason)."""
        with self._maybe(tx) as cursor:
            return cursor.one(
                """
                SELECT ok, transaction_id, available, reason
                  FROM add_user_funds(%(user_id)s, %(amount)s, 'release', %(hold_id)s, %(description)s, %(metadata)s)
                """,
                {"user_id": user_id, "amount": amount, "hold_id": hold_id,
                 "description": description, "metadata": Json(metadata)},
            )

    def ledger_entry(self, user_id, transaction_id, tx=None):
        with self._maybe(tx) as cursor:
            return cursor.one(
                f"""
                SELECT {TRANSACTION_COLUMNS}
                  FROM transactions
                 WHERE id = %(id)s
                   AND user_id = %(user_id)s
                """,
                {"id": transaction_id, "user_id": user_id},
            )

    def list_transactions(self, user_id, limit, before_id=None, kind=None):
        """Newest first: up to `limit` entries older than `before_id`, of type `kind`."""
        with self.transaction() as tx:
            return tx.all(
                f"""
                SELECT {TRANSACTION_COLUMNS}
                  FROM transactions
                 WHERE user_id = %(user_id)s
                   AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s)
                   AND (%(kind)s::text IS NULL OR type = %(kind)s)
                 ORDER BY id DESC
                 LIMIT %(limit)s
                """,
                {"user_id": user_id, "before_id": before_id, "kind": kind, "limit": limit},
            )

    def user_id_by_email(self, email):
        with self.transaction() as tx:
            row = tx.one("SELECT id FROM users WHERE email = %(email)s", {"email": email})
        return None if row is None else row["id"]

    # ------------------------------------------------------------- key vault

    def store_api_key(self, user_id, provider, label, sealed, fingerprint, last4):
        """The stored key's public fields, or None when the user already holds
        this key (same fingerprint). `sealed` is the vault's (kid, nonce, ciphertext).
        A duplicate is no failing INSERT: PostgreSQL would log it, ciphertext included."""
        kid, nonce, ciphertext = sealed
        with self.transaction(acting_user_id=user_id) as tx:
            return tx.one(
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

    def count_api_keys(self, user_id):
        with self.transaction() as tx:
            return tx.one("SELECT count(*) AS n FROM api_keys WHERE user_id = %(user_id)s", {"user_id": user_id})["n"]

    def list_api_keys(self, user_id):
        with self.transaction() as tx:
            return tx.all(
                f"""
                SELECT {API_KEY_COLUMNS}
                  FROM api_keys
                 WHERE user_id = %(user_id)s
                 ORDER BY created_at DESC, id
                """,
                {"user_id": user_id},
            )

    def delete_api_key(self, user_id, key_id):
        """Destroys the key and its ciphertext; False when the user has no such key."""
        with self.transaction(acting_user_id=user_id) as tx:
            return tx.run(
                "DELETE FROM api_keys WHERE id = %(id)s AND user_id = %(user_id)s",
                {"id": key_id, "user_id": user_id},
            ) == 1

    def provider_key(self, user_id, provider, tx=None):
        """The plaintext of the user's newest key for `provider` (None when there
        is none), recording that it was used. Raises VaultError when it cannot be
        decrypted."""
        with self._maybe(tx) as cursor:
            row = cursor.one(
                """
                UPDATE api_keys
                   SET last_used_at = now()
                 WHERE id = (SELECT id
                               FROM api_keys
                              WHERE user_id = %(user_id)s
                                AND provider = %(provider)s
                              ORDER BY created_at DESC, id
                              LIMIT 1)
             RETURNING encryption_kid, nonce, encrypted_key
                """,
                {"user_id": user_id, "provider": provider},
            )
        return None if row is None else self._unseal(row, user_id, provider)

    def reencrypt_api_keys(self):
        """Moves every stored key under the newest encryption key:
        (moved, already_current, ids that could not be decrypted). Each key is
        rewritten only if no one changed it meanwhile."""
        vault = self._vault
        with self.transaction() as tx:
            stale = tx.all(
                """
                SELECT id, user_id, provider, encryption_kid, nonce, encrypted_key
                  FROM api_keys
                 WHERE encryption_kid <> %(newest)s
                """,
                {"newest": vault.newest_kid},
            )
            current = tx.one("SELECT count(*) AS n FROM api_keys WHERE encryption_kid = %(newest)s",
                             {"newest": vault.newest_kid})["n"]
        moved, failed = 0, []
        for row in stale:
            try:
                plaintext = self._unseal(row, row["user_id"], row["provider"])
            except VaultError:
                failed.append(row["id"])
                continue
            kid, nonce, ciphertext = vault.encrypt(plaintext, row["user_id"], row["provider"])
            with self.transaction() as tx:
                moved += tx.run(
                    """
                    UPDATE api_keys
                       SET encryption_kid = %(kid)s,
                           nonce = %(nonce)s,
                           encrypted_key = %(ciphertext)s
                     WHERE id = %(id)s
                       AND encryption_kid = %(old_kid)s
                       AND nonce = %(old_nonce)s
                    """,
                    {"kid": kid, "nonce": nonce, "ciphertext": ciphertext, "id": row["id"],
                     "old_kid": row["encryption_kid"], "old_nonce": row["nonce"]},
                )
        return moved, current, failed

    @property
    def _vault(self):
        return current_app.extensions["vault"]

    def _unseal(self, row, user_id, provider):
        """The plaintext of a stored key row (its kid, nonce and ciphertext columns)."""
        return self._vault.decrypt(row["encryption_kid"], row["nonce"], row["encrypted_key"], user_id, provider)

    # ------------------------------------------------------------- chat

    def create_session(self, user_id, model_id, title):
        """The new session, or None when the model is not in the active catalog."""
        with self.transaction(acting_user_id=user_id) as tx:
            return tx.one(
                f"""
                INSERT INTO chat_sessions (user_id, model_id, title)
                SELECT %(user_id)s, id, %(title)s
                  FROM models
                 WHERE id = %(model_id)s
                   AND is_active
             RETURNING {SESSION_COLUMNS}
                """,
                {"user_id": user_id, "model_id": model_id, "title": title},
            )

    def list_sessions(self, user_id, limit, after=None):
        """Newest first; `after` is the (created_at, id) of the previous page's last."""
        created_at, session_id = after or (None, None)
        with self.transaction() as tx:
            return tx.all(
                f"""
                SELECT {SESSION_COLUMNS}
                  FROM chat_sessions
                 WHERE user_id = %(user_id)s
                   AND (%(created_at)s::timestamptz IS NULL OR (created_at, id) < (%(created_at)s, %(id)s))
                 ORDER BY created_at DESC, id DESC
                 LIMIT %(limit)s
                """,
                {"user_id": user_id, "created_at": created_at, "id": session_id, "limit": limit},
            )

    def session(self, user_id, session_id):
        with self.transaction() as tx:
            return tx.one(
                f"""
                SELECT {SESSION_COLUMNS}
                  FROM chat_sessions
                 WHERE id = %(id)s
                   AND user_id = %(user_id)s
                """,
                {"id": session_id, "user_id": user_id},
            )

    def list_messages(self, session_id, limit, after_id=None):
        """Oldest first, from after message `after_id`."""
        with self.transaction() as tx:
            return tx.all(
                f"""
                SELECT {MESSAGE_COLUMNS}
                  FROM chat_history
                 WHERE session_id = %(session_id)s
                   AND (%(after_id)s::bigint IS NULL OR id > %(after_id)s)
                 ORDER BY id
                 LIMIT %(limit)s
                """,
                {"session_id": session_id, "after_id": after_id, "limit": limit},
            )

    def delete_session(self, user_id, session_id):
        """Deletes the session and its messages, never a transaction."""
        with self.transaction(acting_user_id=user_id) as tx:
            return tx.run(
                "DELETE FROM chat_sessions WHERE id = %(id)s AND user_id = %(user_id)s",
                {"id": session_id, "user_id": user_id},
            ) == 1

    def chat_call_context(self, user_id, session_id, max_tokens, default_max_tokens, fixed_tokens,
                          message_overhead, tx):
        """Everything a chat call needs, in one round trip: the user's token
        generation (None: no such active user), the session's model, prices and
        limits (session_id None: not the user's session), the call's max tokens
        (asked for, else the model's default), the user's newest key for the
        provider, decrypted, and the newest history that fits the context window
        beside `fixed_tokens` (the request's overhead and the new message)."""
        row = tx.one(
            """
            SELECT *
              FROM chat_call_context(%(user_id)s, %(session_id)s, %(max_tokens)s, %(default_max_tokens)s,
                                     %(fixed_tokens)s, %(message_overhead)s)
            """,
            {"user_id": user_id, "session_id": session_id, "max_tokens": max_tokens,
             "default_max_tokens": default_max_tokens, "fixed_tokens": fixed_tokens,
             "message_overhead": message_overhead},
        )
        if row is None:
            return {"token_generation": None}
        row["api_key"] = None if row["encryption_kid"] is None else self._unseal(row, user_id, row["provider"])
        for column in ("encryption_kid", "nonce", "encrypted_key"):
            del row[column]
        return row

    def settle_chat_call(self, user_id, session_id, hold, api_key_id, question, answer, tx):
        """Releases the unused part of `hold`, saves the exchange (unless the
        session is gone: saved = false) and counts the usage, in one round trip.
        question/answer: {"content", "tokens", "cost"}."""
        return tx.one(
            """
            SELECT *
              FROM settle_chat_call(%(user_id)s, %(session_id)s, %(model_id)s, %(api_key_id)s, %(hold_id)s,
                                    %(hold_amount)s, %(question)s, %(prompt_tokens)s, %(input_cost)s, %(answer)s,
                                    %(completion_tokens)s, %(output_cost)s, %(bucket)s::smallint)
            """,
            {"user_id": user_id, "session_id": session_id, "model_id": hold.model_id, "api_key_id": api_key_id,
             "hold_id": hold.id, "hold_amount": hold.amount, "question": question["content"],
             "prompt_tokens": question["tokens"], "input_cost": question["cost"], "answer": answer["content"],
             "completion_tokens": answer["tokens"], "output_cost": answer["cost"],
             "bucket": random.randrange(USAGE_BUCKETS)},
        )

    def stale_holds(self, call_timeout, grace_seconds):
        """Holds never settled (their call's process died) whose call's deadline is
        more than `grace_seconds` past, oldest first. A hold without a stored
        deadline (made before holds had one) ends `call_timeout` after it was made."""
        with self.transaction() as tx:
            return tx.all(
                """
                SELECT hold.id, hold.user_id, hold.amount
                  FROM transactions hold
                 WHERE hold.type = 'hold'
                   AND coalesce(hold.call_deadline, hold.created_at + make_interval(secs => %(call_timeout)s))
                       < now() - make_interval(secs => %(grace)s)
                   AND NOT EXISTS (SELECT 1 FROM transactions rel
                                    WHERE rel.related_transaction_id = hold.id AND rel.type = 'release')
                 ORDER BY hold.id
                """,
                {"call_timeout": call_timeout, "grace": grace_seconds},
            )

    # ------------------------------------------------------------- marketplace

    def catalog(self, model_id=None):
        """Active models with their rating summary and usage (one model when
        `model_id` is given), in catalog order."""
        with self.transaction() as tx:
            return tx.all(
                """
                SELECT m.id, m.provider, m.name, m.description, m.context_window, m.max_output_tokens,
                       m.input_price_per_mtok, m.output_price_per_mtok, m.prices_as_of, m.capabilities,
                       coalesce(r.rating_count, 0) AS rating_count, r.rating_average, r.distribution,
                       p.request_count, p.prompt_tokens, p.completion_tokens, p.popularity_rank
                  FROM models m
                  JOIN model_popularity p ON p.model_id = m.id
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

    def model_usage_by_day(self, model_id, days):
        """Requests, tokens and cost per UTC day over the last `days` days."""
        with self.transaction() as tx:
            return tx.all(
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

    def rate_model(self, user_id, model_id, rating, review):
        """Creates or replaces the user's rating: (row, created), or None for a
        model not in the active catalog."""
        with self.transaction(acting_user_id=user_id) as tx:
            return tx.one(
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

    def provider_key_holdings(self, user_id):
        with self.transaction() as tx:
            return {row["provider"] for row in tx.all(
                "SELECT DISTINCT provider FROM api_keys WHERE user_id = %(user_id)s", {"user_id": user_id})}

    def preferences(self, user_id):
        """The user's stored preferences, or None when never set."""
        with self.transaction() as tx:
            return tx.one(
                f"""
                SELECT {PREFERENCE_COLUMNS}
                  FROM user_preferences
                 WHERE user_id = %(user_id)s
                """,
                {"user_id": user_id},
            )

    def replace_preferences(self, user_id, preferences):
        """Stores the whole document; None when default_model_id is not an active model."""
        with self.transaction(acting_user_id=user_id) as tx:
            if preferences["default_model_id"] is not None and tx.one(
                    "SELECT 1 FROM models WHERE id = %(id)s AND is_active",
                    {"id": preferences["default_model_id"]}) is None:
                return None
            return tx.one(
                f"""
                INSERT INTO user_preferences (user_id, default_model_id, preferred_providers, daily_spend_limit,
                                              max_cost_per_message, theme)
                VALUES (%(user_id)s, %(default_model_id)s, %(preferred_providers)s, %(daily_spend_limit)s,
                        %(max_cost_per_message)s, %(theme)s)
                ON CONFLICT (user_id) DO UPDATE
                   SET default_model_id = EXCLUDED.default_model_id,
                       preferred_providers = EXCLUDED.preferred_providers,
                       daily_spend_limit = EXCLUDED.daily_spend_limit,
                       max_cost_per_message = EXCLUDED.max_cost_per_message,
                       theme = EXCLUDED.theme
                RETURNING {PREFERENCE_COLUMNS}
                """,
                {"user_id": user_id, **preferences},
            )

    def activity(self, user_id, limit, before=None):
        """The user's transactions and messages, newest first; `before` is the
        (created_at, kind, item_id) of the previous page's last item."""
        created_at, kind, item_id = before or (None, None, None)
        with self.transaction() as tx:
            return tx.all(
                """
                SELECT kind, item_id, action, amount, prompt_tokens, completion_tokens, session_id, model_id,
                       created_at
                  FROM recent_activity
                 WHERE user_id = %(user_id)s
                   AND (%(created_at)s::timestamptz IS NULL
                        OR (created_at, kind, item_id) < (%(created_at)s, %(kind)s, %(item_id)s))
                 ORDER BY created_at DESC, kind DESC, item_id DESC
                 LIMIT %(limit)s
                """,
                {"user_id": user_id, "created_at": created_at, "kind": kind, "item_id": item_id, "limit": limit},
            )

    # ------------------------------------------------------------- idempotency

    def claim_idempotency_key(self, user_id, key, request_hash, stale_after_seconds):
        """("claimed", None) when this request may run; else the existing record
        ("in_progress" | "done" | "mismatch", row). A record older than 24 h, or
        an in-progress one for the same request past its stale_at, is taken over.
        A claim's stale_at is `stale_after_seconds` after it, stored so that a
        retry served with other settings still waits as long."""
        for _ in range(3):
            with self.transaction() as tx:
                claimed = tx.one(
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
                record = tx.one(
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

    def complete_idempotency_key(self, user_id, key, status, body_text, tx):
        """Stores the answer; runs inside the caller's transaction so the answer
        and the effect it describes commit together."""
        tx.run(
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

    def release_idempotency_key(self, user_id, key):
        """Forgets an unfinished record, so a retry runs anew."""
        with self.transaction() as tx:
            tx.run(
                """
                DELETE FROM idempotency_keys
                 WHERE user_id = %(user_id)s
                   AND key = %(key)s
                   AND state = 'in_progress'
                """,
                {"user_id": user_id, "key": key},
            )

    def prune_idempotency_keys(self):
        with self.transaction() as tx:
            return tx.run("DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'")

    @contextmanager
    def _maybe(self, tx):
        """Use the caller's transaction when given one, else a fresh one."""
        if tx is not None:
            yield tx
        else:
            with self.transaction() as fresh:
                yield fresh


def _rollback(conn):
    """Rolls back; False when the connection is unusable and must be dropped."""
    try:
        with conn.cursor() as cursor:
            cursor.execute("ROLLBACK")
        return True
    except psycopg2.Error:
        return False
