"""Billing under faults: a provider that drips its answer past PROVIDER_TIMEOUT,
reconcile and idempotent retries during a live call, and every way the settle
after an answer can fail. Each leaves the ledger exact and nothing held."""
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest

from app import close_app, create_app
from app.api.idempotency import CALL_START_MARGIN_SECONDS
from app.billing import reconcile_holds
from app.money import format_money
from devtools.cluster import free_port
from tests.support import LiveServer, assert_error, bearer, new_session, readme_ledger_query, user

SESSIONS = "/api/v1/chat/sessions"
MODEL = "openai/gpt-4o-mini"
INPUT_PRICE, OUTPUT_PRICE = Decimal("0.15"), Decimal("0.60")  # catalog.json, per million tokens
# The calls are served with the house key, at the catalog price.
HOUSE_KEY = "sk-house-stubkey-000000000001234"
DEPOSIT = Decimal("10")
# What the stub reports by default.
PROMPT_TOKENS, COMPLETION_TOKENS = 11, 7


@pytest.fixture
def stub(openai_stub):
    return openai_stub


@pytest.fixture
def settings(stubbed_settings):
    return {**stubbed_settings, "PROVIDER_TIMEOUT": 5, "HOLD_GRACE_SECONDS": 1, "OPENAI_API_KEY": HOUSE_KEY}


@pytest.fixture
def token(client):
    return user(client, funds=DEPOSIT)


@pytest.fixture
def session_url(client, token):
    return f"{SESSIONS}/{new_session(client, token, MODEL)}/messages"


@pytest.fixture
def quick_app(settings):
    """The service with PROVIDER_TIMEOUT at 1 s, on the same database."""
    app = create_app({**settings, "PROVIDER_TIMEOUT": 1})
    yield app
    close_app(app)


@pytest.fixture
def app_without_provider(settings):
    """The service with nothing listening where its OpenAI provider should be."""
    app = create_app({**settings, "OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1"})
    yield app
    close_app(app)


def cost(prompt_tokens, completion_tokens):
    return (prompt_tokens * INPUT_PRICE + completion_tokens * OUTPUT_PRICE) / 1_000_000


def prompt_bound(content):
    """The hold's prompt estimate for a first message: 16 per request, 8 per message, its UTF-8 bytes."""
    return 16 + 8 + len(content.encode())


def money(database):
    (total, spent, held), = database.query("SELECT total_balance, spent_balance, held_balance FROM user_balance")
    return total, spent, held


def holds_and_releases(database):
    return database.query("""SELECT hold.amount, rel.amount FROM transactions hold
                             LEFT JOIN transactions rel ON rel.related_transaction_id = hold.id
                             WHERE hold.type = 'hold' ORDER BY hold.id""")


def assert_ledger_exact(database, spent):
    """total = deposits, spent = holds - releases = `spent`, nothing held, every hold closed."""
    assert database.query(readme_ledger_query()) == []
    assert money(database) == (DEPOSIT, spent, 0)
    assert all(released is not None for _, released in holds_and_releases(database))


def assert_nothing_charged(database):
    assert_ledger_exact(database, 0)
    assert database.query("SELECT count(*) FROM chat_history") == [(0,)]


def wait_until(condition, timeout=10):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# ------------------------------------------------------ the call's deadline

def test_a_dripping_provider_is_cut_off_at_the_deadline(quick_app, token, session_url, database, stub):
    stub.behaviour.drip_seconds = 0.1  # the ~250-byte answer would take half a minute
    response = quick_app.test_client().post(session_url, json={"content": "Hi"}, headers=bearer(token))
    assert assert_error(response, 504, "provider_timeout")["details"] == {"provider": "openai"}
    assert_nothing_charged(database)
    # The abandoned exchange stops reading too: the stub sees its client hang up.
    wait_until(lambda: stub.abandoned == 1)


def test_the_served_worker_cuts_a_dripping_provider_off_at_the_deadline(settings, database, stub):
    """The same deadline under gunicorn's gevent worker, where the worker threads
    that bound the call are greenlets."""
    server = LiveServer({**settings, "PROVIDER_TIMEOUT": 1})
    try:
        headers, url = _live_account(server)
        stub.behaviour.drip_seconds = 0.1  # the whole answer would take half a minute and be a 201
        response = httpx.post(url, json={"content": "Hi"}, headers=headers, timeout=30)
    finally:
        server.stop()
    assert response.status_code == 504 and response.json()["error"]["code"] == "provider_timeout"
    assert_nothing_charged(database)


def test_a_stall_before_the_headers_is_cut_off_at_the_deadline(quick_app, token, session_url, database, stub):
    stub.behaviour.stall_seconds = 3
    response = quick_app.test_client().post(session_url, json={"content": "Hi"}, headers=bearer(token))
    assert_error(response, 504, "provider_timeout")
    assert_nothing_charged(database)


