"""The database gone when a stream settles, on a PostgreSQL server of this
module's own that is killed and started again under gunicorn: the settle is
tried again until the hold's deadline plus HOLD_GRACE_SECONDS, so a database
back in time bills the stream exactly; one gone longer ends the stream with a
503 `database_unavailable` error event in the client's format (never a broken
chunk), and the hold comes back once the database does."""
import json
import threading
import time

import httpx
import pytest

from app.money import format_money
from tests.money.test_stream_billing import GPT_4O_MINI
from tests.processes import PrivateServer
from tests.support import HOUSE_OPENAI, LiveServer, cost, live_user, readme_ledger_query, settings_for

IDEMPOTENCY_KEY = "settle-fault-1"


@pytest.fixture
def private_server():
    server = PrivateServer()
    yield server
    server.stop()


def service(private_server, openai_stub, **settings):
    return LiveServer(settings_for(private_server.app_url, OPENAI_BASE_URL=f"{openai_stub.url}/v1",
                                   OPENAI_API_KEY=HOUSE_OPENAI, PROVIDER_TIMEOUT=5, HOLD_GRACE_SECONDS=1,
                                   **settings), workers=1, threads=8)


def ask(live, client, headers):
    """(url, body) of a streamed call of gpt-4o-mini: the inference API, or a session's message."""
    if client == "v1":
        return f"{live.url}/v1/chat/completions", {
            "model": GPT_4O_MINI, "max_tokens": 100, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Hi"}]}
    session = httpx.post(f"{live.url}/api/v1/chat/sessions", json={"model_id": GPT_4O_MINI},
                         headers=headers).json()
    return f"{live.url}/api/v1/chat/sessions/{session['id']}/messages", {"content": "Hi", "max_tokens": 100,
                                                                           "stream": True}


def stream_killing_the_database(private_server, url, body, headers, back_after):
    """The events of a stream whose database is killed once its first delta has
    come (the hold is made, and flushed to disk) and started again `back_after`
    seconds later."""
    events, restarted = [], None
    try:
        with httpx.stream("POST", url, json=body, headers={**headers, "Idempotency-Key": IDEMPOTENCY_KEY},
                          timeout=60) as response:
            assert response.status_code == 200
            for line in response.iter_lines():  # a broken chunk would raise here
                if line.startswith("data: {"):
                    events.append(json.loads(line[6:]))
                    if restarted is None:
                        private_server.flush_wal()
                        private_server.kill()
                        restarted = threading.Timer(back_after, private_server.restart)
                        restarted.start()
    finally:
        if restarted is not None:
            restarted.join()
    return events


def wait_for(predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def slow_stream(openai_stub):
    """Ten deltas over about two seconds, with usage 9/10."""
    openai_stub.reset()
    openai_stub.behaviour.chunks = [f"w{n} " for n in range(10)]
    openai_stub.behaviour.chunk_delay_seconds = 0.2
    openai_stub.behaviour.prompt_tokens, openai_stub.behaviour.completion_tokens = 9, 10
    return openai_stub


@pytest.mark.parametrize("client", ["v1", "session"])
def test_a_database_back_before_the_deadline_bills_the_stream_exactly(private_server, slow_stream, client):
    live = service(private_server, slow_stream, STREAM_TIMEOUT=60)
    try:
        headers, user_id = live_user(live.url, "5")
        url, body = ask(live, client, headers)
        events = stream_killing_the_database(private_server, url, body, headers, back_after=3)
    finally:
        live.stop()

    charge = cost(GPT_4O_MINI, 9, 10)
    assert (events[-1]["usage"] if client == "v1" else events[-1])["cost"] == format_money(charge)
    rows = private_server.query("SELECT h.amount - r.amount, r.metadata ->> 'kind' FROM transactions h"
                                " JOIN transactions r ON r.related_transaction_id = h.id AND r.type = 'release'"
                                " WHERE h.type = 'hold'")
    assert rows == [(charge, "settle")]
    assert private_server.query("SELECT state FROM idempotency_keys") == [("done",)]
    assert private_server.query(readme_ledger_query()) == []


@pytest.mark.parametrize("client", ["v1", "session"])
def test_a_database_gone_past_the_deadline_ends_the_stream_in_an_error_event(private_server, slow_stream, client):
    # The stream's deadline is 4 s away and its grace 1 s: the database comes back after both.
    live = service(private_server, slow_stream, STREAM_TIMEOUT=4, RECONCILE_INTERVAL=1)
    try:
        headers, user_id = live_user(live.url, "5")
        url, body = ask(live, client, headers)
        events = stream_killing_the_database(private_server, url, body, headers, back_after=8)
        error = events[-1]["error"]
        assert (error["code"], error.get("type")) == (("database_unavailable", "api_error") if client == "v1"
                                                       else ("database_unavailable", None))
        # Once the database is back, reconcile returns the hold the settle could not.
        wait_for(lambda: private_server.query("SELECT held_balance FROM user_balance") == [(0,)])
        assert private_server.query("SELECT metadata ->> 'kind' FROM transactions WHERE type = 'release'") == [
            ("reconcile",)]
        assert private_server.query("SELECT spent_balance FROM user_balance") == [(0,)]
        # The Idempotency-Key record could not be released; past its window a retry takes it over.
        wait_for(lambda: private_server.query("SELECT stale_at < now() FROM idempotency_keys") == [(True,)])
        with httpx.stream("POST", url, json=body, headers={**headers, "Idempotency-Key": IDEMPOTENCY_KEY},
                          timeout=30) as retried:
            assert retried.status_code == 200 and "Idempotent-Replayed" not in retried.headers
            retried.read()
    finally:
        live.stop()
    assert private_server.query(readme_ledger_query()) == []
