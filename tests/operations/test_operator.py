"""What an operator meets: the deposit cap that keeps the service's own login
from creating money, `flask credit` as the owner, the refusal to serve as a
superuser or an owner, secrets the start-up error tells how to make, and one
line instead of a traceback when the database is not there."""
import os
import subprocess
import sys
import uuid
from contextlib import closing
from decimal import Decimal

import psycopg2
import psycopg2.errors
import pytest
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

import migrate
from app import close_app, create_app
from app.config import SETTINGS, ConfigError, load_config
from devtools.cluster import free_port
from tests.support import ROOT, register, settings_for, user_id_of

DEPOSIT = "SELECT ok, reason FROM add_user_funds(%s::uuid, %s, 'deposit', NULL, 'test', '{}')"
HOLD = "SELECT ok, transaction_id FROM deduct_user_balance(%s::uuid, %s)"
RELEASE = "SELECT ok, reason FROM add_user_funds(%s::uuid, %s, 'release', %s)"


def make_user(database, name="ada"):
    return database.query(
        "INSERT INTO users (email, username, password_hash) VALUES (%s, %s, 'x') RETURNING id::text",
        (f"{name}@example.com", name))[0][0]


def money(database, user_id):
    """(total_balance, ledger rows) of the user."""
    return (database.query("SELECT total_balance FROM user_balance WHERE user_id = %s", (user_id,))[0][0],
            database.query("SELECT count(*) FROM transactions WHERE user_id = %s", (user_id,))[0][0])


def as_app_user(database, statement, params):
    """One statement in its own transaction as the service's login, over psycopg2."""
    with closing(psycopg2.connect(database.app_url)) as conn, conn, conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchone() if cur.description else None


def app_user_password_hash(database):
    return database.query("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (migrate.APP_ROLE,))[0][0]


def closed_port_url(user="app_user"):
    return f"postgresql://{user}:pw@127.0.0.1:{free_port()}/qmarket"


# ------------------------------------------------------------ the deposit cap

def test_the_service_login_cannot_deposit_above_the_cap(database):
    user_id = make_user(database)
    with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="above the cap"):
        as_app_user(database, DEPOSIT, (user_id, Decimal("999999")))
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        as_app_user(database, DEPOSIT, (user_id, Decimal("1000.01")))
    assert money(database, user_id) == (0, 0), "nothing moved"
    assert as_app_user(database, DEPOSIT, (user_id, Decimal("1000"))) == (True, None), "the cap itself is allowed"
    assert money(database, user_id) == (1000, 1)


def test_a_deposit_with_its_receipt_keeps_the_cap_and_shows_the_ledger(database):
    user_id = make_user(database)
    receipt = "SELECT * FROM deposit_with_receipt(%s::uuid, %s, 'test', '{}')"
    with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="above the cap"):
        as_app_user(database, receipt, (user_id, Decimal("1000.01")))
    assert money(database, user_id) == (0, 0), "nothing moved"
    as_app_user(database, DEPOSIT, (user_id, Decimal("2.5")))
    shown = as_app_user(database, receipt, (user_id, Decimal("7.25")))
    [(entry_id, available_after)] = database.query(
        "SELECT id, available_after FROM transactions WHERE user_id = %s ORDER BY id DESC LIMIT 1", (user_id,))
    assert shown[:6] == (True, None, entry_id, "deposit", Decimal("7.25"), available_after)
    assert available_after == Decimal("9.75")
    assert shown[11:] == (Decimal("9.75"), Decimal("0"), Decimal("0"), Decimal("9.75"), "USD")
    assert as_app_user(database, receipt, ("00000000-0000-0000-0000-000000000000", Decimal("1")))[:3] == (
        False, "no_such_user", None)


@pytest.mark.parametrize("statement", [
    "SELECT max_amount FROM deposit_cap",
    "UPDATE deposit_cap SET max_amount = 1000000",
    "DELETE FROM deposit_cap",
])
def test_the_service_login_can_neither_read_nor_change_the_cap(database, statement):
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        as_app_user(database, statement, None)
    assert database.query("SELECT max_amount FROM deposit_cap") == [(Decimal("1000"),)]


