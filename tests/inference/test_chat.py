"""Chat sessions and billed messages (SPEC §5, §8; endpoints 12–16) against
provider stubs that are real HTTP servers on 127.0.0.1."""
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import ROUND_CEILING, Decimal

import httpx
import pytest

from app import create_app
from app.extensions import db
from app.providers import local_tokens
from tests.support import LiveServer, assert_error, bearer, login, new_session, register, send, user

SESSIONS = "/api/v1/chat/sessions"
OPENAI_KEY = "sk-proj-stubkey-0000000000001234"
ANTHROPIC_KEY = "sk-ant-api03-stubkey-000000005678"
HOUSE_KEY = "sk-house-stubkey-000000000001234"
BYOK_FEE_RATE = Decimal("0.05")  # the default
PRICES = {  # from catalog.json, per million tokens
    "local/echo": (Decimal("0.01"), Decimal("0.02")),
    "openai/gpt-4o-mini": (Decimal("0.15"), Decimal("0.60")),
    "anthropic/claude-3-5-haiku-20241022": (Decimal("0.80"), Decimal("4.00")),
}


@pytest.fixture
def settings(stubbed_settings):
    return stubbed_settings


@pytest.fixture
def token(client):
    return user(client, funds="10")


def store_keys(client, token):
    for provider, key in (("openai", OPENAI_KEY), ("anthropic", ANTHROPIC_KEY)):
        assert client.post("/api/v1/keys", json={"provider": provider, "api_key": key},
                           headers=bearer(token)).status_code == 201


def available(client, token):
    return Decimal(client.get("/api/v1/balance", headers=bearer(token)).get_json()["available_balance"])


def cost(model_id, prompt_tokens, completion_tokens, rate=None):
    """A call's charge: each part at the catalog price times the rate that
    applies, rounded up to the ledger's 10 decimals. The rate is BYOK's for a
    remote model (these tests' users hold keys) unless given."""
    if rate is None:
        rate = 1 if model_id.startswith("local/") else BYOK_FEE_RATE
    input_price, output_price = PRICES[model_id]

    def part(tokens, price):
        return (tokens * price * rate / 1_000_000).quantize(Decimal("1e-10"), rounding=ROUND_CEILING)
    return part(prompt_tokens, input_price) + part(completion_tokens, output_price)


def ledger(database):
    return database.query("SELECT type, amount FROM transactions WHERE type <> 'deposit' ORDER BY id")


# ----------------------------------------------------------------- sessions

def test_sessions_are_created_listed_and_paginated(client, token):
    ids = [new_session(client, token, title=f"s{n}") for n in range(5)]
    seen, cursor = [], None
    while True:
        page = client.get(SESSIONS, query_string={"limit": 2, **({"cursor": cursor} if cursor else {})},
                          headers=bearer(token)).get_json()
        seen += [session["id"] for session in page["sessions"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))


def test_a_session_needs_a_catalog_model(client, token, database):
    for model_id in ("openai/no-such-model", "local/retired"):
        if model_id == "local/retired":
            database.query("""INSERT INTO models (id, provider, name, context_window, max_output_tokens,
                              input_price_per_mtok, output_price_per_mtok, prices_as_of, is_active)
                              VALUES ('local/retired', 'local', 'Retired', 100, 10, 1, 1, '2026-01-01', false)""")
        response = client.post(SESSIONS, json={"model_id": model_id}, headers=bearer(token))
        assert "model_id" in assert_error(response, 400, "validation_error")["details"]
    assert database.query("SELECT count(*) FROM chat_sessions") == [(0,)]


