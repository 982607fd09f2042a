"""The official `openai` and `anthropic` SDKs against the service under
gunicorn, as the inference tests drive it: the module's live service on the
provider stubs (`server`), a funded user with an access key (`account`), the
clients (closed after each test), and the checks of what a user was charged."""
import time
from contextlib import contextmanager

import anthropic
import httpx
import openai
import pytest

from tests.conftest import clean_database
from tests.support import HOUSE_ANTHROPIC, HOUSE_OPENAI, live_service, live_user, readme_ledger_query


@contextmanager
def stubbed_service(pg_server, template_db, openai_stub, anthropic_stub, **settings):
    """The service under gunicorn on a clean database of its own, the stubs
    its providers with the operator's house keys for both, and `settings`."""
    with clean_database(pg_server, template_db) as database, live_service(
            database, **{"OPENAI_BASE_URL": f"{openai_stub.url}/v1", "ANTHROPIC_BASE_URL": f"{anthropic_stub.url}/v1",
                         "OPENAI_API_KEY": HOUSE_OPENAI, "ANTHROPIC_API_KEY": HOUSE_ANTHROPIC, "PROVIDER_TIMEOUT": 5,
                         **settings}) as live:
        yield live


@pytest.fixture(scope="module")
def server(pg_server, template_db, openai_stub, anthropic_stub):
    with stubbed_service(pg_server, template_db, openai_stub, anthropic_stub) as live:
        yield live


@pytest.fixture
def account(server):
    """A funded user with an access key: (key, user id, token headers)."""
    headers, user_id = live_user(server.url, "10")
    key = httpx.post(f"{server.url}/api/v1/access-keys", json={"name": "sdk"}, headers=headers).json()
    return {"key": key["key"], "key_id": key["id"], "user_id": user_id, "headers": headers}


def eventually(predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def ledger(server, user_id):
    """(charged, held, [(type, amount, model_id, access_key_id)]) of the user."""
    rows = server.database.query(
        "SELECT type, amount, model_id, access_key_id::text FROM transactions WHERE user_id = %s AND type <> 'deposit'"
        " ORDER BY id", (user_id,))
    spent, held = server.database.query("SELECT spent_balance, held_balance FROM user_balance WHERE user_id = %s",
                                        (user_id,))[0]
    return spent, held, rows


def assert_charged_exactly(server, user_id, charged):
    """The user paid exactly `charged`, nothing stays held, and README's ledger check finds nothing."""
    assert ledger(server, user_id)[:2] == (charged, 0)
    assert server.database.query(readme_ledger_query()) == []


_open_clients = []


@pytest.fixture(autouse=True)
def close_clients():
    """Each SDK client holds a connection pool: closed after its test."""
    yield
    while _open_clients:
        _open_clients.pop().close()


def opened(client):
    _open_clients.append(client)
    return client


def openai_client(server, account, key=None):
    return opened(openai.OpenAI(base_url=f"{server.url}/v1", api_key=key or account["key"], max_retries=0))


def anthropic_client(server, account):
    return opened(anthropic.Anthropic(base_url=server.url, api_key=account["key"], max_retries=0))
