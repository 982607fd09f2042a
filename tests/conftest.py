"""A throwaway PostgreSQL for the run (TEST_DATABASE_URL, else testing.postgresql),
the schema built once into a template by migrate.py's own code, and a clean
clone of it for every test."""
import os
import shutil
import tempfile
import uuid
from contextlib import closing, contextmanager

import psycopg2
import pytest
import testing.postgresql
from psycopg2 import sql
from psycopg2.extensions import make_dsn

import migrate
from app import close_app, create_app
from database.cluster import testing_postgresql_options
from tests.support import LiveServer, login, register, settings_for

# Tests never read a developer's .env.
os.environ["ENV_FILE"] = os.devnull
APP_PASSWORD = "app-user-test-password"


def _admin(server_url):
    conn = psycopg2.connect(make_dsn(server_url, dbname="postgres"))
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def pg_server():
    """The owner's URL of a server the tests may create databases on."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"]
        return
    base_dir = tempfile.mkdtemp(prefix="qmarket-test-pg-", dir="/tmp")
    server = testing.postgresql.Postgresql(**testing_postgresql_options(base_dir))
    try:
        yield server.url()
    finally:
        server.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_server):
    name = f"qmarket_template_{uuid.uuid4().hex[:8]}"
    with closing(_admin(pg_server)) as admin, admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    migrate.migrate(make_dsn(pg_server, dbname=name), APP_PASSWORD, out=lambda line: None)
    yield name
    with closing(_admin(pg_server)) as admin, admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class TestDatabase:
    def __init__(self, server_url, name):
        self.name = name
        self.owner_url = make_dsn(server_url, dbname=name)
        self.app_url = make_dsn(server_url, dbname=name, user=migrate.APP_ROLE, password=APP_PASSWORD)

    def owner(self):
        """A connection as the owner, for arranging and inspecting rows."""
        conn = psycopg2.connect(self.owner_url)
        conn.autocommit = True
        return conn

    def query(self, statement, params=None):
        with closing(self.owner()) as conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else cur.rowcount


@contextmanager
def clean_database(pg_server, template_db):
    """A fresh clone of the migrated template, dropped afterwards."""
    name = f"qmarket_test_{uuid.uuid4().hex[:12]}"
    with closing(_admin(pg_server)) as admin, admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template_db)))
    try:
        yield TestDatabase(pg_server, name)
    finally:
        with closing(_admin(pg_server)) as admin, admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def database(pg_server, template_db):
    with clean_database(pg_server, template_db) as fresh:
        yield fresh


@pytest.fixture
def settings(database):
    return settings_for(database.app_url)


@pytest.fixture
def app(settings):
    app = create_app(settings)
    yield app
    close_app(app)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def token(client):
    """The access token of a registered user, ada@example.com."""
    register(client)
    return login(client)["access_token"]


@pytest.fixture
def live_server(settings):
    server = LiveServer(settings)
    yield server
    server.stop()