def test_another_users_session_is_not_found(client, token, database):
    session_id = new_session(client, token)
    register(client, email="bob@example.com", username="bob")
    bob = login(client, email="bob@example.com")["access_token"]
    client.post("/api/v1/balance/funds", json={"amount": "5"}, headers=bearer(bob))
    assert_error(client.get(f"{SESSIONS}/{session_id}", headers=bearer(bob)), 404, "not_found")
    assert_error(send(client, bob, session_id), 404, "not_found")
    assert_error(client.delete(f"{SESSIONS}/{session_id}", headers=bearer(bob)), 404, "not_found")
    assert client.get(SESSIONS, headers=bearer(bob)).get_json()["sessions"] == []
    assert ledger(database) == []


def test_a_logged_out_token_cannot_send_or_be_charged(client, token, database, openai_stub):
    store_keys(client, token)
    session_id = new_session(client, token, "openai/gpt-4o-mini")
    balance = database.query("SELECT * FROM user_balance")
    assert client.post("/api/v1/auth/logout", headers=bearer(token)).status_code == 204
    assert_error(send(client, token, session_id), 401, "invalid_token")
    assert openai_stub.requests == [] and ledger(database) == []
    assert database.query("SELECT * FROM user_balance") == balance
    assert database.query("SELECT count(*) FROM chat_history") == [(0,)]
    # The same send with a token issued after the logout goes through.
    assert send(client, login(client)["access_token"], session_id).status_code == 201


@pytest.mark.parametrize("session_id", ["nope", "123", str(uuid.uuid4()), "' OR '1'='1"])
def test_malformed_or_unknown_session_ids_are_not_found(client, token, session_id):
    assert_error(client.get(f"{SESSIONS}/{session_id}", headers=bearer(token)), 404, "not_found")
    assert_error(send(client, token, session_id), 404, "not_found")


def test_deleting_a_session_deletes_its_messages_not_its_transactions(client, token, database):
    session_id = new_session(client, token)
    assert send(client, token, session_id).status_code == 201
    transactions = database.query("SELECT * FROM transactions ORDER BY id")
    assert client.delete(f"{SESSIONS}/{session_id}", headers=bearer(token)).status_code == 204
    assert database.query("SELECT count(*) FROM chat_history") == [(0,)]
    assert database.query("SELECT * FROM transactions ORDER BY id") == transactions


def test_messages_come_in_order_with_pages(client, token):
    session_id = new_session(client, token)
    for n in range(3):
        assert send(client, token, session_id, f"message {n}").status_code == 201
    first = client.get(f"{SESSIONS}/{session_id}", query_string={"limit": 4}, headers=bearer(token)).get_json()
    rest = client.get(f"{SESSIONS}/{session_id}", query_string={"cursor": first["next_cursor"]},
                      headers=bearer(token)).get_json()
    messages = first["messages"] + rest["messages"]
    assert rest["next_cursor"] is None
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3
    assert [m["content"] for m in messages[::2]] == ["message 0", "message 1", "message 2"]
    assert first["message_count"] == 6


# ------------------------------------------------------------ billed calls

def test_a_local_call_is_billed_exactly(client, token, database):
    session_id = new_session(client, token)
    before = available(client, token)
    response = send(client, token, session_id, "Count these words, please!")
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    usage = body["usage"]
    assert body["assistant_message"]["content"] == "You said : Count these words , please !"
    assert usage["completion_tokens"] == len(local_tokens(body["assistant_message"]["content"]))
    expected = cost("local/echo", usage["prompt_tokens"], usage["completion_tokens"])
    assert Decimal(body["cost"]) == expected > 0
    assert before - available(client, token) == expected
    assert Decimal(body["balance"]["available_balance"]) == before - expected
    assert body["balance"]["held_balance"] == "0.00"
    (hold_type, hold), (release_type, release) = ledger(database)
    assert (hold_type, release_type) == ("hold", "release") and hold - release == expected
    assert Decimal(body["user_message"]["cost"]) + Decimal(body["assistant_message"]["cost"]) == expected
    stats = database.query("SELECT sum(request_count), sum(prompt_tokens), sum(total_cost) FROM model_usage_stats")
    assert stats == [(1, usage["prompt_tokens"], expected)]