def test_the_owner_deposits_any_amount_and_releases_are_not_capped(database):
    user_id = make_user(database)
    assert database.query(DEPOSIT, (user_id, Decimal("999999")))[0] == (True, None)
    # The service's login holds and releases more than the cap: releases only return held money.
    ok, hold_id = as_app_user(database, HOLD, (user_id, Decimal("5000")))
    assert ok
    assert as_app_user(database, RELEASE, (user_id, Decimal("5000"), hold_id)) == (True, None)
    assert money(database, user_id) == (Decimal("999999"), 3)


def test_migrate_writes_max_topup_into_the_cap(database):
    user_id = make_user(database)
    lines = []
    migrate.migrate(database.owner_url, parse_dsn(database.app_url)["password"], out=lines.append,
                    max_topup=Decimal("50"))
    assert "deposit cap for the service's login: 50 (MAX_TOPUP)" in lines
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        as_app_user(database, DEPOSIT, (user_id, Decimal("50.01")))
    assert as_app_user(database, DEPOSIT, (user_id, Decimal("50"))) == (True, None)


# ------------------------------------------------------------ flask credit

@pytest.mark.parametrize("migrate_login, credited", [("owner", True), ("service", False)])
def test_flask_credit_above_max_topup_needs_the_owner(database, migrate_login, credited):
    owner_url = database.owner_url if migrate_login == "owner" else database.app_url
    app = create_app(settings_for(database.app_url, MIGRATE_DATABASE_URL=owner_url))
    try:
        register(app.test_client())
        result = app.test_cli_runner().invoke(args=["credit", "ada@example.com", "25000", "--note", "invoice 7"])
    finally:
        close_app(app)
    user_id = user_id_of(database)
    if credited:
        assert result.exit_code == 0, result.output
        assert result.output.startswith("credited 25000.00 USD to ada@example.com")
        assert money(database, user_id) == (25000, 1)
    else:
        assert result.exit_code == 1
        assert "only the database owner may credit more than MAX_TOPUP" in result.output
        assert money(database, user_id) == (0, 0)


# ------------------------------------------------------------ migrate and app_user's password

def test_migrate_gives_app_user_only_its_own_password(database):
    stranger = make_dsn(database.owner_url, user="postgres", password="the-superusers-password")
    configured = {"MIGRATE_DATABASE_URL": database.owner_url, "MAX_TOPUP": Decimal("1000")}
    before = app_user_password_hash(database)

    migrate.migrate_configured({**configured, "DATABASE_URL": stranger}, out=lambda line: None)
    assert app_user_password_hash(database) == before, "another login's password was not copied"

    migrate.migrate_configured({**configured, "DATABASE_URL": database.app_url}, out=lambda line: None)
    # The same password again, hashed with a fresh salt: the hash shows it was set.
    assert app_user_password_hash(database) != before


# ------------------------------------------------------------ who the service logs in as

@pytest.fixture
def table_owner(database):
    """(login URL, how): a login that owns a table itself, or through a role it belongs to."""
    made = []

    def make(how):
        login = f"qm_login_{uuid.uuid4().hex[:8]}"
        made.append(login)
        owner = login
        database.query(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw'").format(sql.Identifier(login)))
        if how == "through a role":
            owner = f"qm_owners_{uuid.uuid4().hex[:8]}"
            made.append(owner)
            database.query(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(owner)))
            database.query(sql.SQL("GRANT {} TO {}").format(sql.Identifier(owner), sql.Identifier(login)))
        database.query(sql.SQL("ALTER TABLE audit_log OWNER TO {}").format(sql.Identifier(owner)))
        return make_dsn(database.owner_url, user=login, password="pw")

    yield make
    with closing(database.owner()) as conn, conn.cursor() as cur:
        for role in reversed(made):
            cur.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(sql.Identifier(role)))
            cur.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            cur.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_production_refuses_to_serve_as_a_superuser(database):
    with pytest.raises(ConfigError, match="refusing to serve in production as the database login .*a superuser"):
        create_app(settings_for(database.owner_url))


