"""The bounds a chat call is billed within (SPEC §5, §12), each checked at its
exact figure: which limit refused a hold and says so, the prompt's upper bound
in UTF-8 bytes (the hold, and a usage at that bound billed in full), the context
window counting max_tokens, and when reconcile may return a hold: past its
deadline and the grace period, and, while the service runs, within a window
long enough for a stream's deadline."""
from decimal import Decimal

import pytest

from app import close_app, create_app
from app.api.formats import anthropic, openai
from app.billing import hold_call, reconcile_holds
from app.errors import KeySpendLimitReached
from app.extensions import db
from app.money import format_money
from app.providers import MESSAGE_OVERHEAD_TOKENS, REQUEST_OVERHEAD_TOKENS
from app.providers.conversation import ModelCall
from tests.money.test_billing_faults import holds_and_releases
from tests.support import bearer, cost, new_session, readme_ledger_query, user, user_id_of

HOUSE_KEY = "sk-house-bounds-0000000000000001"
GPT = "openai/gpt-4o-mini"
ECHO = "local/echo"
DEPOSIT = Decimal("10")


def prompt_bound(*contents):
    """The prompt's upper bound: per request, per message, and each message's UTF-8 bytes."""
    return REQUEST_OVERHEAD_TOKENS + sum(MESSAGE_OVERHEAD_TOKENS + len(content.encode()) for content in contents)


def assert_ledger_exact(database, spent):
    """The README check finds nothing, `spent` left the balance and nothing is held."""
    assert database.query(readme_ledger_query()) == []
    assert database.query("SELECT total_balance, spent_balance, held_balance FROM user_balance") == [
        (DEPOSIT, spent, 0)]
    assert all(released is not None for _, released in holds_and_releases(database))


@pytest.fixture
def settings(stubbed_settings):
    return {**stubbed_settings, "OPENAI_API_KEY": HOUSE_KEY, "PROVIDER_TIMEOUT": 5}


@pytest.fixture
def stub(openai_stub):
    return openai_stub


@pytest.fixture
def token(client):
    return user(client, funds=DEPOSIT)


def call(client, token, route, content, max_tokens):
    """One call of GPT with one user message: through a chat session, or /v1 in OpenAI's format."""
    if route == "session":
        return client.post(f"/api/v1/chat/sessions/{new_session(client, token, GPT)}/messages",
                           json={"content": content, "max_tokens": max_tokens}, headers=bearer(token))
    return client.post("/v1/chat/completions", headers=bearer(token), json={
        "model": GPT, "max_tokens": max_tokens, "messages": [{"role": "user", "content": content}]})


def billed(response, route):
    """(prompt tokens, completion tokens, cost) as the answer states them."""
    body = response.get_json()
    usage = body["usage"]
    if route == "session":
        return usage["prompt_tokens"], usage["completion_tokens"], Decimal(body["cost"])
    return usage["prompt_tokens"], usage["completion_tokens"], Decimal(usage["cost"])


ROUTES = ["session", "v1"]


# ------------------------------------------------- which limit refused the hold

@pytest.mark.parametrize("path, header, error_types", [
    ("/v1/chat/completions", "Authorization", openai.ERROR_TYPES),
    ("/v1/messages", "x-api-key", anthropic.ERROR_TYPES),
], ids=["openai", "anthropic"])
def test_a_keys_own_limit_is_named_without_a_daily_limit(client, token, database, path, header, error_types):
    """No daily_spend_limit on the user: the key's limit refused the hold, and the error says so alone."""
    limit = Decimal("0.00001")
    key = client.post("/api/v1/access-keys", headers=bearer(token), json={
        "name": "limited", "spend_limit": format_money(limit), "spend_limit_period": "day"}).get_json()
    max_tokens = 512
    hold = cost(ECHO, prompt_bound("Hi"), max_tokens)
    assert hold > limit
    secret = key["key"] if header == "x-api-key" else f"Bearer {key['key']}"
    response = client.post(path, headers={header: secret}, json={
        "model": ECHO, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "Hi"}]})
    assert response.status_code == 402, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["type"] == error_types[402]
    if path == "/v1/chat/completions":
        assert error["code"] == KeySpendLimitReached.code == "spend_limit_reached"
    message = error["message"]
    # These formats carry no details: the message names them.
    assert message == (f"{KeySpendLimitReached.message} "
                       f"(max_cost: {format_money(hold)}; access_key_spend_limit: {format_money(limit)})")
    assert "daily_spend_limit" not in message
    assert holds_and_releases(database) == []
    assert_ledger_exact(database, 0)


# ------------------------------------------------- the prompt's bound is in bytes