@pytest.mark.parametrize("model_id, stub_name", [("openai/gpt-4o-mini", "openai_stub"),
                                                 ("anthropic/claude-3-5-haiku-20241022", "anthropic_stub")])
def test_remote_calls_use_the_key_and_bill_the_reported_usage(client, token, database, model_id, stub_name, request):
    stub = request.getfixturevalue(stub_name)
    store_keys(client, token)
    stub.behaviour.prompt_tokens, stub.behaviour.completion_tokens = 21, 567
    session_id = new_session(client, token, model_id)
    before = available(client, token)
    body = send(client, token, session_id, "Hi", max_tokens=600, temperature=0.5).get_json()
    assert body["assistant_message"]["content"] == "Hello from the stub."
    assert body["usage"] == {"prompt_tokens": 21, "completion_tokens": 567}
    assert Decimal(body["cost"]) == cost(model_id, 21, 567) == before - available(client, token)
    sent, = stub.requests
    assert sent["body"]["model"] == model_id.split("/", 1)[1]
    assert sent["body"]["messages"] == [{"role": "user", "content": "Hi"}]
    assert sent["body"]["max_tokens"] == 600 and sent["body"]["temperature"] == 0.5
    if stub_name == "openai_stub":
        assert sent["headers"]["Authorization"] == f"Bearer {OPENAI_KEY}"
    else:
        assert sent["headers"]["x-api-key"] == ANTHROPIC_KEY
        assert sent["headers"]["anthropic-version"] == "2023-06-01"


def test_the_history_goes_to_the_provider(client, token, openai_stub):
    store_keys(client, token)
    session_id = new_session(client, token, "openai/gpt-4o-mini")
    send(client, token, session_id, "first")
    send(client, token, session_id, "second")
    assert openai_stub.requests[-1]["body"]["messages"] == [
        {"role": "user", "content": "first"}, {"role": "assistant", "content": "Hello from the stub."},
        {"role": "user", "content": "second"}]


def test_the_history_is_trimmed_oldest_first_to_the_context_window(client, token, database, openai_stub):
    database.query("""INSERT INTO models (id, provider, name, context_window, max_output_tokens,
                      input_price_per_mtok, output_price_per_mtok, prices_as_of)
                      VALUES ('openai/tiny', 'openai', 'Tiny', 200, 20, 1, 1, '2026-01-01')""")
    store_keys(client, token)
    session_id = new_session(client, token, "openai/tiny")
    for n in range(6):
        assert send(client, token, session_id, f"turn {n} " + "x" * 20, max_tokens=20).status_code == 201
    sent = openai_stub.requests[-1]["body"]["messages"]
    assert sent[-1]["content"].startswith("turn 5")
    assert sent[0]["content"].startswith("turn ") and not sent[0]["content"].startswith("turn 0")
    budget = 200 - 20 - 16
    assert sum(len(m["content"].encode()) + 8 for m in sent) <= budget
    assert_error(send(client, token, session_id, "y" * 300, max_tokens=20), 400, "validation_error")


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 503])
def test_a_provider_error_returns_the_hold_and_leaves_history_alone(client, token, database, openai_stub, status):
    """A refusal of the request itself (400, 404) keeps its status and the
    provider's message; any other failure is the provider's: 502."""
    store_keys(client, token)
    session_id = new_session(client, token, "openai/gpt-4o-mini")
    before = available(client, token)
    openai_stub.behaviour.status = status
    if status in (400, 404):
        error = assert_error(send(client, token, session_id), status, "provider_rejected_request")
        assert error["message"] == "stub error"
    else:
        error = assert_error(send(client, token, session_id), 502, "provider_error")
    assert error["details"] == {"provider": "openai", "provider_status": status}
    _assert_nothing_charged(client, token, database, before)


