"""The schema (SPEC §4): migrate.py re-runs harmlessly, constraints and grants
hold, the money procedures behave, and DatabaseService's pool fails cleanly."""
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from decimal import Decimal

import psycopg2
import psycopg2.errors
import pytest
from psycopg2.extensions import parse_dsn

import migrate
from app import create_app
from app.errors import DatabaseUnavailable
from app.extensions import db

SCHEMA_OBJECTS = """
    SELECT 'relation', c.relkind::text, c.relname
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'public'
    UNION ALL
    SELECT 'function', p.oid::regprocedure::text, p.proname
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = 'public'
    UNION ALL
    SELECT 'trigger', t.tgrelid::regclass::text, t.tgname
      FROM pg_trigger t WHERE NOT t.tgisinternal
     ORDER BY 1, 2, 3
"""
BALANCE = "SELECT total_balance, spent_balance FROM user_balance WHERE user_id = %s"


def make_user(database, name="ada"):
    return database.query(
        "INSERT INTO users (email, username, password_hash) VALUES (%s, %s, 'x') RETURNING id::text",
        (f"{name}@example.com", name))[0][0]


def row_counts(database):
    return {table: database.query(f"SELECT count(*) FROM {table}")[0][0]  # names from migrate.EXPECTED
            for table in migrate.EXPECTED["table"]}


@pytest.fixture
def as_app_user(database):
    """A connection as the service's own login, one statement per transaction."""
    with closing(psycopg2.connect(database.app_url)) as conn:
        conn.autocommit = True
        yield conn


def call(conn, sql, params):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()


def funds(conn, user_id, amount, kind="deposit", hold_id=None):
    return call(conn, "SELECT * FROM add_user_funds(%s::uuid, %s, %s, %s)", (user_id, amount, kind, hold_id))


def deduct(conn, user_id, amount):
    return call(conn, "SELECT * FROM deduct_user_balance(%s::uuid, %s)", (user_id, amount))


def released_hold(conn, user_id, released):
    """Deposits 10, holds 4 and releases `released` of it; returns the hold's id."""
    funds(conn, user_id, Decimal("10"))
    hold_id = deduct(conn, user_id, Decimal("4"))[1]
    funds(conn, user_id, released, "release", hold_id)
    return hold_id


# ------------------------------------------------------------------ migrate

def test_migrate_again_is_harmless(database):
    user_id = make_user(database)
    database.query("SELECT add_user_funds(%s::uuid, 5)", (user_id,))
    objects, counts = database.query(SCHEMA_OBJECTS), row_counts(database)
    lines = []
    # The app login's current password: roles are cluster-wide, so keep it.
    report = migrate.migrate(database.owner_url, parse_dsn(database.app_url)["password"], out=lines.append)

    newest = len(migrate.releases())
    assert f"schema version {newest} (up to date)" in lines
    assert not any(line.startswith("applied ") for line in lines)
    assert "catalog: 0 models added, 0 updated" in lines
    assert not any(line.startswith("created database") for line in lines)
    assert report == {kind: (names, []) for kind, names in migrate.EXPECTED.items()}
    assert database.query(SCHEMA_OBJECTS) == objects
    assert row_counts(database) == counts
    assert database.query("SELECT version FROM schema_version ORDER BY version") == [
        (version,) for version in range(1, newest + 1)]


def test_verify_finds_every_object_and_the_catalog_has_each_provider(database):
    with closing(database.owner()) as conn, conn.cursor() as cur:
        report = migrate.verify(cur)
    assert all(missing == [] for _, missing in report.values())
    assert {kind: found for kind, (found, _) in report.items()} == migrate.EXPECTED
    providers = {row[0] for row in database.query("SELECT provider FROM models WHERE is_active")}
    assert {"local", "openai", "anthropic"} <= providers


# ------------------------------------------------------------------ constraints

def test_a_new_user_gets_an_empty_balance(database):
    user_id = make_user(database)
    assert database.query(BALANCE, (user_id,)) == [(Decimal(0), Decimal(0))]


@pytest.mark.parametrize("statement", [
    "UPDATE user_balance SET total_balance = -1 WHERE user_id = %(user)s",
    "UPDATE user_balance SET spent_balance = -1 WHERE user_id = %(user)s",
    "UPDATE user_balance SET total_balance = 5, spent_balance = 6 WHERE user_id = %(user)s",
    "UPDATE models SET input_price_per_mtok = -1 WHERE id = 'local/echo'",
    "UPDATE models SET output_price_per_mtok = -0.0000001 WHERE id = 'local/echo'",
])
def test_check_constraints_refuse_impossible_money(database, statement):
    user_id = make_user(database)
    with pytest.raises(psycopg2.errors.CheckViolation):
        database.query(statement, {"user": user_id})


# ------------------------------------------------------------------ grants

