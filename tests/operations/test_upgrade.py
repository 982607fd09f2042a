"""A database made by release 1 (commit d276917, before holds had deadlines and
top-ups a cap in the database) starts on today's code with every row kept, and
ends with the same schema as a new one. So does one at schema version 7, whose
settled calls kept no charge by part: they read as charged, their parts null."""
import subprocess
import sys
import uuid
from contextlib import closing, contextmanager
from decimal import Decimal

import psycopg2
import pytest
from psycopg2 import sql
from psycopg2.extensions import make_dsn

import migrate
from app import close_app, create_app
from app.billing import reconcile_holds
from app.money import format_money
from app.security import hash_password
from devtools.schema_file import dump_schema
from tests.conftest import APP_PASSWORD, _admin
from tests.support import PASSWORD, ROOT, TEST_ITERATIONS, bearer, login, readme_ledger_query, settings_for

RELEASE_1 = "d276917"
# A commit at schema version 7 (migrations 0001–0007): settles kept no charge by part.
SCHEMA_7 = "9fdf0d5"
# A commit at schema version 10, before operators and the price book.
SCHEMA_10 = "74afb4a"
# A commit at schema version 14, before the daily usage rollups.
SCHEMA_14 = "4810652"
# What an old commit's migrate.py needs: app/ too, where later ones read MAX_TOPUP's default.
RELEASE_FILES = ["migrate.py", "schema.sql", "catalog.json", "database", "app"]
LEDGER_TABLES = ["users", "user_balance", "transactions", "api_keys", "chat_sessions", "chat_history",
                 "model_usage_stats", "model_ratings", "user_preferences", "refresh_tokens", "audit_log"]


def release_tree(tmp_path, commit):
    """The files `commit`'s migrate.py needs, straight from git history."""
    have = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True)
    if have.returncode != 0:
        pytest.skip(f"commit {commit} is not in this clone's history (shallow clone?)")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, *RELEASE_FILES],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive, check=True)
    return tmp_path


@contextmanager
def scratch_database(pg_server, prefix):
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with closing(_admin(pg_server)) as admin, admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_dsn(pg_server, dbname=name)
    finally:
        with closing(_admin(pg_server)) as admin, admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def database_made_by(pg_server, commit, tmp_path, prefix):
    """A database made by `commit`'s own migrate.py."""
    tree = release_tree(tmp_path, commit)
    with scratch_database(pg_server, prefix) as owner_url:
        subprocess.run([sys.executable, "-c",
                        "import sys, migrate; migrate.migrate(sys.argv[1], sys.argv[2], out=lambda line: None)",
                        owner_url, APP_PASSWORD], cwd=tree, check=True, capture_output=True)
        yield owner_url


@pytest.fixture
def release_1_database(pg_server, tmp_path):
    """A database made by release 1's own migrate.py."""
    with database_made_by(pg_server, RELEASE_1, tmp_path, "qmarket_release1") as owner_url:
        yield owner_url


@pytest.fixture
def schema_7_database(pg_server, tmp_path):
    """A database at schema version 7, made by that commit's own migrate.py."""
    with database_made_by(pg_server, SCHEMA_7, tmp_path, "qmarket_schema7") as owner_url:
        yield owner_url


@pytest.fixture
def schema_10_database(pg_server, tmp_path):
    """A database at schema version 10, made by that commit's own migrate.py."""
    with database_made_by(pg_server, SCHEMA_10, tmp_path, "qmarket_schema10") as owner_url:
        yield owner_url


@pytest.fixture
def schema_14_database(pg_server, tmp_path):
    """A database at schema version 14, made by that commit's own migrate.py."""
    with database_made_by(pg_server, SCHEMA_14, tmp_path, "qmarket_schema14") as owner_url:
        yield owner_url


