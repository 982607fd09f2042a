"""The process's connection pool and the transaction helper over it.

A connection is borrowed for one unit of work (`transaction`) and given back
when it ends, committed or rolled back; never held across a call to another
service. The pool is made lazily, once per process (a forked worker makes its
own), so the service starts and answers /readyz while the database is down.

Connections run in autocommit mode and the helper (`Cursor`) opens the
transaction itself: BEGIN, and the acting user for the audit triggers, travel
in the same round trip as the transaction's first statement, not in their own.
So a pooled connection found dead at that first statement can be swapped for a
fresh one with nothing lost (SQLAlchemy's pool_pre_ping, without the ping on
every borrow).

A unit of one statement that is safe to run twice (a read, an idempotent
stamp) needs no transaction block at all: `transaction(..., alone=True)` sends
it bare, so PostgreSQL's own implicit transaction commits it in the same round
trip, where BEGIN … COMMIT would take two."""
import logging
import os
import threading
import time
from contextlib import contextmanager

import psycopg2
import psycopg2.extras
from psycopg2.extensions import TRANSACTION_STATUS_IDLE

from database.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5


class Cursor:
    """The transaction helper's small vocabulary (run / one / all) over a cursor
    of one connection; BEGIN goes with the first statement (see above)."""

    BEGIN = "BEGIN;\n"
    SET_ACTOR = "SELECT set_config('app.user_id', %(_acting_user_id)s, true);\n"
    # Statements go with bind parameters, so a literal % is written %%.

    def __init__(self, connection, acting_user_id=None, replace_connection=None, alone=False):
        """`replace_connection(dead)` gives a fresh connection for one that was
        idle in the pool and is found dead at the first statement; None when
        `connection` is itself fresh (then a failure is the server's answer).
        `alone`: the unit is one statement, committed as it runs."""
        self.connection = connection
        self._cursor = connection.cursor()
        self._replace_connection = replace_connection
        self.alone = alone
        self._at_commit = []
        # A unit alone has no BEGIN: the actor goes with its statement, in the implicit transaction they share.
        self._opening = ("" if alone else self.BEGIN) + (self.SET_ACTOR if acting_user_id is not None else "")
        self._opening_params = {} if acting_user_id is None else {"_acting_user_id": str(acting_user_id)}
        self.began = False

    def _execute(self, sql, params):
        if self.began:
            if self.alone:
                raise RuntimeError("a unit opened alone=True runs one statement; open a transaction for more")
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
        if self._at_commit and not self.began:
            for sql, params in self._at_commit:
                self._execute(sql, params)
        elif self._at_commit:
            # Each statement bound on its own, so their parameters cannot clash.
            statements = [self._cursor.mogrify(sql, params) for sql, params in self._at_commit]
            self._cursor.execute(b";\n".join([*statements, b"COMMIT"]))
            return
        if self.began and not self.alone:
            self._cursor.execute("COMMIT")

    def run_at_commit(self, sql, params=None):
        """Sends a write whose result nobody reads with the COMMIT, in its round
        trip: a transaction holding a lock (the balance row's) lets go sooner.
        If it fails, the server skips the COMMIT and the transaction rolls back."""
        if self.alone:
            raise RuntimeError("a unit opened alone=True has no commit to send a statement with")
        self._at_commit.append((sql, params))

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


class PoolHolder:
    """The state an app keeps (`app.extensions["database"]`): the settings, and
    this process's pool, made on first use and again after a fork.
    `observer` (app/metrics.py's PoolObserver) is told of each borrow's wait and return."""

    observer = None

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


@contextmanager
def transaction(holder, acting_user_id=None, alone=False):
    """One unit of work on a connection of `holder`'s pool: commits when the
    block ends, rolls back on error. `acting_user_id` is what the audit triggers
    record as the actor. `alone`: one statement, safe to run twice (see above)."""
    pool = holder.get()
    asked = time.perf_counter()
    conn, was_idle = pool.borrow()
    if holder.observer is not None:
        holder.observer.borrowed(time.perf_counter() - asked)
    cursor = Cursor(conn, acting_user_id, replace_connection=pool.replace if was_idle else None, alone=alone)
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
        if holder.observer is not None:
            holder.observer.returned()


def _rollback(conn):
    """Rolls back; False when the connection is unusable and must be dropped."""
    try:
        with conn.cursor() as cursor:
            cursor.execute("ROLLBACK")
        return True
    except psycopg2.Error:
        return False