def test_a_retry_while_the_call_runs_is_refused_not_run_again(quick_app, token, session_url, database, stub):
    stub.behaviour.drip_seconds = 0.1
    headers = {**bearer(token), "Idempotency-Key": "send-1"}
    with ThreadPoolExecutor(1) as caller:
        first = caller.submit(quick_app.test_client().post, session_url, json={"content": "Hi"}, headers=headers)
        assert stub.wait_for_requests(1)
        assert_error(quick_app.test_client().post(session_url, json={"content": "Hi"}, headers=headers),
                     409, "idempotency_in_progress")
        # Taken over only past the call's deadline (1 s, 5 s to start it) plus the grace period (1 s).
        assert database.query("SELECT stale_at - created_at FROM idempotency_keys") == [(timedelta(seconds=7),)]
        assert_error(first.result(), 504, "provider_timeout")
    assert len(stub.requests) == 1
    assert_nothing_charged(database)

    stub.behaviour.drip_seconds = 0
    again = quick_app.test_client().post(session_url, json={"content": "Hi"}, headers=headers)
    assert again.status_code == 201  # a timed-out answer is not kept: the retry runs anew
    assert len(stub.requests) == 2
    assert_ledger_exact(database, cost(PROMPT_TOKENS, COMPLETION_TOKENS))


def test_a_stream_asked_for_by_accept_alone_is_kept_in_progress_for_a_streams_time(app, client, token, session_url,
                                                                                   database, stub):
    """`Accept: text/event-stream` asks for a stream as `"stream": true` does: its
    record may be taken over only once a stream could no longer run."""
    gate = stub.behaviour.hold_answers()
    headers = {**bearer(token), "Idempotency-Key": "send-1", "Accept": "text/event-stream"}
    try:
        with ThreadPoolExecutor(1) as caller:
            first = caller.submit(client.post, session_url, json={"content": "Hi"}, headers=headers)
            assert stub.wait_for_requests(1)
            streamed = app.config["STREAM_TIMEOUT"] + CALL_START_MARGIN_SECONDS + app.config["HOLD_GRACE_SECONDS"]
            assert app.config["STREAM_TIMEOUT"] != app.config["PROVIDER_TIMEOUT"]
            assert database.query("SELECT state, stale_at - created_at FROM idempotency_keys") == [
                ("in_progress", timedelta(seconds=streamed))]
            gate.set()
            response = first.result()
    finally:
        gate.set()
    assert response.mimetype == "text/event-stream" and "event: done" in response.get_data(as_text=True)
    assert_ledger_exact(database, cost(PROMPT_TOKENS, COMPLETION_TOKENS))


def test_a_stale_record_is_not_taken_over_by_another_body(client, token, session_url, database, stub):
    """A retry may take over an unfinished request (its process died) only as
    that request: another body under the key is refused before any hold or call."""
    gate = stub.behaviour.hold_answers()
    headers = {**bearer(token), "Idempotency-Key": "send-1"}
    try:
        with ThreadPoolExecutor(1) as caller:
            first = caller.submit(client.post, session_url, json={"content": "Hi"}, headers=headers)
            assert stub.wait_for_requests(1)
            database.query("UPDATE idempotency_keys SET stale_at = now() - interval '1 second'")
            rows = database.query("SELECT count(*) FROM transactions")
            assert_error(client.post(session_url, json={"content": "Something else"}, headers=headers),
                         422, "idempotency_key_reused")
            assert len(stub.requests) == 1
            assert database.query("SELECT count(*) FROM transactions") == rows
            gate.set()
            assert first.result().status_code == 201
    finally:
        gate.set()
    assert len(stub.requests) == 1
    assert_ledger_exact(database, cost(PROMPT_TOKENS, COMPLETION_TOKENS))


def test_reconcile_leaves_a_live_calls_hold_alone(settings, database, stub):
    """Reconcile run by a process with a shorter PROVIDER_TIMEOUT (an operator's
    shell, a redeploy) still waits for the deadline stored on the hold."""
    server = LiveServer(settings)  # PROVIDER_TIMEOUT 5
    gate = stub.behaviour.hold_answers()
    try:
        headers, url = _live_account(server)
        with ThreadPoolExecutor(1) as caller:
            pending = caller.submit(httpx.post, url, json={"content": "Hi"}, headers=headers, timeout=30)
            assert stub.wait_for_requests(1)
            wait_until(lambda: database.query(
                "SELECT now() - created_at > interval '1.2 seconds' FROM transactions WHERE type = 'hold'") == [(True,)])
            assert _reconcile({**settings, "PROVIDER_TIMEOUT": 0.5, "HOLD_GRACE_SECONDS": 0.5}) == "returned 0 holds\n"
            assert database.query("SELECT call_deadline > now(), call_deadline - created_at FROM transactions "
                                  "WHERE type = 'hold'")[0] == (True, timedelta(seconds=5))
            gate.set()
            response = pending.result()
    finally:
        gate.set()
        server.stop()
    assert response.status_code == 201, response.text
    assert Decimal(response.json()["cost"]) == cost(PROMPT_TOKENS, COMPLETION_TOKENS)
    assert_ledger_exact(database, cost(PROMPT_TOKENS, COMPLETION_TOKENS))