def test_a_provider_timeout_returns_the_hold(client, token, database, openai_stub):
    store_keys(client, token)
    session_id = new_session(client, token, "openai/gpt-4o-mini")
    before = available(client, token)
    openai_stub.behaviour.stall_seconds = 1.5
    assert_error(send(client, token, session_id), 504, "provider_timeout")
    _assert_nothing_charged(client, token, database, before)


def test_a_garbled_reply_returns_the_hold(client, token, database, anthropic_stub):
    store_keys(client, token)
    session_id = new_session(client, token, "anthropic/claude-3-5-haiku-20241022")
    before = available(client, token)
    anthropic_stub.behaviour.garbled = True
    assert_error(send(client, token, session_id), 502, "provider_error")
    _assert_nothing_charged(client, token, database, before)


def _assert_nothing_charged(client, token, database, before):
    assert available(client, token) == before
    (_, hold), (_, release) = ledger(database)
    assert hold == release
    assert database.query("SELECT count(*), sum(message_count) FROM chat_history, chat_sessions") in ([(0, None)],)
    assert database.query("SELECT message_count, total_cost FROM chat_sessions") == [(0, Decimal(0))]


def test_a_reply_without_usage_is_billed_at_the_hold(client, token, database, openai_stub):
    store_keys(client, token)
    session_id = new_session(client, token, "openai/gpt-4o-mini")
    before = available(client, token)
    openai_stub.behaviour.with_usage = False
    body = send(client, token, session_id, "Hi", max_tokens=100).get_json()
    (_, hold), (_, release) = ledger(database)
    assert release == 0 and Decimal(body["cost"]) == hold == before - available(client, token)


def test_usage_above_the_bound_is_charged_no_more_than_the_hold(client, token, database, openai_stub):
    store_keys(client, token)
    session_id = new_session(client, token, "openai/gpt-4o-mini")
    openai_stub.behaviour.prompt_tokens = 10_000_000
    body = send(client, token, session_id, "Hi", max_tokens=100).get_json()
    (_, hold), _ = ledger(database)
    # The prompt is billed at its bound (16 + 8 + 2 bytes), never above; the hold covers it.
    assert Decimal(body["cost"]) == cost("openai/gpt-4o-mini", 26, 7) <= hold


def test_a_short_balance_is_refused_before_any_call(client, token, database, openai_stub):
    store_keys(client, token)
    database.query("""INSERT INTO models (id, provider, name, context_window, max_output_tokens,
                      input_price_per_mtok, output_price_per_mtok, prices_as_of)
                      VALUES ('openai/pricey', 'openai', 'Pricey', 100000, 50000, 100000, 100000, '2026-01-01')""")
    session_id = new_session(client, token, "openai/pricey")
    error = assert_error(send(client, token, session_id, max_tokens=50000), 402, "insufficient_funds")
    assert Decimal(error["details"]["required"]) > Decimal(error["details"]["available"]) == 10
    assert openai_stub.requests == [] and ledger(database) == []


def test_a_missing_key_is_refused_before_any_hold(client, token, database, openai_stub):
    error = assert_error(client.post(SESSIONS, json={"model_id": "openai/gpt-4o-mini"}, headers=bearer(token)),
                         422, "missing_api_key")
    assert error["details"] == {"provider": "openai", "model_id": "openai/gpt-4o-mini"}
    assert database.query("SELECT count(*) FROM chat_sessions") == [(0,)]
    # A session whose key was deleted since: its message is refused before any hold.
    store_keys(client, token)
    session_id = new_session(client, token, "openai/gpt-4o-mini")
    for key in client.get("/api/v1/keys", headers=bearer(token)).get_json()["keys"]:
        assert client.delete(f"/api/v1/keys/{key['id']}", headers=bearer(token)).status_code == 204
    assert_error(send(client, token, session_id), 422, "missing_api_key")
    assert openai_stub.requests == [] and ledger(database) == []


