"""Providers as configuration (PROVIDERS_FILE): a self-hosted server speaking
OpenAI's format at a base URL of its own, as vLLM would (a third stub on
127.0.0.1), called through the service under gunicorn by both SDKs and billed
exactly; a pool of house keys taken in turn by weight; a user's own key for a
configured provider; and the file's mistakes, each named, stopping start-up."""
import json
import logging
from decimal import Decimal

import httpx
import pytest

from app.config import ConfigError, load_config
from app.providers.registry import KeyPool
from tests.sdk_clients import anthropic_client, assert_charged_exactly, close_clients, openai_client  # noqa: F401
from tests.sdk_clients import stubbed_service
from tests.stubs import OpenAIStub
from tests.support import add_models, live_user, openai_provider, providers_file, settings_for

LLAMA = "vllm/llama-3.1-8b"
POOLED = "pooled/gpt-oss"
MODELS = [{"id": LLAMA, "provider": "vllm", "name": "Llama 3.1 8B", "context_window": 8192,
           "max_output_tokens": 1024, "input_price_per_mtok": "0.05", "output_price_per_mtok": "0.10",
           "prices_as_of": "2026-12-07", "features": ["tools"]},
          {"id": POOLED, "provider": "pooled", "name": "GPT OSS", "context_window": 8192,
           "max_output_tokens": 1024, "input_price_per_mtok": "0.20", "output_price_per_mtok": "0.80",
           "prices_as_of": "2026-12-07"}]
# The pool's keys, as the environment holds them; only their setting names are in the file.
# Long enough for the 30 prompt tokens the stub reports (a count above the prompt's bound is billed at the bound).
PROMPT = "Tell me about llamas. " * 4
POOL_KEYS = {"POOL_KEY_A": "sk-pool-a-000000000000", "POOL_KEY_B": "sk-pool-b-000000000000"}


@pytest.fixture(scope="module")
def vllm_stub():
    stub = OpenAIStub()
    stub.authorised = lambda headers: True  # a self-hosted server takes any key, or none
    yield stub
    stub.stop()


@pytest.fixture(scope="module")
def server(pg_server, template_db, openai_stub, anthropic_stub, vllm_stub, tmp_path_factory):
    declared = providers_file(
        tmp_path_factory.mktemp("providers"), openai_provider("vllm", f"{vllm_stub.url}/v1", needs_key=False),
        {**openai_provider("pooled", f"{vllm_stub.url}/v1"),
         "keys": [{"env": "POOL_KEY_A", "weight": 2}, {"env": "POOL_KEY_B"}, {"env": "POOL_KEY_UNSET"}]})
    with stubbed_service(pg_server, template_db, openai_stub, anthropic_stub, PROVIDERS_FILE=str(declared),
                         **POOL_KEYS) as live:
        add_models(live.database.owner_url, *MODELS)
        yield live


@pytest.fixture
def account(server, vllm_stub):
    vllm_stub.reset()
    headers, user_id = live_user(server.url, "10")
    key = httpx.post(f"{server.url}/api/v1/access-keys", json={"name": "sdk"}, headers=headers).json()
    return {"key": key["key"], "user_id": user_id, "headers": headers}


def cost(prompt_tokens, completion_tokens, input_price="0.05", output_price="0.10"):
    return (prompt_tokens * Decimal(input_price) + completion_tokens * Decimal(output_price)) / 1_000_000


def test_an_openai_client_calls_a_self_hosted_model_that_takes_no_key(server, account, vllm_stub):
    vllm_stub.behaviour.prompt_tokens, vllm_stub.behaviour.completion_tokens = 30, 9
    answer = openai_client(server, account).chat.completions.create(
        model=LLAMA, messages=[{"role": "user", "content": PROMPT}])
    assert answer.choices[0].message.content == "Hello from the stub." and answer.model == LLAMA
    sent, = vllm_stub.requests
    assert sent["path"] == "/v1/chat/completions" and sent["body"]["model"] == "llama-3.1-8b"
    assert "Authorization" not in sent["headers"]
    assert_charged_exactly(server, account["user_id"], cost(30, 9))


def test_an_anthropic_client_streams_from_it_across_formats(server, account, vllm_stub):
    vllm_stub.behaviour.prompt_tokens, vllm_stub.behaviour.completion_tokens = 30, 9
    with anthropic_client(server, account).messages.stream(
            model="llama-3.1-8b", max_tokens=100, messages=[{"role": "user", "content": PROMPT}]) as events:
        text = "".join(events.text_stream)
    assert text == "Hello from the stub."
    assert vllm_stub.requests[0]["body"]["stream"] is True
    assert_charged_exactly(server, account["user_id"], cost(30, 9))


def test_a_pool_of_house_keys_is_taken_in_turn_by_weight(server, account, vllm_stub):
    client = openai_client(server, account)
    for _ in range(6):
        client.chat.completions.create(model=POOLED, messages=[{"role": "user", "content": "Hi"}])
    used = [request["headers"]["Authorization"].removeprefix("Bearer ") for request in vllm_stub.requests]
    # Weights 2 and 1, over one worker or two: each worker's turns interleave, A twice as often as B.
    assert sorted(set(used)) == sorted(POOL_KEYS.values())
    assert used.count(POOL_KEYS["POOL_KEY_A"]) == 2 * used.count(POOL_KEYS["POOL_KEY_B"])
    assert_charged_exactly(server, account["user_id"], 6 * cost(11, 7, "0.20", "0.80"))


