"""No log holds a password hash, a stored key or its ciphertext. The paths that
used to write them (a taken email, a key stored twice, a statement failing inside
a transaction) are driven, then every log is searched: the PostgreSQL server's,
the app's records, and gunicorn's stderr."""
import logging
import os
import re
import shutil
import signal
import tempfile
from contextlib import closing
from pathlib import Path

import httpx
import psycopg2
import psycopg2.errors
import pytest
import testing.postgresql

from app.extensions import db
from app.observability import JSONFormatter
from devtools.cluster import PRIVATE_LOG_OPTIONS, EmbeddedCluster, free_port, server_account
from tests.support import PASSWORD, LiveServer, assert_error, bearer, login, register, settings_for

API_KEY = "sk-proj-LogLeak_" + "Q7w" * 8 + "-tail"
# A password hash in the service's format (app.security), and psycopg2's bytea literal.
LEAK_PATTERNS = [re.compile(r"pbkdf2_sha256\$"), re.compile(r"::bytea"), re.compile(r"\\x[0-9a-fA-F]{8}")]
FAILING_ROUTE = "/test/failing-insert"
MARKER_HASH = "pbkdf2_sha256$1000$bWFya2Vy$c2VjcmV0LWhhc2gtaW4tYS1mYWlsaW5nLXJvdw"


def server_settings():
    """The server's own values of the settings PRIVATE_LOG_OPTIONS makes."""
    return dict(re.findall(r"-c (\w+)=(\w+)", PRIVATE_LOG_OPTIONS))


@pytest.fixture
def server_log(database):
    """What the test PostgreSQL server logs from now on. testing.postgresql
    writes its server's output beside the data directory, named after its class."""
    if os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("the log of a server named by TEST_DATABASE_URL is not ours to read")
    path = Path(database.query("SHOW data_directory")[0][0]).parent / f"{testing.postgresql.Postgresql.__name__}.log"
    start = path.stat().st_size

    def read():
        with path.open("rb") as log:
            log.seek(start)
            return log.read().decode(errors="replace")
    return read


def add_failing_route(app):
    """A view whose INSERT fails inside a transaction, a password hash in its row
    (an email that is not lower case breaks users' CHECK)."""
    @app.post(FAILING_ROUTE)
    def failing_insert():
        with db.transaction() as tx:
            tx.run(
                """
                INSERT INTO users (email, username, password_hash)
                VALUES (%(email)s, %(username)s, %(password_hash)s)
                """,
                {"email": "Not-Lower@Example.com", "username": "failing", "password_hash": MARKER_HASH},
            )


def stored_secrets(database):
    """The secrets now in the database: every password hash, and each stored
    key's ciphertext, nonce and fingerprint as hex."""
    hashes = [row[0] for row in database.query("SELECT password_hash FROM users")]
    sealed = database.query("SELECT encode(encrypted_key, 'hex'), encode(nonce, 'hex'), "
                            "encode(key_fingerprint, 'hex') FROM api_keys")
    return hashes + [value for row in sealed for value in row]


def assert_no_secrets(text, secrets, where):
    for secret in secrets:
        assert secret not in text, f"{where} holds a secret"
    for pattern in LEAK_PATTERNS:
        assert not pattern.search(text), f"{where} holds {pattern.pattern!r}"


def test_the_test_server_logs_as_production_does(database):
    assert server_settings() == {"log_min_error_statement": "panic", "log_error_verbosity": "terse"}
    for name, value in server_settings().items():
        assert database.query(f"SHOW {name}") == [(value,)]  # names from PRIVATE_LOG_OPTIONS


