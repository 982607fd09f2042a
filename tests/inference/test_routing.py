"""Routing through the service under gunicorn (one worker, so that its key
pools are one), with OpenAI-format stubs at base URLs of their own as vLLM or
a second vendor would be, a provider at a port where nothing listens, and the
Anthropic stub for a fallback model of the other format: what moves a call on
to the next deployment or model and what does not, retries and Retry-After,
a key pool losing a refused key, the `models` list, streams, and billing once
for the model that served, at its price."""
import json
import socket
import time
from decimal import Decimal

import httpx
import pytest

from tests.conftest import clean_database
from tests.sdk_clients import assert_charged_exactly, ledger
from tests.stubs import OpenAIStub
from tests.support import (HOUSE_ANTHROPIC, LiveServer, add_models, cost, live_service, live_user, openai_provider,
                           providers_file)

LLAMA, DEAD, SLOW, SOLO, KEYED = "primary/llama", "dead/llama", "slow/llama", "solo/llama", "keyed/llama"
PREMIUM = "secondary/premium"
CHAIN = "llama-then-sonnet"  # an alias list
TINY = "solo/tiny"  # a context window too small for the calls here
SONNET = "anthropic/claude-sonnet-4-20250514"
LLAMA_PRICES, PREMIUM_PRICES = (Decimal("0.10"), Decimal("0.20")), (Decimal("1.00"), Decimal("2.00"))
KEYS = {"PRIMARY_KEY": "sk-primary-0000000001", "SECONDARY_KEY": "sk-secondary-00000001",
        "DEAD_KEY": "sk-dead-000000000001", "SLOW_KEY": "sk-slow-000000000001", "SOLO_KEY": "sk-solo-000000000001",
        "KEYED_KEY_A": "sk-keyed-a-000000001", "KEYED_KEY_B": "sk-keyed-b-000000001"}
PROMPT = "Tell me about llamas, please. " * 3  # room for the stubs' 11 prompt tokens


def model(model_id, prices, *deployments):
    provider = model_id.split("/", 1)[0]
    return {"id": model_id, "provider": provider, "name": model_id, "context_window": 8192,
            "max_output_tokens": 1024, "input_price_per_mtok": str(prices[0]), "output_price_per_mtok": str(prices[1]),
            "prices_as_of": "2026-12-07",
            "deployments": [{"provider": name, "model": upstream} for name, upstream in deployments]}


def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def stubs_by_name():
    stubs = {name: OpenAIStub() for name in ("primary", "secondary", "slow", "solo", "keyed")}
    stubs["keyed"].authorised = lambda headers: headers.get("Authorization") == f"Bearer {KEYS['KEYED_KEY_B']}"
    yield stubs
    for stub in stubs.values():
        stub.stop()


@pytest.fixture(scope="module")
def server(pg_server, template_db, anthropic_stub, stubs_by_name, tmp_path_factory):
    declared = providers_file(
        tmp_path_factory.mktemp("routing"),
        openai_provider("primary", f"{stubs_by_name['primary'].url}/v1", "PRIMARY_KEY"),
        openai_provider("secondary", f"{stubs_by_name['secondary'].url}/v1", "SECONDARY_KEY"),
        openai_provider("dead", f"http://127.0.0.1:{closed_port()}/v1", "DEAD_KEY"),
        openai_provider("slow", f"{stubs_by_name['slow'].url}/v1", "SLOW_KEY", timeout=0.5),
        openai_provider("solo", f"{stubs_by_name['solo'].url}/v1", "SOLO_KEY"),
        openai_provider("keyed", f"{stubs_by_name['keyed'].url}/v1", "KEYED_KEY_A", "KEYED_KEY_B"))
    with clean_database(pg_server, template_db) as database, live_service(
            database, workers=1, PROVIDERS_FILE=str(declared), PROVIDER_TIMEOUT=5, PROVIDER_RETRIES=1,
            ANTHROPIC_BASE_URL=f"{anthropic_stub.url}/v1", ANTHROPIC_API_KEY=HOUSE_ANTHROPIC, **KEYS) as live:
        add_models(database.owner_url, model(LLAMA, LLAMA_PRICES, ("primary", "llama"), ("secondary", "llama-b")),
                   model(DEAD, LLAMA_PRICES, ("dead", "llama"), ("secondary", "llama-b")),
                   model(SLOW, LLAMA_PRICES, ("slow", "llama"), ("secondary", "llama-b")),
                   model(SOLO, LLAMA_PRICES), model(KEYED, LLAMA_PRICES), model(PREMIUM, PREMIUM_PRICES),
                   {**model(TINY, LLAMA_PRICES, ("solo", "tiny")), "context_window": 40, "max_output_tokens": 40},
                   alias_lists=[{"alias": CHAIN, "models": [LLAMA, SONNET]}])
        yield live


