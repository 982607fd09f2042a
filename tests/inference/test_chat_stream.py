"""The session chat API streamed (`"stream": true` or `Accept:
text/event-stream`): `delta` events as the answer is written, then `done` with
the usual 201 body; failures before the first delta are plain JSON errors with
the hold returned, failures after it settle on what was delivered, save it and
end in an `error` event; a browser that leaves still gets its exchange saved."""
import json
import logging
import time

import httpx
import pytest

from tests.conftest import clean_database
from tests.support import bearer, live_service, live_user, new_session, user

HOUSE_KEY = "sk-house-openai-000000000000001"


@pytest.fixture(scope="module")
def server(pg_server, template_db, openai_stub):
    with clean_database(pg_server, template_db) as database, live_service(
            database, OPENAI_BASE_URL=f"{openai_stub.url}/v1", OPENAI_API_KEY=HOUSE_KEY, PROVIDER_TIMEOUT=5) as live:
        yield live


@pytest.fixture
def stub(openai_stub):
    openai_stub.reset()
    return openai_stub


@pytest.fixture
def session(server):
    """(headers, messages URL, user id) of a funded user's session with openai/gpt-4o-mini."""
    headers, user_id = live_user(server.url, "5")
    created = httpx.post(f"{server.url}/api/v1/chat/sessions", json={"model_id": "openai/gpt-4o-mini"},
                         headers=headers).json()
    return headers, f"{server.url}/api/v1/chat/sessions/{created['id']}/messages", user_id


def events(response):
    """[(event, data)] of a server-sent event stream."""
    parsed, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            parsed.append((name, json.loads(line[len("data: "):])))
    return parsed


def held_and_rows(server, user_id):
    held = server.database.query("SELECT held_balance FROM user_balance WHERE user_id = %s", (user_id,))[0][0]
    messages = server.database.query("SELECT role, content FROM chat_history WHERE user_id = %s ORDER BY id",
                                     (user_id,))
    return held, messages


def test_deltas_then_done_with_the_usual_answer(server, session, stub):
    headers, url, user_id = session
    stub.behaviour.chunks = ["Hello ", "from ", "the ", "stream."]
    with httpx.stream("POST", url, json={"content": "Hi", "stream": True, "max_tokens": 50}, headers=headers) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        received = events(reply)
    assert [name for name, _ in received] == ["delta"] * 4 + ["done"]
    assert "".join(data["content"] for name, data in received if name == "delta") == "Hello from the stream."
    done = received[-1][1]
    assert set(done) == {"user_message", "assistant_message", "usage", "cost", "balance"}
    assert done["assistant_message"]["content"] == "Hello from the stream."
    assert done["usage"] == {"prompt_tokens": 11, "completion_tokens": 7}
    assert done["balance"]["held_balance"] == "0.00"
    assert held_and_rows(server, user_id) == (0, [("user", "Hi"), ("assistant", "Hello from the stream.")])


def test_an_accept_header_asks_for_the_stream_too(server, session, stub):
    headers, url, _ = session
    with httpx.stream("POST", url, json={"content": "Hi"}, headers={**headers, "Accept": "text/event-stream"}) as reply:
        assert [name for name, _ in events(reply)][-1] == "done"


def test_a_failure_before_the_first_delta_is_a_plain_error_and_returns_the_hold(server, session, stub):
    headers, url, user_id = session
    stub.behaviour.status = 500
    response = httpx.post(url, json={"content": "Hi", "stream": True}, headers=headers)
    assert response.status_code == 502 and response.json()["error"]["code"] == "provider_error"
    assert held_and_rows(server, user_id) == (0, [])


def test_a_stream_cut_after_deltas_saves_what_came_and_ends_in_an_error(server, session, stub):
    headers, url, user_id = session
    stub.behaviour.chunks = ["one ", "two ", "three "]
    stub.behaviour.cut_after_chunks = 2
    with httpx.stream("POST", url, json={"content": "Hi", "stream": True, "max_tokens": 50}, headers=headers) as reply:
        received = events(reply)
    assert [name for name, _ in received] == ["delta", "delta", "error"]
    error = received[-1][1]["error"]
    assert error["code"] == "provider_error" and float(error["details"]["charged"]) > 0
    held, rows = held_and_rows(server, user_id)
    assert held == 0 and rows == [("user", "Hi"), ("assistant", "one two ")]
    release, = server.database.query("SELECT metadata FROM transactions WHERE user_id = %s AND type = 'release'",
                                     (user_id,))
    assert release[0]["usage"] == "estimated"  # OpenAI reports usage only at the end


def test_a_browser_that_leaves_mid_stream_still_gets_its_exchange_saved(server, session, stub):
    headers, url, user_id = session
    stub.behaviour.chunks = [f"w{n} " for n in range(8)]
    stub.behaviour.chunk_delay_seconds = 0.2
    with httpx.stream("POST", url, json={"content": "Hi", "stream": True, "max_tokens": 50}, headers=headers) as reply:
        next(reply.iter_lines())
    deadline = time.monotonic() + 10
    while len(held_and_rows(server, user_id)[1]) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    held, rows = held_and_rows(server, user_id)
    assert held == 0 and rows == [("user", "Hi"), ("assistant", "".join(f"w{n} " for n in range(8)))]


def test_a_retried_stream_replays_the_stored_answer(server, session, stub):
    headers, url, _ = session
    keyed = {**headers, "Idempotency-Key": "stream-retry-1"}
    with httpx.stream("POST", url, json={"content": "Hi", "stream": True}, headers=keyed) as first:
        original = events(first)
    with httpx.stream("POST", url, json={"content": "Hi", "stream": True}, headers=keyed) as again:
        assert again.headers["Idempotent-Replayed"] == "true"
        replayed = events(again)
    assert [name for name, _ in replayed] == ["delta", "done"]
    assert replayed[0][1]["content"] == "Hello from the stub."
    assert replayed[-1] == original[-1]
    assert len(stub.requests) == 1
    # A retry may take a stream's record over only once the stream itself could
    # no longer run: STREAM_TIMEOUT (600 s), not PROVIDER_TIMEOUT (5 s), + 5 s + the 30 s grace.
    assert server.database.query("SELECT extract(epoch FROM stale_at - created_at) FROM idempotency_keys "
                                 "WHERE key = 'stream-retry-1'") == [(635,)]


def test_a_streams_end_is_logged_with_its_outcome_and_duration(client, caplog):
    """The request's access line goes out with the headers; a second line says
    how the stream ended, and when."""
    token = user(client, funds="1")
    url = f"/api/v1/chat/sessions/{new_session(client, token)}/messages"
    caplog.set_level(logging.INFO, logger="qmarket.access")
    response = client.post(url, json={"content": "Hi there", "stream": True}, headers=bearer(token),
                           buffered=False)
    body = b"".join(response.response)
    response.close()
    assert b"event: done" in body
    ended, = [record for record in caplog.records if record.getMessage() == "stream"]
    assert ended.fields["outcome"] == "completed" and ended.fields["duration_ms"] >= 0
    assert ended.fields["path"] == url and ended.fields["request_id"] == response.headers["X-Request-ID"]