def test_conflicts_and_failing_statements_leave_no_secret_in_any_log(app, client, database, server_log, caplog):
    caplog.set_level(logging.DEBUG)
    add_failing_route(app)
    register(client)
    taken_email = client.post("/api/v1/auth/register",
                              json={"email": "ada@example.com", "username": "other", "password": PASSWORD + "!"})
    assert_error(taken_email, 409, "email_taken")
    token = login(client)["access_token"]
    key = {"provider": "openai", "api_key": API_KEY}
    assert client.post("/api/v1/keys", json=key, headers=bearer(token)).status_code == 201
    assert_error(client.post("/api/v1/keys", json=key, headers=bearer(token)), 409, "duplicate_key")
    assert_error(client.post(FAILING_ROUTE), 500, "internal_error")

    failure = [record for record in caplog.records if record.getMessage().startswith("unhandled error")]
    assert failure and "CheckViolation (SQLSTATE 23514, constraint users_email_check" in failure[0].getMessage()
    formatter = JSONFormatter()
    with app.test_request_context():
        app_log = caplog.text + "\n".join(formatter.format(record) for record in caplog.records)
    secrets = stored_secrets(database) + [MARKER_HASH, API_KEY, PASSWORD]
    assert_no_secrets(app_log, secrets, "the app's log")
    assert "users_email_check" in server_log(), "the failure reached the server's log"
    assert_no_secrets(server_log(), secrets, "the PostgreSQL server's log")


def test_gunicorn_and_the_server_log_no_secret_under_conflicts(database, server_log):
    server = LiveServer(settings_for(database.app_url, LOG_LEVEL="DEBUG"), workers=1, threads=4)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            account = {"email": "ada@example.com", "username": "ada", "password": PASSWORD}
            assert http.post("/api/v1/auth/register", json=account).status_code == 201
            assert http.post("/api/v1/auth/register", json={**account, "username": "bob"}).status_code == 409
            assert http.post("/api/v1/auth/register", json={**account, "email": "b@example.com"}).status_code == 409
            credentials = {"email": account["email"], "password": PASSWORD}
            token = http.post("/api/v1/auth/login", json=credentials).json()["access_token"]
            key = {"provider": "openai", "api_key": API_KEY}
            assert http.post("/api/v1/keys", json=key, headers=bearer(token)).status_code == 201
            assert http.post("/api/v1/keys", json=key, headers=bearer(token)).status_code == 409
    finally:
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=30)
        stderr = server.output()
        server.stop()
    secrets = stored_secrets(database) + [API_KEY, PASSWORD]
    assert '"status": 409' in stderr, "the conflicts were logged"
    assert_no_secrets(stderr, secrets, "gunicorn's stderr")
    assert_no_secrets(server_log(), secrets, "the PostgreSQL server's log")


def test_a_logged_database_error_keeps_its_names_and_frames_but_not_its_row(app, database, caplog):
    caplog.set_level(logging.DEBUG)
    add_failing_route(app)
    view = app.view_functions["failing_insert"]
    with app.app_context():
        try:
            try:
                view()
            except psycopg2.errors.CheckViolation as exc:
                raise RuntimeError("registration failed") from exc
        except RuntimeError:
            logging.getLogger("qmarket.test").exception("a failure logged with its traceback")
    line = JSONFormatter().format(caplog.records[-1])
    assert "CheckViolation (SQLSTATE 23514, constraint users_email_check, table users)" in line
    assert "RuntimeError: registration failed" in line and "direct cause" in line
    assert "in failing_insert" in line, "the frames are kept"
    assert_no_secrets(line, [MARKER_HASH, "Failing row"], "a formatted record")


@pytest.fixture
def cluster_folder():
    folder = Path(tempfile.mkdtemp(prefix="qmarket-log-", dir="/tmp"))
    yield folder
    pgdata = folder / "pgdata"
    outside = pgdata.resolve() if pgdata.is_symlink() else None  # under the postgres user's home, as root
    shutil.rmtree(folder, ignore_errors=True)
    if outside:
        shutil.rmtree(outside, ignore_errors=True)


def test_the_embedded_cluster_keeps_its_log_private(cluster_folder):
    cluster = EmbeddedCluster(cluster_folder, free_port())
    cluster.initialise("owner", "owner-password")
    cluster.log_file.write_text("left by an older version\n")
    cluster.log_file.chmod(0o644)
    cluster.start()
    try:
        status = cluster.log_file.stat()
        assert (status.st_mode & 0o777, (status.st_uid, status.st_gid)) == (0o600, server_account())
        url = f"postgresql://owner:owner-password@127.0.0.1:{cluster.port}/postgres"
        with closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
            for name, value in server_settings().items():
                cur.execute(f"SHOW {name}")  # names from PRIVATE_LOG_OPTIONS
                assert cur.fetchone() == (value,)
    finally:
        cluster.stop()