def test_a_hold_left_by_a_dead_worker_is_returned_while_the_service_runs(settings, database):
    """No restart, no operator: the workers' own reconcile returns it once its
    deadline and the grace are past, and only once."""
    server = LiveServer({**settings, "RECONCILE_INTERVAL": 0.5, "HOLD_GRACE_SECONDS": 0.5})
    try:
        headers, _ = _live_account(server)
        user_id = database.query("SELECT id FROM users")[0][0]
        # What a worker killed after its hold leaves behind: a hold whose call ends in 1 s.
        [(ok, hold_id)] = database.query(
            "SELECT ok, transaction_id FROM deduct_user_balance(%s, 0.75, 'Hold for a message', '{}', NULL, 1)",
            (user_id,))
        assert ok
        wait_until(lambda: database.query("SELECT held_balance FROM user_balance")[0][0] == 0)
        time.sleep(1.5)  # more runs of both workers: nothing is returned twice
        assert database.query("SELECT amount, metadata->>'kind' FROM transactions WHERE related_transaction_id = %s",
                              (hold_id,)) == [(Decimal("0.75"), "reconcile")]
        balance = httpx.get(f"{server.url}/api/v1/balance", headers=headers).json()
        assert (balance["available_balance"], balance["held_balance"]) == (format_money(DEPOSIT), "0.00")
    finally:
        server.stop()


def test_the_running_services_reconcile_reads_recent_holds_and_start_up_all(settings, database):
    [(user_id,)] = database.query("INSERT INTO users (email, username, password_hash) "
                                  "VALUES ('old@example.com', 'oldholds', 'x') RETURNING id")
    database.query("SELECT add_user_funds(%s, 5)", (user_id,))
    holds = [database.query("SELECT transaction_id FROM deduct_user_balance(%s, 1, 'h', '{}', NULL, 1)",
                            (user_id,))[0][0] for _ in range(2)]
    # One left an hour ago (while the database was down, say), one a few seconds ago.
    for hold_id, age in zip(holds, ("1 hour", "3 seconds")):
        database.query("UPDATE transactions SET created_at = now() - %s::interval, "
                       "call_deadline = now() - %s::interval + interval '1 second' WHERE id = %s", (age, age, hold_id))
    app = create_app({**settings, "PROVIDER_TIMEOUT": 1, "STREAM_TIMEOUT": 1, "HOLD_GRACE_SECONDS": 1,
                      "RECONCILE_INTERVAL": 1})
    try:
        with app.app_context():
            assert reconcile_holds(app.config, recent=True) == 1  # made within 1 + 1 + 3 × 1 s
            assert database.query("SELECT related_transaction_id FROM transactions WHERE type = 'release'") == [
                (holds[1],)]
            assert reconcile_holds(app.config) == 1  # start-up's run: the whole ledger
    finally:
        close_app(app)
    assert database.query("SELECT held_balance FROM user_balance WHERE user_id = %s", (user_id,)) == [(0,)]


def _reconcile(settings):
    app = create_app(settings)
    try:
        return app.test_cli_runner().invoke(args=["holds", "reconcile"]).output
    finally:
        close_app(app)


def _live_account(server):
    account = {"email": "ada@example.com", "password": "correct horse battery"}
    assert httpx.post(f"{server.url}/api/v1/auth/register", json=account | {"username": "ada"}).status_code == 201
    headers = bearer(httpx.post(f"{server.url}/api/v1/auth/login", json=account).json()["access_token"])
    assert httpx.post(f"{server.url}/api/v1/balance/funds", json={"amount": str(DEPOSIT)},
                      headers=headers).status_code == 201
    session = httpx.post(f"{server.url}{SESSIONS}", json={"model_id": MODEL}, headers=headers)
    assert session.status_code == 201
    return headers, f"{server.url}{SESSIONS}/{session.json()['id']}/messages"


# ------------------------------------------------- after the provider answered

def test_nul_in_the_reply_is_removed_and_the_call_billed(client, token, session_url, database, stub):
    stub.behaviour.reply = "Hello\x00 world\x00"
    response = client.post(session_url, json={"content": "Hi"}, headers=bearer(token))
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["assistant_message"]["content"] == "Hello world"
    assert database.query("SELECT content FROM chat_history WHERE role = 'assistant'") == [("Hello world",)]
    assert_ledger_exact(database, cost(PROMPT_TOKENS, COMPLETION_TOKENS))