@pytest.fixture
def stubs(stubs_by_name, anthropic_stub):
    for stub in (*stubs_by_name.values(), anthropic_stub):
        stub.reset()
    return {**stubs_by_name, "anthropic": anthropic_stub}


@pytest.fixture
def account(server):
    headers, user_id = live_user(server.url, "10")
    key = httpx.post(f"{server.url}/api/v1/access-keys", json={"name": "routing"}, headers=headers).json()
    return {"key": key["key"], "user_id": user_id, "headers": headers}


def chat(server, account, model_id, stream=False, headers=None, **extra):
    return httpx.post(f"{server.url}/v1/chat/completions",
                      headers={"Authorization": f"Bearer {account['key']}", **(headers or {})},
                      json={"model": model_id, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 50,
                            "stream": stream, **extra}, timeout=30)


def priced(prices, prompt_tokens=11, completion_tokens=7):
    return (prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1_000_000


def served_charge(server, account):
    entries = httpx.get(f"{server.url}/api/v1/balance/transactions", headers=account["headers"]).json()
    return next(entry["charge"] for entry in entries["transactions"] if entry["charge"] is not None)


# ----------------------------------------------------------------- what moves on

@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_a_failing_deployment_hands_the_call_to_the_next(server, account, stubs, status):
    stubs["primary"].behaviour.status = status
    response = chat(server, account, LLAMA)
    assert response.status_code == 200, response.text
    assert response.headers["X-Served-By"] == "secondary" and response.json()["model"] == LLAMA
    assert len(stubs["primary"].requests) == 1 and stubs["secondary"].requests[0]["body"]["model"] == "llama-b"
    assert stubs["secondary"].requests[0]["headers"]["Authorization"] == f"Bearer {KEYS['SECONDARY_KEY']}"
    assert (served_charge(server, account)["model_id"], served_charge(server, account)["provider"]) == (
        LLAMA, "secondary")
    assert_charged_exactly(server, account["user_id"], priced(LLAMA_PRICES))


def test_a_refused_connection_hands_the_call_on(server, account, stubs):
    response = chat(server, account, DEAD)
    assert response.status_code == 200 and response.headers["X-Served-By"] == "secondary"
    assert_charged_exactly(server, account["user_id"], priced(LLAMA_PRICES))


def test_no_first_byte_within_the_providers_timeout_hands_the_call_on(server, account, stubs):
    stubs["slow"].behaviour.stall_seconds = 2
    began = time.monotonic()
    response = chat(server, account, SLOW)
    assert response.status_code == 200 and response.headers["X-Served-By"] == "secondary"
    assert time.monotonic() - began < 2, "the slow deployment was waited for past its timeout"
    assert_charged_exactly(server, account["user_id"], priced(LLAMA_PRICES))


# ----------------------------------------------------------------- what does not

@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_a_providers_refusal_of_the_request_reaches_the_client_as_it_is(server, account, stubs, status):
    stubs["primary"].behaviour.status = status
    stubs["primary"].behaviour.error_message = "messages[0]: unsupported thing"
    response = chat(server, account, LLAMA)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == "provider_rejected_request"
    assert error["message"] == "messages[0]: unsupported thing (provider: primary)"  # the provider's own words
    assert stubs["secondary"].requests == []
    assert_charged_exactly(server, account["user_id"], 0)


def test_a_users_own_key_is_never_swapped_for_a_house_key_unless_they_allow_it(server, account, stubs):
    stored = httpx.post(f"{server.url}/api/v1/keys", json={"provider": "primary", "api_key": "sk-users-own-000001"},
                        headers=account["headers"])
    assert stored.status_code == 201
    stubs["primary"].behaviour.status = 503
    assert chat(server, account, LLAMA).status_code == 502
    assert stubs["secondary"].requests == [] and len(stubs["primary"].requests) == 2  # one try, one retry
    assert_charged_exactly(server, account["user_id"], 0)

    allowed = httpx.put(f"{server.url}/api/v1/preferences", json={"house_key_fallback": True},
                        headers=account["headers"])
    assert allowed.status_code == 200
    response = chat(server, account, LLAMA)
    assert response.status_code == 200 and response.headers["X-Served-By"] == "secondary"
    assert_charged_exactly(server, account["user_id"], priced(LLAMA_PRICES))  # the house key's full price


# ----------------------------------------------------------------- retries and key pools

def test_a_429s_retry_after_is_waited_before_the_next_round(server, account, stubs):
    stubs["solo"].behaviour.script = [{"status": 429, "retry_after": 2}]
    began = time.monotonic()
    response = chat(server, account, SOLO)
    assert response.status_code == 200
    assert time.monotonic() - began >= 2 and len(stubs["solo"].requests) == 2
    assert_charged_exactly(server, account["user_id"], priced(LLAMA_PRICES))


def test_a_refused_house_key_leaves_the_pool(server, account, stubs):
    for _ in range(4):
        assert chat(server, account, KEYED).status_code == 200
    used = [request["headers"]["Authorization"] for request in stubs["keyed"].requests]
    assert used.count(f"Bearer {KEYS['KEYED_KEY_A']}") <= 1, "a refused key was used again"
    assert used[-3:] == [f"Bearer {KEYS['KEYED_KEY_B']}"] * 3
    assert_charged_exactly(server, account["user_id"], 4 * priced(LLAMA_PRICES))


def test_a_refused_house_keys_last_failure_is_shown_by_every_instance(server, account, stubs):
    assert chat(server, account, KEYED).status_code == 200  # KEYED_KEY_A refused here, or by an earlier call
    other = LiveServer(server.settings, workers=2)  # an instance whose pools never met the refusal
    try:
        headers, user_id = live_user(other.url, "1")
        server.database.query("INSERT INTO admins (user_id) VALUES (%s)", (user_id,))
        report = httpx.get(f"{other.url}/api/v1/admin/house-keys", headers=headers)
    finally:
        other.stop()
    assert report.status_code == 200, report.text
    assert KEYS["KEYED_KEY_A"] not in report.text and KEYS["KEYED_KEY_B"] not in report.text
    keys = {key["setting"]: key for provider in report.json()["providers"] if provider["provider"] == "keyed"
            for key in provider["keys"]}
    refused, used = keys["KEYED_KEY_A"], keys["KEYED_KEY_B"]
    assert refused["state"] == "ready"  # the answering worker's own pool
    assert refused["last_failure_status"] == 401 and refused["failures"] >= 1 and refused["last_failed_at"]
    assert (used["last_failure_status"], used["last_failed_at"], used["failures"]) == (None, None, 0)


# ----------------------------------------------------------------- the `models` list

def test_a_call_falls_back_to_the_next_model_it_names_and_is_billed_at_that_models_price(server, account, stubs):
    stubs["primary"].behaviour.status = stubs["secondary"].behaviour.status = 500
    stubs["anthropic"].behaviour.prompt_tokens, stubs["anthropic"].behaviour.completion_tokens = 11, 7
    response = chat(server, account, LLAMA, models=[SONNET])
    assert response.status_code == 200, response.text
    assert (response.json()["model"], response.headers["X-Served-By"]) == (SONNET, "anthropic")
    assert stubs["anthropic"].requests[0]["body"]["model"] == "claude-sonnet-4-20250514"
    held, = [amount for kind, amount, *_ in ledger(server, account["user_id"])[2] if kind == "hold"]
    assert held >= cost(SONNET, 11, 50) > priced(LLAMA_PRICES, 11, 50)  # the dearest candidate's hold
    assert_charged_exactly(server, account["user_id"], cost(SONNET, 11, 7))


def test_a_fallback_too_small_for_the_call_is_left_out(server, account, stubs):
    stubs["primary"].behaviour.status = stubs["secondary"].behaviour.status = 500
    stubs["anthropic"].behaviour.prompt_tokens, stubs["anthropic"].behaviour.completion_tokens = 11, 7
    response = chat(server, account, LLAMA, models=[TINY, SONNET])
    assert response.status_code == 200 and response.json()["model"] == SONNET
    assert stubs["solo"].requests == []
    assert_charged_exactly(server, account["user_id"], cost(SONNET, 11, 7))


def test_a_call_that_fell_back_is_billed_once_under_its_idempotency_key(server, account, stubs):
    stubs["primary"].behaviour.status = 503
    headers = {"Idempotency-Key": "fell-back-once"}
    first = chat(server, account, LLAMA, headers=headers)
    again = chat(server, account, LLAMA, headers=headers)
    assert first.status_code == again.status_code == 200 and first.headers["X-Served-By"] == "secondary"
    assert again.headers["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert len(stubs["primary"].requests) == 1 and len(stubs["secondary"].requests) == 1
    assert_charged_exactly(server, account["user_id"], priced(LLAMA_PRICES))


@pytest.mark.parametrize("extra, status, param", [
    ({"models": ["no/such-model"]}, 404, "models.0"),
    ({"models": [PREMIUM] * 6}, 400, "models"),
], ids=["an unknown model", "too many"])
def test_a_bad_models_list_is_refused_by_name(server, account, stubs, extra, status, param):
    response = chat(server, account, LLAMA, **extra)
    assert response.status_code == status
    assert param in json.dumps(response.json()["error"])
    assert stubs["primary"].requests == []
    assert_charged_exactly(server, account["user_id"], 0)


def test_every_model_named_must_be_allowed_to_the_access_key(server, account, stubs):
    key = httpx.post(f"{server.url}/api/v1/access-keys", json={"name": "narrow", "allowed_models": [LLAMA]},
                     headers=account["headers"]).json()
    response = chat(server, {**account, "key": key["key"]}, LLAMA, models=[PREMIUM])
    assert response.status_code == 403 and stubs["primary"].requests == []


# ----------------------------------------------------------------- alias lists

def test_an_alias_list_is_served_by_its_first_model_and_falls_back_along_it(server, account, stubs):
    served = chat(server, account, CHAIN)
    assert served.status_code == 200 and served.json()["model"] == LLAMA
    stubs["primary"].behaviour.status = stubs["secondary"].behaviour.status = 500
    stubs["anthropic"].behaviour.prompt_tokens, stubs["anthropic"].behaviour.completion_tokens = 11, 7
    fallen = chat(server, account, CHAIN)
    assert fallen.status_code == 200 and (fallen.json()["model"], fallen.headers["X-Served-By"]) == (SONNET, "anthropic")
    assert_charged_exactly(server, account["user_id"], priced(LLAMA_PRICES) + cost(SONNET, 11, 7))


def test_an_alias_list_may_be_a_fallback_in_models(server, account, stubs):
    stubs["solo"].behaviour.status = 503
    response = chat(server, account, SOLO, models=[CHAIN])
    assert response.status_code == 200 and response.json()["model"] == LLAMA
    assert_charged_exactly(server, account["user_id"], priced(LLAMA_PRICES))


def test_an_alias_list_leaves_out_what_the_access_key_may_not_call(server, account, stubs):
    """A key allowed Sonnet alone is served by it, the list's first model
    never tried; a key allowed neither gets 403 and nothing is held."""
    def key_for(*allowed):
        return httpx.post(f"{server.url}/api/v1/access-keys", json={"name": "listed", "allowed_models": list(allowed)},
                          headers=account["headers"]).json()["key"]
    stubs["anthropic"].behaviour.prompt_tokens, stubs["anthropic"].behaviour.completion_tokens = 11, 7
    response = chat(server, {**account, "key": key_for(SONNET)}, CHAIN)
    assert response.status_code == 200 and response.json()["model"] == SONNET
    assert stubs["primary"].requests == stubs["secondary"].requests == []
    refused = chat(server, {**account, "key": key_for(PREMIUM)}, CHAIN)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    assert_charged_exactly(server, account["user_id"], cost(SONNET, 11, 7))


def test_an_alias_list_answers_in_each_format(server, account, stubs):
    headers = {"Authorization": f"Bearer {account['key']}"}
    messages = httpx.post(f"{server.url}/v1/messages", headers=headers, timeout=30, json={
        "model": CHAIN, "max_tokens": 50, "messages": [{"role": "user", "content": PROMPT}]})
    responses = httpx.post(f"{server.url}/v1/responses", headers=headers, timeout=30, json={
        "model": CHAIN, "max_output_tokens": 50, "input": PROMPT})
    assert (messages.status_code, messages.json()["model"]) == (200, LLAMA)
    assert (responses.status_code, responses.json()["model"]) == (200, LLAMA)
    assert_charged_exactly(server, account["user_id"], 2 * priced(LLAMA_PRICES))


# ----------------------------------------------------------------- chat sessions

def test_a_chat_sessions_message_is_routed_as_a_v1_call_is(server, account, stubs):
    """A session's model with two deployments: the first failing, the
    message is served by the second, under its name there, and billed once."""
    stubs["primary"].behaviour.status = 503
    session = httpx.post(f"{server.url}/api/v1/chat/sessions", json={"model_id": LLAMA},
                         headers=account["headers"]).json()
    sent = httpx.post(f"{server.url}/api/v1/chat/sessions/{session['id']}/messages",
                      json={"content": PROMPT, "max_tokens": 50}, headers=account["headers"], timeout=30)
    assert sent.status_code == 201, sent.text
    assert len(stubs["primary"].requests) == 1 and stubs["secondary"].requests[0]["body"]["model"] == "llama-b"
    assert served_charge(server, account)["provider"] == "secondary"
    assert Decimal(sent.json()["cost"]) == priced(LLAMA_PRICES)
    assert_charged_exactly(server, account["user_id"], priced(LLAMA_PRICES))


# ----------------------------------------------------------------- streams

def test_a_stream_that_fails_before_its_first_byte_falls_back(server, account, stubs):
    stubs["primary"].behaviour.status = 503
    response = chat(server, account, LLAMA, stream=True, stream_options={"include_usage": True})
    assert response.status_code == 200 and response.headers["X-Served-By"] == "secondary"
    assert '"content":"Hello"' in response.text and response.text.endswith("data: [DONE]\n\n")
    assert_charged_exactly(server, account["user_id"], priced(LLAMA_PRICES))


def test_a_stream_cut_after_its_first_byte_does_not_fall_back_and_is_billed_for_what_came(server, account, stubs):
    stubs["primary"].behaviour.cut_after_chunks = 2
    response = chat(server, account, LLAMA, stream=True)
    assert '"content":"Hello"' in response.text and '"error"' in response.text
    assert stubs["secondary"].requests == []
    charged, held, _ = ledger(server, account["user_id"])
    assert charged > 0 and held == 0
    assert_charged_exactly(server, account["user_id"], charged)