@pytest.mark.parametrize("route", ROUTES)
def test_the_prompt_bound_counts_utf8_bytes_and_a_usage_at_it_is_billed_in_full(client, token, database, stub,
                                                                               route):
    content, max_tokens = "€€€", 100  # 3 characters, 9 bytes
    bound = REQUEST_OVERHEAD_TOKENS + MESSAGE_OVERHEAD_TOKENS + 9
    assert len(content.encode()) == 9 and bound == prompt_bound(content)
    stub.behaviour.prompt_tokens, stub.behaviour.completion_tokens = bound, 7
    response = call(client, token, route, content, max_tokens)
    assert response.status_code in (200, 201), response.get_json()
    charged = cost(GPT, bound, 7)
    assert billed(response, route) == (bound, 7, charged)
    (hold, released), = holds_and_releases(database)
    assert hold == cost(GPT, bound, max_tokens)
    assert hold - released == charged
    assert_ledger_exact(database, charged)


# ------------------------------------------------- the context window holds max_tokens too

@pytest.mark.parametrize("route", ROUTES)
def test_the_context_window_must_hold_the_prompt_and_max_tokens(client, token, database, stub, route):
    database.query("UPDATE models SET context_window = 1000, max_output_tokens = 1000 WHERE id = %s", (GPT,))
    content = "x" * 100
    assert prompt_bound(content) + 950 > 1000 >= prompt_bound(content) + 500
    response = call(client, token, route, content, 950)
    assert response.status_code == 400, response.get_json()
    if route == "session":
        error = response.get_json()["error"]
        assert (error["code"], error["details"]) == (
            "validation_error", {"content": "is too long for this model's context window"})
    else:
        error = response.get_json()["error"]
        assert (error["code"], error["param"]) == ("validation_error", "messages")
    assert holds_and_releases(database) == [] and stub.requests == []
    assert_ledger_exact(database, 0)

    response = call(client, token, route, content, 500)
    assert response.status_code in (200, 201), response.get_json()
    assert len(stub.requests) == 1 and stub.requests[0]["body"]["max_tokens"] == 500
    charged = cost(GPT, 11, 7)  # the stub's usage
    assert billed(response, route)[2] == charged
    assert holds_and_releases(database)[0][0] == cost(GPT, prompt_bound(content), 500)
    assert_ledger_exact(database, charged)


# ------------------------------------------------- when a hold is stale

def open_hold(database, user_id, amount):
    [(ok, hold_id)] = database.query(
        "SELECT ok, transaction_id FROM deduct_user_balance(%s, %s, 'Hold for a call', '{}', NULL, 5)",
        (user_id, amount))
    assert ok
    return hold_id


def test_a_hold_is_stale_only_once_its_deadline_and_the_grace_are_past(app, client, token, database):
    user_id = user_id_of(database)
    recent, stale = open_hold(database, user_id, "0.25"), open_hold(database, user_id, "0.50")
    for hold_id, past in ((recent, "1 second"), (stale, "31 seconds")):
        database.query("UPDATE transactions SET call_deadline = now() - %s::interval WHERE id = %s", (past, hold_id))
    with app.app_context():
        assert [row["id"] for row in db.stale_holds(5, 30)] == [stale]
        for hold_id, amount in ((recent, Decimal("0.25")), (stale, Decimal("0.50"))):
            assert db.release_hold(user_id, hold_id, amount, "Returned", {})["ok"]
    assert_ledger_exact(database, 0)


def test_the_running_reconcile_reaches_a_streamed_hold_past_its_deadline(settings, token, database):
    """PROVIDER_TIMEOUT 5 s, STREAM_TIMEOUT 300 s, grace 30 s, a run every 10 s:
    a stream's hold is past its deadline and the grace only once it is more than
    330 s old, so the workers' window (made within 300 + 30 + 3 × 10 s) must reach it."""
    app = create_app({**settings, "PROVIDER_TIMEOUT": 5, "STREAM_TIMEOUT": 300, "HOLD_GRACE_SECONDS": 30,
                      "RECONCILE_INTERVAL": 10})
    user_id = user_id_of(database)
    try:
        with app.app_context():
            held = []
            for _ in range(2):  # what a worker killed mid-stream leaves behind
                with db.transaction(acting_user_id=user_id) as tx:
                    call = ModelCall(ECHO, [{"role": "user", "content": "Hi"}], 100, None, None, stream=True)
                    held.append(hold_call(user_id, call, {"max_tokens": "max_tokens", "prompt": "messages"}, tx=tx))
            within, older = (hold.id for hold in held)
            assert database.query("SELECT DISTINCT extract(epoch FROM call_deadline - created_at) FROM transactions"
                                  " WHERE type = 'hold'") == [(Decimal(300),)]
            # Made 345 s ago (deadline 45 s past), and 400 s ago: outside the window.
            for hold_id, age in ((within, 345), (older, 400)):
                database.query("UPDATE transactions SET created_at = created_at - make_interval(secs => %s), "
                               "call_deadline = call_deadline - make_interval(secs => %s) WHERE id = %s",
                               (age, age, hold_id))
            assert reconcile_holds(app.config, recent=True) == 1
            assert database.query("SELECT related_transaction_id, amount FROM transactions WHERE type = 'release'") \
                == [(within, held[0].amount)]
            assert reconcile_holds(app.config, recent=True) == 0  # once only
            assert reconcile_holds(app.config) == 1  # start-up's run: the whole ledger
    finally:
        close_app(app)
    assert_ledger_exact(database, 0)
