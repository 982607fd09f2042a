"""Each deployment's measured health, shown on the model's page, and
`provider.sort` ordering a call's routes by it (or by price), through the
service under gunicorn (one worker: without Redis health is kept by each) with
a slow and a fast OpenAI-format stub at their own base URLs; and, kept in a
real redis-server, the figures one instance measured shown by another."""
import time
from contextlib import ExitStack

import httpx
import pytest

from tests.conftest import clean_database
from tests.operations.test_limits_shared import redis_url  # noqa: F401
from tests.inference.test_routing import LLAMA_PRICES, PREMIUM_PRICES, PROMPT, model, priced
from tests.sdk_clients import assert_charged_exactly
from tests.stubs import OpenAIStub
from tests.support import add_models, live_service, live_user, openai_provider, providers_file

BOTH, FAST_ONLY, PREMIUM = "slow/llama", "fast/llama", "fast/premium"
STALL = 0.3
KEYS = {"SLOW_KEY": "sk-slow-000000000001", "FAST_KEY": "sk-fast-000000000001"}


@pytest.fixture(scope="module")
def stubs():
    stubs = {"slow": OpenAIStub(), "fast": OpenAIStub()}
    stubs["slow"].behaviour.stall_seconds = STALL
    yield stubs
    for stub in stubs.values():
        stub.stop()


def declared_providers(stubs, directory):
    return providers_file(directory, *(openai_provider(name, f"{stub.url}/v1", f"{name.upper()}_KEY")
                                       for name, stub in stubs.items()))


@pytest.fixture(scope="module")
def server(pg_server, template_db, stubs, tmp_path_factory):
    declared = declared_providers(stubs, tmp_path_factory.mktemp("health"))
    with clean_database(pg_server, template_db) as database, live_service(
            database, workers=1, PROVIDERS_FILE=str(declared), PROVIDER_TIMEOUT=5, **KEYS) as live:
        add_models(database.owner_url, model(BOTH, LLAMA_PRICES, ("slow", "llama"), ("fast", "llama")),
                   model(FAST_ONLY, LLAMA_PRICES, ("fast", "llama")), model(PREMIUM, PREMIUM_PRICES))
        yield live


@pytest.fixture
def account(server):
    headers, user_id = live_user(server.url, "10")
    key = httpx.post(f"{server.url}/api/v1/access-keys", json={"name": "sort"}, headers=headers).json()["key"]
    return {"user_id": user_id, "key": key}


def chat(server, account, model_id, **extra):
    return httpx.post(f"{server.url}/v1/chat/completions", headers={"Authorization": f"Bearer {account['key']}"},
                      json={"model": model_id, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 50,
                            **extra}, timeout=30)


def test_latency_picks_the_faster_deployment_once_health_has_data(server, account):
    assert [chat(server, account, BOTH).headers["X-Served-By"] for _ in range(3)] == ["slow"] * 3  # as declared
    assert [chat(server, account, FAST_ONLY).headers["X-Served-By"] for _ in range(3)] == ["fast"] * 3

    detail = httpx.get(f"{server.url}/api/v1/models/{BOTH}").json()
    slow, fast = detail["deployments"]
    assert [(slow["provider"], slow["model"]), (fast["provider"], fast["model"])] == [("slow", "llama"),
                                                                                      ("fast", "llama")]
    # At least this test's calls: another test of the module may have run on this service before.
    assert slow["health"]["5m"]["attempts"] >= 3 and fast["health"]["5m"]["attempts"] >= 3
    assert slow["health"]["5m"]["errors"] == 0 and slow["circuit"] == "closed"
    assert slow["health"]["5m"]["first_token_p50_ms"] >= STALL * 1000 > fast["health"]["5m"]["first_token_p95_ms"]
    assert fast["health"]["5m"]["output_tokens_per_second"] > slow["health"]["5m"]["output_tokens_per_second"] > 0
    assert slow["health"]["1h"]["attempts"] == slow["health"]["5m"]["attempts"]

    assert chat(server, account, BOTH, provider={"sort": "latency"}).headers["X-Served-By"] == "fast"
    assert chat(server, account, BOTH, provider={"sort": "throughput"}).headers["X-Served-By"] == "fast"
    assert chat(server, account, BOTH).headers["X-Served-By"] == "slow"
    assert_charged_exactly(server, account["user_id"], 9 * priced(LLAMA_PRICES))


def test_price_tries_the_cheapest_model_named_first(server, account):
    response = chat(server, account, PREMIUM, models=[BOTH], provider={"sort": "price"})
    assert response.status_code == 200 and response.json()["model"] == BOTH
    assert chat(server, account, PREMIUM, models=[BOTH]).json()["model"] == PREMIUM
    assert_charged_exactly(server, account["user_id"], priced(LLAMA_PRICES) + priced(PREMIUM_PRICES))


def test_an_unknown_sort_is_refused_by_name(server, account, stubs):
    before = len(stubs["slow"].requests) + len(stubs["fast"].requests)
    response = chat(server, account, BOTH, provider={"sort": "random"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "provider.sort"
    assert len(stubs["slow"].requests) + len(stubs["fast"].requests) == before


def test_kept_in_redis_one_instances_figures_are_shown_by_another(pg_server, template_db, stubs, redis_url,  # noqa: F811
                                                                  tmp_path):
    """Two instances of two workers each on one database and one Redis: the
    calls served by the first are counted on the second's model page, every
    time it is read (each worker of it reads Redis); kept per worker, the
    second would show none."""
    settings = dict(PROVIDERS_FILE=str(declared_providers(stubs, tmp_path)), PROVIDER_TIMEOUT=5,
                    RATELIMIT_STORAGE_URI=redis_url, **KEYS)
    with clean_database(pg_server, template_db) as database, ExitStack() as running:
        serving, showing = (running.enter_context(live_service(database, workers=2, **settings)) for _ in range(2))
        add_models(database.owner_url, model(FAST_ONLY, LLAMA_PRICES, ("fast", "llama")))
        headers, user_id = live_user(serving.url, "10")
        account = {"user_id": user_id, "key": httpx.post(f"{serving.url}/api/v1/access-keys", json={"name": "h"},
                                                         headers=headers).json()["key"]}
        assert [chat(serving, account, FAST_ONLY).status_code for _ in range(6)] == [200] * 6

        def shown():
            return httpx.get(f"{showing.url}/api/v1/models/{FAST_ONLY}").json()["deployments"][0]["health"]
        deadline = time.monotonic() + 15  # each worker adds its figures once a second; reads are trusted for one
        while shown()["5m"]["attempts"] < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.1)
        for figures in (shown() for _ in range(8)):
            assert figures["5m"]["attempts"] == figures["1h"]["attempts"] == 6 and figures["5m"]["errors"] == 0
            assert figures["5m"]["first_token_p50_ms"] > 0 and figures["5m"]["output_tokens_per_second"] > 0
        assert_charged_exactly(serving, user_id, 6 * priced(LLAMA_PRICES))