def recorded_versions(owner_url):
    with closing(psycopg2.connect(owner_url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT version, description FROM schema_version ORDER BY version")
        return cur.fetchall()


def fill_as_release_1_did(owner_url):
    """A user with a deposit, a settled chat call, a hold its crashed process
    never settled, a stored key, a rating and preferences: every kind of row,
    written by release 1's own procedures. Returns the user's id."""
    with closing(psycopg2.connect(owner_url)) as conn, conn, conn.cursor() as cur:
        user_id, session_id = funded_user_with_a_session(cur)
        cur.execute("SELECT ok, transaction_id FROM deduct_user_balance(%s, 0.5, 'hold', '{}', NULL)", (user_id,))
        ok, hold_id = cur.fetchone()
        assert ok
        cur.execute("SELECT charged FROM settle_chat_call(%s, %s, 'local/echo', NULL, %s, 0.5, 'hi', 3, 0.1, "
                    "'You said: hi', 4, 0.2, 0::smallint)", (user_id, session_id, hold_id))
        assert cur.fetchone()[0]
        # The crash: a hold older than any call may run, never settled.
        cur.execute("SELECT ok, transaction_id FROM deduct_user_balance(%s, 1.25, 'hold', '{}', NULL)", (user_id,))
        ok, crashed_hold = cur.fetchone()
        assert ok
        cur.execute("ALTER TABLE transactions DISABLE TRIGGER USER")
        cur.execute("UPDATE transactions SET created_at = now() - interval '1 day' WHERE id = %s", (crashed_hold,))
        cur.execute("ALTER TABLE transactions ENABLE TRIGGER USER")
        cur.execute("INSERT INTO api_keys (user_id, provider, label, encrypted_key, nonce, encryption_kid, "
                    "key_fingerprint, last4) VALUES (%s, 'openai', 'mine', '\\x00'::bytea, %s, 'k0', "
                    "'fp', 'abcd')", (user_id, bytes(12)))
        cur.execute("INSERT INTO model_ratings (user_id, model_id, rating) VALUES (%s, 'local/echo', 4)", (user_id,))
        cur.execute("INSERT INTO user_preferences (user_id, theme) VALUES (%s, 'dark')", (user_id,))
    return user_id


def funded_user_with_a_session(cur):
    """ada, with a deposit of 25 and a session on local/echo: (her id, the session's)."""
    cur.execute("INSERT INTO users (email, username, password_hash) VALUES (%s, %s, %s) RETURNING id",
                ("ada@example.com", "ada", hash_password(PASSWORD, TEST_ITERATIONS)))
    user_id = cur.fetchone()[0]
    cur.execute("SELECT ok FROM add_user_funds(%s, 25, 'deposit', NULL, 'top-up', '{}')", (user_id,))
    assert cur.fetchone()[0]
    cur.execute("INSERT INTO chat_sessions (user_id, model_id, title) VALUES (%s, 'local/echo', 'old') RETURNING id",
                (user_id,))
    return user_id, cur.fetchone()[0]


def settle_as_schema_7_did(owner_url):
    """A chat call held and settled by schema 7's procedures, as its settle
    wrote it: a hold of 0.5 and the release of 0.2 that leaves 0.3 charged,
    and no charge by part, which nothing kept yet."""
    with closing(psycopg2.connect(owner_url)) as conn, conn, conn.cursor() as cur:
        user_id, session_id = funded_user_with_a_session(cur)
        cur.execute("SELECT ok, transaction_id FROM deduct_user_balance(%s, 0.5, 'Hold for a message to local/echo', "
                    "'{\"kind\": \"chat\"}', NULL, 60, 'local/echo', NULL)", (user_id,))
        ok, hold_id = cur.fetchone()
        assert ok
        cur.execute("SELECT charged FROM settle_chat_call(%s, %s, 'local/echo', NULL, %s, 0.5, 'hi', 3, 0.1, "
                    "'You said: hi', 4, 0.2, 0::smallint, '{\"kind\": \"settle\"}')", (user_id, session_id, hold_id))
        assert cur.fetchone()[0]


def snapshot(owner_url):
    """Every row of every table release 1 had, as text, and each balance."""
    with closing(psycopg2.connect(owner_url)) as conn, conn.cursor() as cur:
        rows = {}
        for table in LEDGER_TABLES:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
            rows[table] = cur.fetchone()[0]
        cur.execute("SELECT user_id, total_balance, spent_balance, held_balance FROM user_balance ORDER BY user_id")
        rows["balances"] = cur.fetchall()
        cur.execute("SELECT id, type, amount, related_transaction_id FROM transactions ORDER BY id")
        rows["ledger"] = cur.fetchall()
    return rows


def assert_every_row_kept(before, after):
    """Each table of release 1 has its rows (the audit log may have gained some), each balance and ledger row."""
    assert {table: after[table] for table in LEDGER_TABLES if table != "audit_log"} == \
        {table: before[table] for table in LEDGER_TABLES if table != "audit_log"}
    assert after["audit_log"] >= before["audit_log"]
    assert after["balances"] == before["balances"]
    assert after["ledger"] == before["ledger"]


def test_a_release_1_database_keeps_every_row_and_serves(release_1_database):
    owner_url = release_1_database
    fill_as_release_1_did(owner_url)
    before = snapshot(owner_url)

    migrate.migrate(owner_url, APP_PASSWORD, out=lambda line: None)
    migrate.migrate(owner_url, APP_PASSWORD, out=lambda line: None)  # and again: still harmless

    assert_every_row_kept(before, snapshot(owner_url))

    app = create_app(settings_for(make_dsn(owner_url, user=migrate.APP_ROLE, password=APP_PASSWORD)))
    try:
        client = app.test_client()
        headers = bearer(login(client)["access_token"])
        balance = client.get("/api/v1/balance", headers=headers).get_json()
        assert (balance["total_balance"], balance["held_balance"]) == ("25.00", "1.25")
        # The crashed call's hold, made before holds had deadlines, is still returned once.
        with app.app_context():
            assert reconcile_holds(app.config) == 1
            assert reconcile_holds(app.config) == 0
        assert [key["last4"] for key in client.get("/api/v1/keys", headers=headers).get_json()["keys"]] == ["abcd"]
        sessions = client.get("/api/v1/chat/sessions", headers=headers).get_json()["sessions"]
        sent = client.post(f"/api/v1/chat/sessions/{sessions[0]['id']}/messages", headers=headers,
                           json={"content": "still here?"})
        assert sent.status_code == 201, sent.get_json()
        balance = client.get("/api/v1/balance", headers=headers).get_json()
        assert balance["held_balance"] == "0.00"
        spent = Decimal("0.3") + Decimal(sent.get_json()["cost"])
        assert Decimal(balance["spent_balance"]) == spent
        assert Decimal(balance["available_balance"]) == Decimal(25) - spent
    finally:
        close_app(app)


def test_a_schema_7_database_keeps_its_settled_call_whose_charge_reads_as_null(schema_7_database):
    """The upgrade past 8 makes up no parts for a call settled without them: the
    ledger and the activity feed show its release with `charge` null, beside a
    call settled since with its parts, and README's ledger check finds nothing."""
    owner_url = schema_7_database
    assert recorded_versions(owner_url)[-1][0] == 7
    settle_as_schema_7_did(owner_url)
    before = snapshot(owner_url)

    migrate.migrate(owner_url, APP_PASSWORD, out=lambda line: None)

    assert (8, "prompt caching and reasoning") in recorded_versions(owner_url)
    assert_every_row_kept(before, snapshot(owner_url))
    with closing(psycopg2.connect(owner_url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM call_charges")
        assert cur.fetchone()[0] == 0, "parts were made up for a call settled without them"

    app = create_app(settings_for(make_dsn(owner_url, user=migrate.APP_ROLE, password=APP_PASSWORD)))
    try:
        client = app.test_client()
        headers = bearer(login(client)["access_token"])
        session = client.get("/api/v1/chat/sessions", headers=headers).get_json()["sessions"][0]
        sent = client.post(f"/api/v1/chat/sessions/{session['id']}/messages", headers=headers,
                           json={"content": "still here?"})
        assert sent.status_code == 201, sent.get_json()
        ledger = client.get("/api/v1/balance/transactions", headers=headers).get_json()["transactions"]
        new, old = [entry for entry in ledger if entry["type"] == "release"]
        assert (old["amount"], old["charge"]) == ("0.20", None)
        assert new["charge"]["cost"] == sent.get_json()["cost"]
        entries = client.get("/api/v1/activity?view=entries", headers=headers).get_json()["activity"]
        old_in_activity = [item for item in entries if item["kind"] == "transaction" and item["id"] == old["id"]]
        assert [item["charge"] for item in old_in_activity] == [None]
        # One row per call: the old one charged, without parts or token counts.
        calls = [item for item in client.get("/api/v1/activity", headers=headers).get_json()["activity"]
                 if item["kind"] == "call"]
        assert [(item["status"], item["charge"] is None, item["prompt_tokens"]) for item in calls] == [
            ("done", False, sent.get_json()["usage"]["prompt_tokens"]), ("done", True, None)]
        assert calls[0]["amount"] == f"-{sent.get_json()['cost']}" and calls[1]["amount"].startswith("-")
    finally:
        close_app(app)
    with closing(psycopg2.connect(owner_url)) as conn, conn.cursor() as cur:
        cur.execute(readme_ledger_query())
        assert cur.fetchall() == []


def test_a_schema_10_database_gets_its_prices_as_first_versions_from_each_models_creation(schema_10_database):
    """Each model's prices of the moment become its first version, in force
    since the model was made; past ledger rows keep their amounts, and a call
    made since names the version it was priced by."""
    owner_url = schema_10_database
    assert recorded_versions(owner_url)[-1][0] == 10
    with closing(psycopg2.connect(owner_url)) as conn, conn, conn.cursor() as cur:
        user_id, _ = funded_user_with_a_session(cur)
        # A call held and charged 0.3 by that schema's procedures.
        cur.execute("SELECT ok, transaction_id FROM deduct_user_balance(%s, 0.5, 'Hold for a message to local/echo',"
                    " '{\"kind\": \"chat\"}', NULL, 60, 'local/echo', NULL)", (user_id,))
        ok, hold_id = cur.fetchone()
        assert ok
        cur.execute("SELECT ok FROM add_user_funds(%s, 0.2, 'release', %s, 'settle', '{}')", (user_id, hold_id))
        assert cur.fetchone()[0]
        cur.execute("UPDATE models SET created_at = created_at - interval '30 days'")
        cur.execute("SELECT id, created_at, input_price_per_mtok, output_price_per_mtok, cache_read_price_per_mtok,"
                    " cache_write_price_per_mtok, cache_write_1h_price_per_mtok FROM models ORDER BY id")
        models = cur.fetchall()
    before = snapshot(owner_url)

    migrate.migrate(owner_url, APP_PASSWORD, out=lambda line: None)
    migrate.migrate(owner_url, APP_PASSWORD, out=lambda line: None)  # and again: no second version

    assert_every_row_kept(before, snapshot(owner_url))
    with closing(psycopg2.connect(owner_url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT model_id, effective_from, input_price_per_mtok, output_price_per_mtok,"
                    " cache_read_price_per_mtok, cache_write_price_per_mtok, cache_write_1h_price_per_mtok"
                    " FROM model_prices ORDER BY model_id")
        assert cur.fetchall() == models
    app = create_app(settings_for(make_dsn(owner_url, user=migrate.APP_ROLE, password=APP_PASSWORD)))
    try:
        client = app.test_client()
        headers = bearer(login(client)["access_token"])
        session = client.get("/api/v1/chat/sessions", headers=headers).get_json()["sessions"][0]
        sent = client.post(f"/api/v1/chat/sessions/{session['id']}/messages", headers=headers,
                           json={"content": "still here?"})
        assert sent.status_code == 201, sent.get_json()
        history = client.get("/api/v1/models/local/echo/prices").get_json()["prices"]
        assert [entry["in_force"] for entry in history] == [True]
    finally:
        close_app(app)
    with closing(psycopg2.connect(owner_url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT metadata->>'price_version_id' FROM transactions WHERE type = 'hold' ORDER BY id")
        assert cur.fetchall() == [(None,), (history[0]["id"],)]
        cur.execute(readme_ledger_query())
        assert cur.fetchall() == []


def test_an_upgraded_database_has_the_schema_of_a_new_one(release_1_database, pg_server):
    migrate.migrate(release_1_database, APP_PASSWORD, out=lambda line: None)
    with scratch_database(pg_server, "qmarket_new") as new_url:
        lines = []
        migrate.migrate(new_url, APP_PASSWORD, out=lines.append)
        assert [line for line in lines if line.startswith("applied ")] == [
            f"applied {path.name} (schema version {version}: {description})"
            for version, description, path in migrate.releases()]
        assert dump_schema(release_1_database).splitlines() == dump_schema(new_url).splitlines()
        # Release 1 recorded itself as (1, 'initial schema'), which 0001's name still says.
        assert recorded_versions(release_1_database) == recorded_versions(new_url)


def test_a_database_newer_than_the_code_is_refused(database):
    newest = len(migrate.releases())
    database.query("INSERT INTO schema_version (version, description) VALUES (%s, 'from the future')", (newest + 1,))
    with pytest.raises(RuntimeError, match=f"schema version {newest + 1}, newer than this code's {newest}"):
        migrate.migrate(database.owner_url, APP_PASSWORD, out=lambda line: None)
    assert database.query("SELECT max(version) FROM schema_version") == [(newest + 1,)]


def test_a_schema_14_database_gets_its_usage_rollups_built_from_its_ledger(schema_14_database):
    """Calls settled by that schema's procedures: one with its charge by part
    (its tokens kept), one released without (cost and requests only, tokens
    null), one returned whole and one still open (neither counts). The upgrade
    counts them as the settle now does, and calls made since add to them."""
    owner_url = schema_14_database
    assert recorded_versions(owner_url)[-1][0] == 14
    with closing(psycopg2.connect(owner_url)) as conn, conn, conn.cursor() as cur:
        user_id, session_id = funded_user_with_a_session(cur)

        def hold(amount, model_id):
            cur.execute("SELECT ok, transaction_id FROM deduct_user_balance(%s, %s, 'hold', '{}', NULL, 60, %s, NULL)",
                        (user_id, amount, model_id))
            ok, hold_id = cur.fetchone()
            assert ok
            return hold_id

        settled = hold("0.5", "local/echo")
        cur.execute("SELECT charged FROM settle_chat_call(%s, %s, 'local/echo', NULL, %s, 0.5, 'hi', 9, 0.1, "
                    "'You said: hi', 4, 0.2, 0::smallint, '{\"kind\": \"settle\"}', 3, 2, 1, 0, 0.01, 0.02, "
                    "'local')", (user_id, session_id, settled))
        assert cur.fetchone()[0]
        for model_id, returned in (("local/reverse", "0.2"), ("local/reverse", "0.5")):
            cur.execute("SELECT ok FROM add_user_funds(%s, %s, 'release', %s, 'settle', '{}')",
                        (user_id, returned, hold("0.5", model_id)))
            assert cur.fetchone()[0]
        hold("0.5", "local/echo")
    before = snapshot(owner_url)

    migrate.migrate(owner_url, APP_PASSWORD, out=lambda line: None)
    migrate.migrate(owner_url, APP_PASSWORD, out=lambda line: None)  # and again: nothing counted twice

    assert_every_row_kept(before, snapshot(owner_url))
    rollups = ("SELECT model_id, access_key_id, requests, cost, input_tokens, cached_input_tokens, "
               "cache_write_tokens, output_tokens FROM usage_daily ORDER BY model_id")
    with closing(psycopg2.connect(owner_url)) as conn, conn.cursor() as cur:
        cur.execute(rollups)
        assert cur.fetchall() == [("local/echo", None, 1, Decimal("0.33"), 3, 3, 3, 4),
                                  ("local/reverse", None, 1, Decimal("0.3"), None, None, None, None)]
    app = create_app(settings_for(make_dsn(owner_url, user=migrate.APP_ROLE, password=APP_PASSWORD)))
    try:
        client = app.test_client()
        headers = bearer(login(client)["access_token"])
        sent = client.post(f"/api/v1/chat/sessions/{session_id}/messages", headers=headers, json={"content": "more"})
        assert sent.status_code == 201, sent.get_json()
        usage = client.get("/api/v1/usage", headers=headers, query_string={"group_by": "model"}).get_json()["usage"]
        assert [(row["model_id"], row["requests"], row["cost"], row["input_tokens"] is None) for row in usage] == [
            ("local/echo", 2, format_money(Decimal("0.33") + Decimal(sent.get_json()["cost"])), False),
            ("local/reverse", 1, "0.30", True)]
        result = app.test_cli_runner().invoke(args=["usage", "verify"])
        assert (result.exit_code, result.output) == (0, "usage verified: 2 rollup rows agree with the ledger\n")
    finally:
        close_app(app)
    with closing(psycopg2.connect(owner_url)) as conn, conn.cursor() as cur:
        cur.execute(readme_ledger_query())
        assert cur.fetchall() == []