BAD_MESSAGES = {
    "no content": {}, "empty": {"content": ""}, "number": {"content": 5}, "null": {"content": None},
    "NUL": {"content": "a\x00b"}, "huge": {"content": "x" * 100_001},
    "max_tokens 0": {"content": "hi", "max_tokens": 0}, "max_tokens negative": {"content": "hi", "max_tokens": -1},
    "max_tokens bool": {"content": "hi", "max_tokens": True}, "max_tokens text": {"content": "hi", "max_tokens": "5"},
    "max_tokens fraction": {"content": "hi", "max_tokens": 1.5},
    "max_tokens above the model's": {"content": "hi", "max_tokens": 513},
    "temperature high": {"content": "hi", "temperature": 2.5}, "temperature bool": {"content": "hi", "temperature": True},
    "temperature text": {"content": "hi", "temperature": "hot"},
    "cost field": {"content": "hi", "cost": "0"}, "model field": {"content": "hi", "model_id": "openai/gpt-4o"},
}


@pytest.mark.parametrize("body", BAD_MESSAGES.values(), ids=BAD_MESSAGES.keys())
def test_bad_messages_are_refused_and_move_no_money(client, token, database, body):
    session_id = new_session(client, token)
    response = client.post(f"{SESSIONS}/{session_id}/messages", json=body, headers=bearer(token))
    assert_error(response, 400, "validation_error")
    assert ledger(database) == [] and database.query("SELECT count(*) FROM chat_history") == [(0,)]


