"""DatabaseService: the process's one connection pool and every SQL statement,
one mixin per area (accounts, keys, access keys, money, chat, catalog,
idempotency, the reconcile schedule, operators).

Every query method takes `tx=None`: given the caller's transaction it joins it,
so that several steps commit together; without one it runs its own. No method
commits behind its caller's back."""
from contextlib import contextmanager

import psycopg2.extras

from database import pool
from database.access_keys import AccessKeysSQL
from database.admin import AdminSQL
from database.accounts import AccountsSQL
from database.alerts import AlertsSQL
from database.catalog import CatalogSQL
from database.chat import ChatSQL
from database.idempotency import IdempotencySQL
from database.keys import KeysSQL
from database.money import MoneySQL
from database.reconcile import ReconcileScheduleSQL


class DatabaseService(AccountsSQL, KeysSQL, AccessKeysSQL, MoneySQL, ChatSQL, CatalogSQL, IdempotencySQL,
                      ReconcileScheduleSQL, AdminSQL, AlertsSQL):
    """Made once (`db = DatabaseService(current_state)`), bound to an app with
    `init_app`; its state lives in `app.extensions["database"]`.

    `current_state()` returns that state for the app in use: the app layer
    resolves it, so this package imports no web framework, and one service
    serves every app a process makes (the tests make several)."""

    def __init__(self, current_state, app=None):
        self._current_state = current_state
        if app is not None:
            self.init_app(app)

    def init_app(self, app):
        # uuid.UUID in and out of queries; registration is process-wide and idempotent.
        psycopg2.extras.register_uuid()
        app.extensions["database"] = pool.PoolHolder(
            app.config["DATABASE_URL"], app.config["DB_POOL_SIZE"], app.config["DB_POOL_TIMEOUT"])

    def close(self):
        self._current_state().close()

    def transaction(self, acting_user_id=None):
        """One unit of work: commits when the block ends, rolls back on error.
        `acting_user_id` is what the audit triggers record as the actor."""
        return pool.transaction(self._current_state(), acting_user_id)

    def ping(self, tx=None):
        with self._alone(tx) as cursor:
            cursor.one("SELECT 1 AS ok")

    @contextmanager
    def _maybe(self, tx, acting_user_id=None):
        """Use the caller's transaction when given one, else a fresh one."""
        if tx is not None:
            yield tx
        else:
            with self.transaction(acting_user_id) as fresh:
                yield fresh

    @contextmanager
    def _alone(self, tx, acting_user_id=None):
        """As `_maybe`, for one statement that is safe to run twice: without
        the caller's transaction it runs bare, committed in its own round trip."""
        if tx is not None:
            yield tx
        else:
            with pool.transaction(self._current_state(), acting_user_id, alone=True) as fresh:
                yield fresh