@pytest.mark.parametrize("how", ["itself", "through a role"])
def test_production_refuses_to_serve_as_a_table_owner(table_owner, how):
    with pytest.raises(ConfigError, match=r"the owner of table audit_log.*MIGRATE_DATABASE_URL"):
        create_app(settings_for(table_owner(how)))


def test_the_service_login_development_and_an_unreachable_database_are_served(database):
    for settings in (settings_for(database.app_url),
                     settings_for(database.owner_url, APP_ENV="development"),
                     settings_for(closed_port_url("postgres"))):
        close_app(create_app(settings))


def test_gunicorn_will_not_start_as_a_superuser(database):
    finished = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "gunicorn.conf.py"),
         "--bind", f"127.0.0.1:{free_port()}", "wsgi:app"],
        cwd=ROOT, env=environment(**settings_for(database.owner_url)), capture_output=True, text=True, timeout=60)
    assert finished.returncode != 0
    login = parse_dsn(database.owner_url)["user"]
    assert f"Error: refusing to serve in production as the database login '{login}', a superuser" in finished.stderr


# ------------------------------------------------------------ the secrets start-up error

@pytest.fixture
def clean_environment(monkeypatch):
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)


def test_the_secrets_error_prints_commands_that_make_good_secrets(tmp_path, monkeypatch, clean_environment):
    env_file = tmp_path / ".env"
    env_file.write_text("DB_USER=app_user\nSECRET_KEY=short\n")
    monkeypatch.setenv("ENV_FILE", str(env_file))
    with pytest.raises(ConfigError) as refused:
        load_config()
    message = str(refused.value)
    assert "make run` writes" not in message and str(env_file) in message
    commands = dict(line.strip().split(": ", 1) for line in message.splitlines() if line.startswith("  "))
    assert sorted(commands) == ["ENCRYPTION_KEYS", "FINGERPRINT_KEY", "SECRET_KEY"]
    assert all(command in (ROOT / ".env.example").read_text() for command in commands.values())
    made = {name: subprocess.run(command.replace("python3", sys.executable, 1), shell=True, check=True,
                                 capture_output=True, text=True).stdout.strip()
            for name, command in commands.items()}
    env_file.write_text("".join(f"{name}={value}\n" for name, value in made.items()))
    assert load_config()["SECRET_KEY"] == made["SECRET_KEY"]


# ------------------------------------------------------------ no database: one line

UNREACHABLE = ("the database could not be reached",
               "the embedded one runs only while `make run` does")


@pytest.mark.parametrize("args", [
    ["credit", "ada@example.com", "5", "--note", "x"],
    ["catalog", "load", str(ROOT / "catalog.json")],
    ["prune"],
    ["keys", "rotate"],
])
def test_commands_without_a_database_say_so_in_one_line(args):
    app = create_app(settings_for(closed_port_url()))
    try:
        result = app.test_cli_runner().invoke(args=args)
    finally:
        close_app(app)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and all(says in result.output for says in UNREACHABLE), result.output


def environment(**settings):
    """The process environment with only these settings, and no .env."""
    env = {key: value for key, value in os.environ.items() if key not in SETTINGS}
    env.update({key: str(value) for key, value in settings.items()}, ENV_FILE=os.devnull)
    return env


@pytest.mark.parametrize("command", [
    [sys.executable, "migrate.py"],
    [sys.executable, "-m", "flask", "--app", "wsgi", "credit", "ada@example.com", "5", "--note", "x"],
])
def test_make_migrate_and_flask_credit_without_a_database_print_one_line(command):
    finished = subprocess.run(command, cwd=ROOT, env=environment(**settings_for(closed_port_url())),
                              capture_output=True, text=True, timeout=60)
    assert finished.returncode == 1
    assert finished.stdout == ""
    assert finished.stderr.count("\n") == 1 and all(says in finished.stderr for says in UNREACHABLE), finished.stderr