@pytest.mark.parametrize("prompt_tokens, completion_tokens", [
    (99_999_999_999, COMPLETION_TOKENS), (PROMPT_TOKENS, 99_999_999_999), (2**63, 2**63)])
def test_absurd_usage_is_billed_within_the_hold(client, token, session_url, database, stub, caplog,
                                                prompt_tokens, completion_tokens):
    caplog.set_level(logging.WARNING)
    stub.behaviour.prompt_tokens, stub.behaviour.completion_tokens = prompt_tokens, completion_tokens
    response = client.post(session_url, json={"content": "Hi", "max_tokens": 100}, headers=bearer(token))
    assert response.status_code == 201, response.get_json()
    # Usage is believed up to what the call could use: the prompt's bound and max_tokens.
    billed_prompt, billed_completion = min(prompt_tokens, prompt_bound("Hi")), min(completion_tokens, 100)
    assert response.get_json()["usage"] == {"prompt_tokens": billed_prompt, "completion_tokens": billed_completion}
    charged = cost(billed_prompt, billed_completion)
    assert Decimal(response.get_json()["cost"]) == charged
    (hold, _), = holds_and_releases(database)
    assert charged <= hold
    assert_ledger_exact(database, charged)
    assert "above the call's bound" in caplog.text


def test_a_session_deleted_during_its_call_is_charged_and_keeps_nothing(app, client, token, session_url, database,
                                                                      stub):
    gate = stub.behaviour.hold_answers()
    with ThreadPoolExecutor(1) as caller:
        pending = caller.submit(app.test_client().post, session_url, json={"content": "Hi"}, headers=bearer(token))
        assert stub.wait_for_requests(1)
        assert client.delete(session_url.removesuffix("/messages"), headers=bearer(token)).status_code == 204
        gate.set()
        response = pending.result()
    error = assert_error(response, 404, "not_found")
    charged = cost(PROMPT_TOKENS, COMPLETION_TOKENS)
    assert error["details"] == {"charged": format_money(charged)}
    assert database.query("SELECT count(*) FROM chat_history") == [(0,)]
    assert_ledger_exact(database, charged)
    # The provider did the work: the model's usage counts it.
    assert database.query("SELECT sum(request_count), sum(prompt_tokens) FROM model_usage_stats") == [
        (1, PROMPT_TOKENS)]


REFUSALS = {
    "a trigger that raises": """
        CREATE FUNCTION refuse_history() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'chat history is closed for maintenance'; END $$;
        CREATE TRIGGER refuse_history BEFORE INSERT ON chat_history
            FOR EACH ROW EXECUTE FUNCTION refuse_history()""",
    "a revoked privilege": "REVOKE INSERT ON chat_history FROM app_user",
}


@pytest.mark.parametrize("refusal", REFUSALS.values(), ids=REFUSALS.keys())
def test_an_unforeseen_settle_failure_returns_the_hold(client, token, session_url, database, stub, caplog, refusal):
    caplog.set_level(logging.WARNING)
    database.query(refusal)  # as the owner: the database now refuses every settle
    response = client.post(session_url, json={"content": "Hi"}, headers=bearer(token))
    assert_error(response, 500, "internal_error")
    (hold, released), = holds_and_releases(database)
    assert released == hold
    assert_nothing_charged(database)
    (hold_id,), = database.query("SELECT id FROM transactions WHERE type = 'hold'")
    assert f"settling hold {hold_id} failed" in caplog.text
    assert "maintenance" not in caplog.text  # the driver's message stays out of the log


# ------------------------------------------------------- messages that help

def test_an_unreachable_provider_says_so_and_the_cause_is_logged(app_without_provider, token, session_url, database,
                                                                  caplog):
    caplog.set_level(logging.WARNING)
    response = app_without_provider.test_client().post(session_url, json={"content": "Hi"}, headers=bearer(token))
    error = assert_error(response, 502, "provider_error")
    assert "could not be reached (Connection refused)" in error["message"]
    assert error["details"] == {"provider": "openai"}
    assert "openai could not be reached (ConnectError: Connection refused)" in caplog.text
    assert HOUSE_KEY not in caplog.text
    assert_nothing_charged(database)


def test_a_short_balance_points_to_the_top_up(client, token, database):
    database.query("UPDATE models SET input_price_per_mtok = 1000000 WHERE id = %s", (MODEL,))
    session_id = client.post(SESSIONS, json={"model_id": MODEL}, headers=bearer(token)).get_json()["id"]
    response = client.post(f"{SESSIONS}/{session_id}/messages", json={"content": "Hi"}, headers=bearer(token))
    assert "POST /api/v1/balance/funds" in assert_error(response, 402, "insufficient_funds")["message"]