def test_a_retried_send_is_charged_once_and_replays_the_answer(client, token, database, openai_stub):
    store_keys(client, token)
    session_id = new_session(client, token, "openai/gpt-4o-mini")
    headers = {**bearer(token), "Idempotency-Key": "send-1"}
    url = f"{SESSIONS}/{session_id}/messages"
    first = client.post(url, json={"content": "Hi"}, headers=headers)
    again = client.post(url, json={"content": "Hi"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.get_data() == first.get_data() and again.headers["Idempotent-Replayed"] == "true"
    assert len(openai_stub.requests) == 1
    assert [row[0] for row in ledger(database)] == ["hold", "release"]
    assert_error(client.post(url, json={"content": "Bye"}, headers=headers), 422, "idempotency_key_reused")


def test_a_failed_send_is_not_kept_for_its_key(client, token, openai_stub):
    store_keys(client, token)
    session_id = new_session(client, token, "openai/gpt-4o-mini")
    headers = {**bearer(token), "Idempotency-Key": "send-1"}
    url = f"{SESSIONS}/{session_id}/messages"
    openai_stub.behaviour.status = 500
    assert client.post(url, json={"content": "Hi"}, headers=headers).status_code == 502
    openai_stub.behaviour.status = 200
    assert client.post(url, json={"content": "Hi"}, headers=headers).status_code == 201


# ------------------------------------------------------ real server process

def _live_account(server, amount):
    """A funded user of `server`, served with its house key at the catalog price, and a session's URL."""
    account = {"email": "ada@example.com", "password": "correct horse battery"}
    httpx.post(f"{server.url}/api/v1/auth/register", json=account | {"username": "ada"})
    headers = bearer(httpx.post(f"{server.url}/api/v1/auth/login", json=account).json()["access_token"])
    httpx.post(f"{server.url}/api/v1/balance/funds", json={"amount": amount}, headers=headers)
    session = httpx.post(f"{server.url}{SESSIONS}", json={"model_id": "openai/gpt-4o-mini"}, headers=headers).json()
    return headers, f"{server.url}{SESSIONS}/{session['id']}/messages"


def test_parallel_sends_never_overspend(settings, database, openai_stub):
    server = LiveServer({**settings, "PROVIDER_TIMEOUT": 10, "OPENAI_API_KEY": HOUSE_KEY})
    try:
        # Each hold is (16 + 3 + 8) × 0.15 + 16000 × 0.60 per million ≈ 0.0096: five fit in 0.05.
        headers, url = _live_account(server, "0.05")
        openai_stub.behaviour.stall_seconds = 0.5
        openai_stub.behaviour.prompt_tokens, openai_stub.behaviour.completion_tokens = 20, 5000
        start = threading.Barrier(16)

        def post(_):
            start.wait()
            return httpx.post(url, json={"content": "Hi!", "max_tokens": 16000}, headers=headers, timeout=30)

        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(post, range(16)))
    finally:
        server.stop()
    hold, charge = cost("openai/gpt-4o-mini", 16 + 3 + 8, 16000, rate=1), cost("openai/gpt-4o-mini", 20, 5000, rate=1)
    statuses = [response.status_code for response in responses]
    assert set(statuses) == {201, 402}, statuses
    sent = statuses.count(201)
    # Each call takes at most one hold's worth at any moment: a 402 needs five others in flight or charged.
    assert sent >= 5
    for refused in (response.json()["error"] for response in responses if response.status_code == 402):
        assert refused["code"] == "insufficient_funds"
        assert Decimal(refused["details"]["required"]) == hold > Decimal(refused["details"]["available"])
    assert [Decimal(r.json()["cost"]) for r in responses if r.status_code == 201] == [charge] * sent
    assert database.query("SELECT total_balance, spent_balance, held_balance FROM user_balance") == [
        (Decimal("0.05"), sent * charge, 0)]
    assert sorted(ledger(database)) == sorted([("hold", hold), ("release", hold - charge)] * sent)


def test_a_hold_left_by_a_killed_server_is_returned_exactly_once(settings, database, openai_stub):
    settings = {**settings, "PROVIDER_TIMEOUT": 2, "HOLD_GRACE_SECONDS": 1, "OPENAI_API_KEY": HOUSE_KEY}
    server = LiveServer(settings)
    headers, url = _live_account(server, "5")
    openai_stub.behaviour.stall_seconds = 30
    caller = ThreadPoolExecutor(1)
    pending = caller.submit(httpx.post, url, json={"content": "Hi"}, headers=headers, timeout=60)
    deadline = time.monotonic() + 10
    while not database.query("SELECT 1 FROM transactions WHERE type = 'hold'") and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill()
    with pytest.raises(httpx.HTTPError):
        pending.result()
    caller.shutdown()
    (hold_amount,), = database.query("SELECT amount FROM transactions WHERE type = 'hold'")
    assert database.query("SELECT available_balance FROM user_with_balance") == [(Decimal(5) - hold_amount,)]

    time.sleep(3.2)  # older than PROVIDER_TIMEOUT + HOLD_GRACE_SECONDS
    openai_stub.behaviour.stall_seconds = 0
    LiveServer(settings).stop()  # start-up reconciles
    app = create_app(settings)
    assert app.test_cli_runner().invoke(args=["holds", "reconcile"]).output == "returned 0 holds\n"
    with app.app_context():
        db.close()
    assert database.query("SELECT type, amount FROM transactions WHERE type <> 'deposit' ORDER BY id") == [
        ("hold", hold_amount), ("release", hold_amount)]
    assert database.query("SELECT available_balance, held_balance FROM user_with_balance") == [(Decimal(5), 0)]


def test_a_chat_with_a_reasoning_model_asks_for_max_completion_tokens(client, token, database, openai_stub):
    """OpenAI's reasoning models refuse max_tokens: a chat, which asks for no
    reasoning of its own, still calls them as reasoning models."""
    store_keys(client, token)
    session_id = new_session(client, token, "openai/o4-mini")
    assert send(client, token, session_id, "Hi", max_tokens=600).status_code == 201
    sent, = openai_stub.requests
    assert sent["body"]["max_completion_tokens"] == 600 and "max_tokens" not in sent["body"]
    assert "reasoning_effort" not in sent["body"]