@pytest.mark.parametrize("statement", [
    "CREATE TABLE intruder (id int)",
    "CREATE SCHEMA intruder",
    "DROP TABLE models",
    "ALTER TABLE users ADD COLUMN is_admin boolean",
    "UPDATE transactions SET amount = 0",
    "DELETE FROM transactions",
    "INSERT INTO transactions (user_id, type, amount, available_after) VALUES (gen_random_uuid(), 'deposit', 1, 1)",
    "INSERT INTO audit_log (table_name, operation, row_id) VALUES ('users', 'INSERT', 'x')",
    "UPDATE audit_log SET row_id = 'x'",
    "DELETE FROM audit_log",
    "SELECT * FROM audit_log",
    "UPDATE user_balance SET total_balance = 1000000",
    "INSERT INTO user_balance (user_id) VALUES (gen_random_uuid())",
    "DELETE FROM user_balance",
    # The usage rollups change only as calls settle, through the ledger's triggers.
    "UPDATE usage_daily SET cost = 0",
    "DELETE FROM usage_daily",
    "INSERT INTO usage_daily (user_id, day, requests, cost) VALUES (gen_random_uuid(), current_date, 1, 1)",
    "SELECT usage_recount(ARRAY[gen_random_uuid()], ARRAY[current_date])",
])
def test_app_user_cannot(as_app_user, statement):
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        call(as_app_user, statement, None)


@pytest.mark.parametrize("relation", ["models", "user_with_balance", "model_popularity", "recent_activity"])
def test_app_user_reads_the_catalog_and_the_views(database, as_app_user, relation):
    database.query("SELECT add_user_funds(%s::uuid, 5)", (make_user(database),))
    statement = f"SELECT count(*) FROM {relation}"  # names from the list above
    assert call(as_app_user, statement, None) == database.query(statement)[0] != (0,)


def test_app_user_reads_the_usage_rollups_a_release_wrote(database, as_app_user):
    user_id = make_user(database)
    database.query("SELECT add_user_funds(%s::uuid, 5)", (user_id,))
    (hold_id,), = database.query("SELECT transaction_id FROM deduct_user_balance(%s::uuid, 1)", (user_id,))
    database.query("SELECT add_user_funds(%s::uuid, 0.25, 'release', %s)", (user_id, hold_id))
    assert call(as_app_user, "SELECT requests, cost, output_tokens FROM usage_daily", None) == (1, Decimal("0.75"),
                                                                                                None)
    assert call(as_app_user, "SELECT count(*) FROM usage_rollup_differences", None) == (0,)


@pytest.mark.parametrize("procedure", ["deduct_user_balance", "add_user_funds"])
def test_app_user_calls_the_money_procedures(as_app_user, procedure):
    assert call(as_app_user, f"SELECT ok, reason FROM {procedure}(gen_random_uuid(), 1)", None) == (
        False, "no_such_user")


# ------------------------------------------------------------------ procedures

def test_deposit_hold_and_release(database, as_app_user):
    user_id = make_user(database)

    ok, deposit_id, available, reason = funds(as_app_user, user_id, Decimal("10.00"))
    assert (ok, available, reason) == (True, Decimal("10"), None)
    ok, hold_id, available, reason = deduct(as_app_user, user_id, Decimal("4"))
    assert (ok, available, reason) == (True, Decimal("6"), None)
    ok, release_id, available, reason = funds(as_app_user, user_id, Decimal("1.5"), "release", hold_id)
    assert (ok, available, reason) == (True, Decimal("7.5"), None)
    assert deposit_id < hold_id < release_id

    assert database.query(BALANCE, (user_id,)) == [(Decimal("10"), Decimal("2.5"))]
    assert database.query(
        "SELECT id, type, amount, available_after, related_transaction_id FROM transactions "
        "WHERE user_id = %s ORDER BY id", (user_id,)) == [
        (deposit_id, "deposit", Decimal("10"), Decimal("10"), None),
        (hold_id, "hold", Decimal("4"), Decimal("6"), None),
        (release_id, "release", Decimal("1.5"), Decimal("7.5"), hold_id),
    ]


def test_refused_movements_change_nothing(database, as_app_user):
    user_id = make_user(database)
    hold_id = released_hold(as_app_user, user_id, Decimal("1"))
    before = database.query(BALANCE, (user_id,)), database.query("SELECT count(*) FROM transactions")

    assert deduct(as_app_user, user_id, Decimal("7.0000000001")) == (False, None, Decimal("7"), "insufficient_funds")
    assert funds(as_app_user, user_id, Decimal("1"), "release", hold_id) == (
        False, None, Decimal("7"), "already_released")
    assert (database.query(BALANCE, (user_id,)), database.query("SELECT count(*) FROM transactions")) == before


