"""PostgreSQL killed (SIGKILL) and started again under a running service, on a
private server so the other tests' server is never touched: the pooled
connections that died with it are replaced at their first statement, so no
request fails after the restart, and a transaction the crash cut in the middle
fails cleanly and moves no money."""
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import psycopg2
import pytest

from tests.processes import PrivateServer
from tests.support import PASSWORD, LiveServer, bearer, settings_for

APP_PASSWORD = "restart-test-app-password"
API = "/api/v1"


@pytest.fixture
def private_server():
    server = PrivateServer(APP_PASSWORD)
    yield server
    server.stop()


@pytest.fixture
def service(private_server):
    server = LiveServer(settings_for(private_server.app_url), workers=2, threads=4)
    yield server
    server.stop()


def funded_user(url):
    account = {"email": "ada@example.com", "username": "ada", "password": PASSWORD}
    assert httpx.post(f"{url}{API}/auth/register", json=account).status_code == 201
    token = httpx.post(f"{url}{API}/auth/login", json={"email": account["email"], "password": PASSWORD}
                       ).json()["access_token"]
    headers = bearer(token)
    assert httpx.post(f"{url}{API}/balance/funds", json={"amount": "10"}, headers=headers).status_code == 201
    return headers


def fill_the_pools(url, headers):
    """Parallel requests, so that every worker keeps idle connections."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda _: httpx.get(f"{url}{API}/balance", headers=headers, timeout=30).status_code,
                                 range(32)))
    assert statuses == [200] * 32


def idle_service_connections(private_server):
    return private_server.query("SELECT count(*) FROM pg_stat_activity "
                                "WHERE application_name = 'qmarket' AND state = 'idle'")[0][0]


def total_balance(private_server):
    return private_server.query("SELECT total_balance, spent_balance, held_balance FROM user_balance")[0]


def test_no_request_fails_after_a_restart(private_server, service):
    headers = funded_user(service.url)
    fill_the_pools(service.url, headers)
    assert idle_service_connections(private_server) >= 2

    private_server.kill()
    private_server.restart()

    statuses = []
    for _ in range(10):
        statuses.append(httpx.get(f"{service.url}{API}/balance", headers=headers).status_code)
        statuses.append(httpx.post(f"{service.url}{API}/balance/funds", json={"amount": "1"},
                                   headers=headers).status_code)
    assert statuses == [200, 201] * 10, "a stale pooled connection must not fail a request"
    assert total_balance(private_server)[0] == Decimal("20")


def wait_for_a_blocked_statement(private_server, timeout=30):
    """The service's statement waiting on a row lock, as pg_stat_activity shows it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = private_server.query("SELECT query FROM pg_stat_activity "
                                    "WHERE application_name = 'qmarket' AND wait_event_type = 'Lock'")
        if rows:
            return rows[0][0]
        time.sleep(0.05)
    raise AssertionError("no statement of the service waited on the lock")


def test_a_transaction_cut_by_the_crash_moves_no_money(private_server, service):
    headers = funded_user(service.url)
    sessions = f"{service.url}{API}/chat/sessions"
    session_id = httpx.post(sessions, json={"model_id": "local/echo"}, headers=headers).json()["id"]
    messages = f"{sessions}/{session_id}/messages"
    assert httpx.post(messages, json={"content": "first"}, headers=headers).status_code == 201
    before = total_balance(private_server)
    ledger_before = private_server.query("SELECT count(*) FROM transactions")[0][0]

    # A row lock on the balance stops the send's hold transaction at its
    # hold, after its first statement has run.
    locker = psycopg2.connect(private_server.owner_url)
    locker.cursor().execute("SELECT 1 FROM user_balance FOR UPDATE")
    with ThreadPoolExecutor(max_workers=1) as pool:
        sending = pool.submit(httpx.post, messages, json={"content": "second"}, headers=headers, timeout=30)
        blocked = wait_for_a_blocked_statement(private_server)
        assert not blocked.lstrip().startswith("BEGIN"), "the transaction must be under way, past its first statement"
        private_server.kill()
        response = sending.result()
    locker.close()

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"
    private_server.restart()
    assert total_balance(private_server) == before, "no hold may be left and no money moved"
    assert private_server.query("SELECT count(*) FROM transactions")[0][0] == ledger_before
    assert private_server.query("SELECT count(*) FROM chat_history")[0][0] == 2
    assert httpx.post(messages, json={"content": "third"}, headers=headers).status_code == 201
