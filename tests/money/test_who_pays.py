"""Who pays whom (SPEC §11): a call to a remote model uses the user's own key
(BYOK, charged BYOK_FEE_RATE × the catalog cost, rounded up) or else the house
key (charged the catalog cost); with neither it is refused before any hold.
The provider stubs record which key each call carried."""
from decimal import ROUND_CEILING, Decimal

import pytest

from tests.support import assert_error, bearer, new_session, send, user

OPENAI_HOUSE_KEY = "sk-house-openai-000000000000001"
USER_KEY = "sk-proj-users-own-key-0000000042"
MODEL = "openai/gpt-4o-mini"
INPUT_PRICE, OUTPUT_PRICE = Decimal("0.15"), Decimal("0.60")  # catalog.json, per million tokens
STEP = Decimal("1e-10")


@pytest.fixture
def settings(stubbed_settings):
    return {**stubbed_settings, "OPENAI_API_KEY": OPENAI_HOUSE_KEY, "BYOK_FEE_RATE": "0.333"}


def charge(prompt_tokens, completion_tokens, rate, prices=(INPUT_PRICE, OUTPUT_PRICE)):
    def part(tokens, price):
        return (tokens * price * Decimal(rate) / 1_000_000).quantize(STEP, rounding=ROUND_CEILING)
    return part(prompt_tokens, prices[0]) + part(completion_tokens, prices[1])


def ledger(database):
    return database.query("SELECT type, amount, metadata->>'key' FROM transactions WHERE type <> 'deposit' ORDER BY id")


def spent(database):
    return database.query("SELECT spent_balance, held_balance FROM user_balance")[0]


def store_key(client, token, provider="openai", key=USER_KEY):
    response = client.post("/api/v1/keys", json={"provider": provider, "api_key": key}, headers=bearer(token))
    assert response.status_code == 201


def test_without_a_key_of_ones_own_the_house_key_serves_at_the_catalog_price(client, database, openai_stub):
    token = user(client, funds="1")
    openai_stub.behaviour.prompt_tokens, openai_stub.behaviour.completion_tokens = 12, 34
    body = send(client, token, new_session(client, token, MODEL), "Hi", max_tokens=100).get_json()
    assert openai_stub.requests[0]["headers"]["Authorization"] == f"Bearer {OPENAI_HOUSE_KEY}"
    assert Decimal(body["cost"]) == charge(12, 34, 1)
    (_, hold, source), (_, release, _) = ledger(database)
    assert source == "house" and hold - release == charge(12, 34, 1)
    assert spent(database) == (charge(12, 34, 1), 0)


def test_a_key_of_ones_own_is_used_and_only_the_fee_is_charged_rounded_up(client, database, openai_stub):
    token = user(client, funds="1")
    store_key(client, token)
    openai_stub.behaviour.prompt_tokens, openai_stub.behaviour.completion_tokens = 7, 13
    body = send(client, token, new_session(client, token, MODEL), "Hi", max_tokens=100).get_json()
    assert openai_stub.requests[0]["headers"]["Authorization"] == f"Bearer {USER_KEY}"
    # 7 × 0.15 × 0.333 per million has 13 decimals: each part is rounded up to the ledger's 10.
    fee = charge(7, 13, "0.333")
    assert fee != (7 * INPUT_PRICE + 13 * OUTPUT_PRICE) * Decimal("0.333") / 1_000_000
    assert Decimal(body["cost"]) == fee
    assert Decimal(body["user_message"]["cost"]) + Decimal(body["assistant_message"]["cost"]) == fee
    (_, hold, source), (_, release, _) = ledger(database)
    assert source == "byok" and hold - release == fee
    # The hold was sized at the fee too: the most 100 tokens could cost at that rate.
    assert hold == charge(16 + 8 + 2, 100, "0.333")
    assert spent(database) == (fee, 0)


def test_the_hold_is_sized_at_the_rate_that_applies(client, database, openai_stub):
    """A balance too short for the catalog price still covers the BYOK fee."""
    token = user(client, funds="0.01")
    session_id = new_session(client, token, "openai/gpt-4.1")
    prices = (Decimal("2.00"), Decimal("8.00"))  # catalog.json
    full, fee = charge(16 + 8 + 2, 3000, 1, prices), charge(16 + 8 + 2, 3000, "0.333", prices)
    assert fee < Decimal("0.01") < full
    refused = assert_error(send(client, token, session_id, "Hi", max_tokens=3000), 402, "insufficient_funds")
    assert Decimal(refused["details"]["required"]) == full
    store_key(client, token)
    assert send(client, token, session_id, "Hi", max_tokens=3000).status_code == 201
    assert ledger(database)[0][1] == fee


def test_with_neither_key_the_call_is_refused_before_any_hold(client, database, anthropic_stub):
    token = user(client, funds="1")
    model_id = "anthropic/claude-3-5-haiku-20241022"
    refused = client.post("/api/v1/chat/sessions", json={"model_id": model_id}, headers=bearer(token))
    error = assert_error(refused, 422, "missing_api_key")
    assert error["details"] == {"provider": "anthropic", "model_id": model_id}
    assert client.get("/api/v1/chat/sessions", headers=bearer(token)).get_json()["sessions"] == []
    assert anthropic_stub.requests == [] and ledger(database) == []


def test_local_models_need_no_key_and_pay_the_catalog_price(client, database):
    token = user(client, funds="1")
    send(client, token, new_session(client, token, "local/echo"), "Hi")
    (_, _, source), _ = ledger(database)
    assert source == "local"


def test_the_service_terms_say_what_a_call_will_use(client):
    response = client.get("/api/v1/service")
    assert response.status_code == 200
    assert response.get_json() == {"self_topup_enabled": True, "max_topup": "1000.00", "byok_fee_rate": "0.333",
                                   "house_keys": ["openai"]}


def test_the_service_terms_follow_the_settings(stubbed_settings):
    from app import close_app, create_app
    app = create_app({**stubbed_settings, "SELF_TOPUP_ENABLED": False, "MAX_TOPUP": "250.5",
                      "OPENAI_API_KEY": OPENAI_HOUSE_KEY, "ANTHROPIC_API_KEY": "sk-ant-house-0000000000000001"})
    try:
        terms = app.test_client().get("/api/v1/service").get_json()
    finally:
        close_app(app)
    assert terms == {"self_topup_enabled": False, "max_topup": "250.50", "byok_fee_rate": "0.05",
                     "house_keys": ["openai", "anthropic"]}
    assert OPENAI_HOUSE_KEY not in str(terms)


def test_recommendations_count_a_house_key_as_callable(client):
    token = user(client)
    response = client.post("/api/v1/models/recommend", json={"task": "write an email", "limit": 50},
                           headers=bearer(token))
    reasons = {item["model"]["id"]: item["reasons"] for item in response.get_json()["recommendations"]}
    assert "served with this service's OpenAI key" in reasons[MODEL]
    assert "needs an Anthropic key you have not added" in reasons["anthropic/claude-3-5-haiku-20241022"]