def test_a_user_keeps_a_key_for_a_configured_provider_and_it_is_used(server, account, vllm_stub):
    own = "sk-users-own-pooled-0001"
    stored = httpx.post(f"{server.url}/api/v1/keys", json={"provider": "pooled", "api_key": own},
                        headers=account["headers"])
    assert stored.status_code == 201, stored.text
    openai_client(server, account).chat.completions.create(model=POOLED, messages=[{"role": "user", "content": "Hi"}])
    assert vllm_stub.requests[0]["headers"]["Authorization"] == f"Bearer {own}"
    assert_charged_exactly(server, account["user_id"], cost(11, 7, "0.20", "0.80") * Decimal("0.05"))


@pytest.mark.parametrize("provider", ["nowhere", "local"])
def test_a_key_for_a_provider_that_takes_none_is_refused(server, account, provider):
    response = httpx.post(f"{server.url}/api/v1/keys", json={"provider": provider, "api_key": "sk-0123456789abcdef"},
                          headers=account["headers"])
    assert response.status_code == 400
    assert response.json()["error"]["details"]["provider"] == "must be one of openai, anthropic, vllm, pooled"


def test_the_service_terms_name_every_provider_callable_without_a_key_of_ones_own(server):
    terms = httpx.get(f"{server.url}/api/v1/service").json()
    assert terms["house_keys"] == ["openai", "anthropic", "vllm", "pooled"]


def test_preferences_take_configured_providers_only(server, account):
    good = httpx.put(f"{server.url}/api/v1/preferences", json={"preferred_providers": ["vllm", "local"]},
                     headers=account["headers"])
    assert good.status_code == 200 and good.json()["preferred_providers"] == ["vllm", "local"]
    bad = httpx.put(f"{server.url}/api/v1/preferences", json={"preferred_providers": ["vllm", "nowhere"]},
                    headers=account["headers"])
    assert bad.status_code == 400 and "preferred_providers.1" in bad.json()["error"]["details"]


# ----------------------------------------------------------------- the file's mistakes

def providers_config(tmp_path, document, **settings):
    path = tmp_path / "providers.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return load_config(settings_for("postgresql://nobody@127.0.0.1:1/none", PROVIDERS_FILE=str(path), **settings))


VLLM = {"name": "vllm", "format": "openai", "base_url": "http://127.0.0.1:8000/v1"}
BAD_FILES = {
    "unknown format": ({"providers": [{**VLLM, "format": "gemini"}]}, "providers.0.format"),
    "a name used twice": ({"providers": [VLLM, VLLM]}, "vllm is the name of another provider"),
    "a name of another form": ({"providers": [{**VLLM, "name": "My vLLM"}]}, "providers.0.name"),
    "the local provider replaced": ({"providers": [{**VLLM, "name": "local"}]}, "cannot be replaced"),
    "a key's value written in": ({"providers": [{**VLLM, "keys": [{"env": "sk-live-123"}]}]},
                                 "providers.0.keys.0.env"),
    "an unknown field": ({"providers": [{**VLLM, "api_key": "sk-123"}]}, "providers.0.api_key"),
    "no base URL": ({"providers": [{"name": "vllm", "format": "openai"}]}, "providers.0.base_url"),
    "not JSON": ("{providers: [", "PROVIDERS_FILE"),
}


@pytest.mark.parametrize("document, named", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_providers_file_stops_start_up_naming_the_entry(tmp_path, document, named):
    with pytest.raises(ConfigError) as refused:
        providers_config(tmp_path, document)
    assert named in str(refused.value) and "sk-" not in str(refused.value)


def test_a_missing_providers_file_stops_start_up(tmp_path):
    with pytest.raises(ConfigError, match="PROVIDERS_FILE .*missing.json"):
        load_config(settings_for("postgresql://nobody@127.0.0.1:1/none", PROVIDERS_FILE=str(tmp_path / "missing.json")))


def test_an_unset_key_is_left_out_and_said_in_the_log_by_its_name(tmp_path, caplog):
    caplog.set_level(logging.INFO, "app.providers.registry")
    config = providers_config(tmp_path, {"providers": [{**VLLM, "keys": [{"env": "VLLM_KEY_SET"},
                                                                          {"env": "VLLM_KEY_UNSET"}]}]},
                              VLLM_KEY_SET="sk-set-0000000000")
    assert [(name, weight) for name, _, weight in config["PROVIDERS"]["vllm"].keys] == [("VLLM_KEY_SET", 1)]
    assert "VLLM_KEY_UNSET is not set" in caplog.text and "sk-set-0000000000" not in caplog.text
    assert "sk-set" not in repr(config["PROVIDERS"]["vllm"])


def test_a_file_entry_replaces_a_built_in_provider_by_its_name(tmp_path):
    config = providers_config(tmp_path, {"providers": [
        {"name": "openai", "format": "openai", "base_url": "http://127.0.0.1:9/v1",
         "keys": [{"env": "OPENAI_API_KEY"}, {"env": "OPENAI_API_KEY_2", "weight": 3}]}]},
        OPENAI_API_KEY="sk-first-000000000", OPENAI_API_KEY_2="sk-second-00000000")
    openai = config["PROVIDERS"]["openai"]
    assert (openai.base_url, [weight for _, _, weight in openai.keys]) == ("http://127.0.0.1:9/v1", [1, 3])
    assert list(config["PROVIDERS"]) == ["local", "anthropic", "openai"]


def test_a_weighted_pool_spreads_its_turns():
    pool = KeyPool((("A", "a", 3), ("B", "b", 1), ("C", "c", 1)))
    assert [pool.next() for _ in range(10)] == list("abacaabaca")
    assert not KeyPool(())
