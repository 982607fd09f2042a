"""What PgBouncer's transaction pooling asks of the code: nothing a connection
keeps outlives its transaction (the SQL the service sends is read for session
state, and the acting user is shown to end with its transaction on a server
connection two clients share), and migrate.py, which holds a session-level
lock, connects to PostgreSQL itself and serialises runs beside each other."""
import ast
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from contextlib import closing

import psycopg2
import pytest
from psycopg2 import sql
from psycopg2.extensions import make_dsn

import migrate
from database.pool import PoolHolder, transaction
from tests.conftest import APP_PASSWORD, _admin, _drop
from tests.operations.test_pgbouncer import bouncer_dir, bouncer_for  # noqa: F401 (a fixture)
from tests.support import ROOT

# Statements whose effect outlives the transaction that sent them: under
# transaction pooling it would reach whichever client the server connection
# serves next, or be missing from the one that sent it.
SESSION_STATEMENTS = re.compile(
    r"^(SET(?!\s+LOCAL\b)\s+(SESSION\s+)?\w+\s*(=|TO\b)|RESET\b|DISCARD\b|PREPARE\b|LISTEN\b"
    r"|CREATE\s+(TEMP|TEMPORARY)\b)", re.I)
SESSION_CALLS = re.compile(r"pg_(try_)?advisory_lock(_shared)?\s*\(|set_config\s*\((?:[^()]|\([^()]*\))*,\s*false\s*\)"
                           r"|\bWITH\s+HOLD\b|\boptions\s*=", re.I)
# The service's code and the procedures it calls; migrate.py is the one place a session lock belongs.
SERVICE_SOURCES = [*sorted((ROOT / "app").rglob("*.py")), *sorted((ROOT / "database").glob("*.py")),
                   *sorted((ROOT / "database" / "migrations").glob("*.sql"))]


def statements_of(path):
    """The SQL in `path`: a migration's statements, or each string in a module, split at semicolons."""
    if path.suffix == ".sql":
        texts = [path.read_text()]
    else:
        texts = [node.value for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    for text in texts:
        for statement in re.split(r";|\$\$|\bBEGIN\b|\bTHEN\b|\bELSE\b|\bLOOP\b", text):
            statement = re.sub(r"--[^\n]*", "", statement).strip()
            if statement:
                yield statement


def test_no_statement_the_service_sends_keeps_session_state():
    found = [f"{path.relative_to(ROOT)}: {statement.splitlines()[0]}"
             for path in SERVICE_SOURCES for statement in statements_of(path)
             if SESSION_STATEMENTS.match(statement) or SESSION_CALLS.search(statement)]
    assert found == []


def test_the_reading_finds_each_kind_of_session_state(tmp_path):
    """The check above, shown to catch what it looks for."""
    module = tmp_path / "sample.py"
    module.write_text('A = "SET statement_timeout = 5"\nB = "SELECT set_config(\'app.user_id\', %(actor)s, false)"\n'
                      'C = "SELECT pg_advisory_lock(1)"\nD = "LISTEN changes"\nE = "UPDATE t\\n   SET a = 1"\n'
                      'F = "SET LOCAL lock_timeout = 1"\n')
    flagged = [statement for statement in statements_of(module)
               if SESSION_STATEMENTS.match(statement) or SESSION_CALLS.search(statement)]
    assert flagged == ["SET statement_timeout = 5", "SELECT set_config('app.user_id', %(actor)s, false)",
                       "SELECT pg_advisory_lock(1)", "LISTEN changes"]


@pytest.mark.server  # pgbouncer, started through a class the marking rule does not follow
def test_the_acting_user_ends_with_its_transaction_on_a_shared_server_connection(bouncer_dir, database):  # noqa: F811
    """Two pools (two workers, say) through a PgBouncer with one server
    connection: the second's transaction runs on the connection the first's
    just used, and does not see the first's acting user."""
    actor = uuid.uuid4()
    with bouncer_for(bouncer_dir, database, pool_size=1) as bouncer:
        url = bouncer.url_for(database.app_url)
        first, second = PoolHolder(url, 1, 5), PoolHolder(url, 1, 5)
        try:
            with transaction(first, acting_user_id=actor) as tx:
                during = tx.one("SELECT current_setting('app.user_id', true) AS actor, pg_backend_pid() AS pid")
            with transaction(second) as tx:
                after = tx.one("SELECT current_setting('app.user_id', true) AS actor, pg_backend_pid() AS pid")
        finally:
            first.close()
            second.close()
    assert during["actor"] == str(actor)
    assert after["pid"] == during["pid"], "one server connection served both"
    assert after["actor"] in (None, "")


# ------------------------------------------------------------------ migrate.py

@pytest.fixture
def empty_database(pg_server):
    """The owner's URL of a database that does not exist yet, dropped afterwards."""
    name = f"qmarket_migrate_{uuid.uuid4().hex[:12]}"
    yield make_dsn(pg_server, dbname=name)
    _drop(pg_server, name)


def run_migrate(owner_url):
    env = {**os.environ, "ENV_FILE": os.devnull, "MIGRATE_DATABASE_URL": owner_url,
           # Roles belong to the whole server: app_user keeps the tests' password.
           "DATABASE_URL": make_dsn(owner_url, user=migrate.APP_ROLE, password=APP_PASSWORD)}
    return subprocess.Popen([sys.executable, "migrate.py"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def lock_waiters(conn):
    with conn.cursor() as cur:
        cur.execute("""SELECT count(*) FROM pg_locks
                        WHERE locktype = 'advisory' AND NOT granted AND objid = %s
                          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
                    (migrate.MIGRATION_LOCK_ID,))
        return cur.fetchone()[0]


def test_two_migrate_runs_at_once_take_turns(pg_server, empty_database):
    """Both runs are made to wait on the lock together (held here first), then
    let go at once: one applies every release, the other finds them applied."""
    assert migrate.ensure_database(empty_database)
    with closing(psycopg2.connect(empty_database)) as holder:
        holder.autocommit = True
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (migrate.MIGRATION_LOCK_ID,))
        runs = [run_migrate(empty_database) for _ in range(2)]
        try:
            deadline = time.monotonic() + 60
            while lock_waiters(holder) < 2:
                assert time.monotonic() < deadline and all(run.poll() is None for run in runs), \
                    [run.communicate()[0] for run in runs if run.poll() is not None]
                time.sleep(0.05)
        finally:
            with holder.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (migrate.MIGRATION_LOCK_ID,))
        outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    newest = len(migrate.releases())
    assert sorted(f"schema version {newest} (up to date)" in output for output in outputs) == [False, True], outputs
    assert sum(output.count("applied 0001_initial_schema.sql") for output in outputs) == 1, outputs
    with closing(psycopg2.connect(empty_database)) as conn, conn.cursor() as cur:
        cur.execute("SELECT version FROM schema_version ORDER BY version")
        assert cur.fetchall() == [(version,) for version in range(1, newest + 1)]


def test_runs_that_both_find_the_database_missing_create_it_once(pg_server, empty_database):
    start = threading.Barrier(4)
    created, failures = [], []

    def ensure():
        start.wait()
        try:
            created.append(migrate.ensure_database(empty_database))
        except psycopg2.Error as exc:
            failures.append(exc)

    threads = [threading.Thread(target=ensure) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and sorted(created) == [False, False, False, True]
    with closing(_admin(pg_server)) as admin, admin.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM pg_database WHERE datname = {}").format(
            sql.Literal(psycopg2.extensions.parse_dsn(empty_database)["dbname"])))
        assert cur.fetchone() == (1,)