def test_unique_index_refuses_a_second_release(database, as_app_user):
    user_id = make_user(database)
    hold_id = released_hold(as_app_user, user_id, Decimal("1"))
    with pytest.raises(psycopg2.errors.UniqueViolation):
        database.query(
            "INSERT INTO transactions (user_id, type, amount, available_after, related_transaction_id) "
            "VALUES (%s, 'release', 1, 8, %s)", (user_id, hold_id))


def test_balance_changes_are_audited_with_old_and_new_rows(database, as_app_user):
    user_id = make_user(database)
    released_hold(as_app_user, user_id, Decimal("1.5"))
    rows = database.query(
        """
        SELECT operation,
               (old_row ->> 'total_balance')::numeric, (old_row ->> 'spent_balance')::numeric,
               (new_row ->> 'total_balance')::numeric, (new_row ->> 'spent_balance')::numeric
          FROM audit_log
         WHERE table_name = 'user_balance' AND row_id = %s
         ORDER BY id
        """, (user_id,))
    assert rows == [
        ("INSERT", None, None, 0, 0),
        ("UPDATE", 0, 0, 10, 0),
        ("UPDATE", 10, 0, 10, 4),
        ("UPDATE", 10, 4, 10, Decimal("2.5")),
    ]


# ------------------------------------------------------------------ DatabaseService

@pytest.fixture
def small_pool_app(settings):
    app = create_app({**settings, "DB_POOL_SIZE": 1, "DB_POOL_TIMEOUT": 0.2})
    yield app
    with app.app_context():
        db.close()


def in_thread(app, work):
    """Runs work() in another thread, inside its own app context."""
    def run():
        with app.app_context():
            return work()
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result(timeout=10)


def backend_pid():
    with db.transaction() as tx:
        return tx.one("SELECT pg_backend_pid() AS pid")["pid"]


def test_exhausted_pool_answers_database_unavailable_after_the_timeout(small_pool_app):
    with small_pool_app.app_context():
        with db.transaction() as tx:
            tx.one("SELECT 1")
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable) as refused:
                in_thread(small_pool_app, backend_pid)
            waited = time.monotonic() - started
        assert refused.value.message == "All database connections are busy; try again shortly."
        assert 0.15 <= waited < 2
        assert in_thread(small_pool_app, backend_pid) > 0


def test_pool_keeps_its_connections_between_transactions(small_pool_app):
    with small_pool_app.app_context():
        assert backend_pid() == backend_pid()


def test_failed_transaction_rolls_back_and_the_connection_is_reused(small_pool_app, database):
    with small_pool_app.app_context():
        pid = backend_pid()
        with pytest.raises(psycopg2.errors.DivisionByZero):
            with db.transaction() as tx:
                tx.run("INSERT INTO users (email, username, password_hash) VALUES ('rb@example.com', 'rollback', 'x')")
                tx.run("SELECT 1 / 0")
        assert database.query("SELECT count(*) FROM users") == [(0,)]
        assert database.query("SELECT count(*) FROM user_balance") == [(0,)]
        assert database.query("SELECT count(*) FROM audit_log") == [(0,)]
        assert backend_pid() == pid


def test_a_lone_statement_commits_without_a_transaction_block(small_pool_app, database):
    user_id = make_user(database)
    with small_pool_app.app_context():
        with db.transaction() as tx:
            key_id = tx.one("INSERT INTO access_keys (user_id, name, key_hash, last4) "
                            "VALUES (%(user_id)s, 'k', %(hash)s, 'abcd') RETURNING id",
                            {"user_id": user_id, "hash": bytes(32)})["id"]
        db.touch_access_key(key_id)
        assert database.query("SELECT last_used_at IS NOT NULL FROM access_keys") == [(True,)]
        pid = backend_pid()
        with pytest.raises(RuntimeError, match="one statement"):
            with db._alone(None) as lone:
                lone.one("SELECT 1")
                lone.run("DELETE FROM access_keys")
        assert database.query("SELECT count(*) FROM access_keys") == [(1,)]
        assert backend_pid() == pid


def test_a_write_sent_with_the_commit_commits_or_fails_with_its_transaction(small_pool_app, database):
    user_id = make_user(database)
    with small_pool_app.app_context():
        with db.transaction() as tx:
            tx.run("UPDATE users SET username = 'first' WHERE id = %(id)s", {"id": user_id})
            tx.run_at_commit("UPDATE users SET email = %(email)s WHERE id = %(id)s",
                             {"id": user_id, "email": "100%-sure@example.com"})
        assert database.query("SELECT username, email FROM users") == [("first", "100%-sure@example.com")]
        pid = backend_pid()
        with pytest.raises(psycopg2.errors.CheckViolation):
            with db.transaction() as tx:
                tx.run("UPDATE users SET username = 'second' WHERE id = %(id)s", {"id": user_id})
                tx.run_at_commit("UPDATE users SET username = 'x' WHERE id = %(id)s", {"id": user_id})
        assert database.query("SELECT username FROM users") == [("first",)]
        assert backend_pid() == pid
