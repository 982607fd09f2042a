"""devtools.pgbouncer: a real pgbouncer in transaction mode in front of the
tests' PostgreSQL, reached with the service's login and psycopg2's defaults."""
import shutil
import tempfile
from contextlib import closing

import httpx
import psycopg2
import pytest

from devtools.cluster import ClusterError
from devtools.pgbouncer import PgBouncer, pgbouncer_binary
from migrate import APP_ROLE
from tests.conftest import APP_PASSWORD
from tests.support import live_service, live_user, readme_ledger_query

pytestmark = pytest.mark.server


@pytest.fixture
def bouncer_dir():
    if pgbouncer_binary() is None:
        pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer; .ci/run installs it)")
    # Under /tmp, not tmp_path: the postgres account must enter it when we are root.
    path = tempfile.mkdtemp(prefix="qmarket-test-pgbouncer-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def bouncer_for(bouncer_dir, database, **options):
    params = psycopg2.extensions.parse_dsn(database.app_url)
    return PgBouncer(bouncer_dir, params["host"], params["port"], {APP_ROLE: APP_PASSWORD}, **options)


def one(url, statement):
    with closing(psycopg2.connect(url, connect_timeout=5, application_name="qmarket")) as conn, conn.cursor() as cur:
        cur.execute(statement)
        return cur.fetchone()


def test_the_service_login_queries_its_database_through_pgbouncer(bouncer_dir, database):
    with bouncer_for(bouncer_dir, database) as bouncer:
        url = bouncer.url_for(database.app_url)
        assert psycopg2.extensions.parse_dsn(url)["port"] == str(bouncer.port)
        assert one(url, "SELECT current_user, current_database(), current_setting('application_name')") == (
            APP_ROLE, database.name, "qmarket")


def test_transaction_mode_shares_one_server_connection_between_clients(bouncer_dir, database):
    """Two clients open at once with a pool of one server connection: each
    transaction borrows it in turn, which session mode would never allow."""
    with bouncer_for(bouncer_dir, database, pool_size=1) as bouncer:
        url = bouncer.url_for(database.app_url)
        with closing(psycopg2.connect(url)) as first, closing(psycopg2.connect(url)) as second:
            first.autocommit = second.autocommit = True
            pids = set()
            for conn in (first, second, first):
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_backend_pid()")
                    pids.add(cur.fetchone()[0])
            assert len(pids) == 1


def test_a_wrong_password_is_refused(bouncer_dir, database):
    with bouncer_for(bouncer_dir, database) as bouncer:
        wrong = psycopg2.extensions.make_dsn(bouncer.url_for(database.app_url), password="not-the-password")
        with pytest.raises(psycopg2.OperationalError, match="authentication failed"):
            one(wrong, "SELECT 1")


def test_restart_comes_back_on_the_same_port(bouncer_dir, database):
    with bouncer_for(bouncer_dir, database) as bouncer:
        url = bouncer.url_for(database.app_url)
        port, pid = bouncer.port, bouncer.pid
        with closing(psycopg2.connect(url)) as before:
            bouncer.restart()
            with pytest.raises(psycopg2.OperationalError), before.cursor() as cur:
                cur.execute("SELECT 1")
        assert (bouncer.port, bouncer.pid != pid) == (port, True)
        assert one(url, "SELECT 1") == (1,)


def test_urls_and_dsns_are_rewritten_to_the_bouncer():
    bouncer = PgBouncer("/nonexistent", "127.0.0.1", 5432, {}, port=6543)
    assert bouncer.url_for("postgresql://app_user:p%40ss@db.example:5432/qmarket?sslmode=disable") == \
        "postgresql://app_user:p%40ss@127.0.0.1:6543/qmarket?sslmode=disable"
    assert psycopg2.extensions.parse_dsn(bouncer.url_for("host=db port=5432 dbname=q user=u")) == {
        "host": "127.0.0.1", "port": "6543", "dbname": "q", "user": "u"}


def test_an_unknown_pool_mode_and_an_unstarted_url_are_refused():
    with pytest.raises(ValueError):
        PgBouncer("/nonexistent", "127.0.0.1", 5432, {}, pool_mode="sessions")
    with pytest.raises(ClusterError):
        PgBouncer("/nonexistent", "127.0.0.1", 5432, {}).url_for("postgresql://u@h/d")


def test_a_request_waiting_past_the_query_wait_timeout_gets_a_503_and_moves_no_money(bouncer_dir, database):
    """Every server connection busy (here the only one, held in a transaction):
    the service's query waits in PgBouncer's queue for query_wait_timeout, then
    its request is answered 503, not held for PgBouncer's default 120 s."""
    with bouncer_for(bouncer_dir, database, pool_size=1, query_wait_timeout=2) as bouncer, \
            live_service(database, workers=1, DATABASE_URL=bouncer.url_for(database.app_url)) as live:
        headers, user_id = live_user(live.url, "5")
        with closing(psycopg2.connect(bouncer.url_for(database.app_url))) as holder, holder.cursor() as cur:
            cur.execute("SELECT 1")  # a transaction open: the one server connection is its own
            refused = httpx.post(f"{live.url}/api/v1/balance/funds", json={"amount": "1"}, headers=headers,
                                 timeout=30)
            holder.rollback()
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "database_unavailable"
        assert httpx.get(f"{live.url}/api/v1/balance", headers=headers).json()["total_balance"] == "5.00"
    assert database.query(readme_ledger_query()) == []
