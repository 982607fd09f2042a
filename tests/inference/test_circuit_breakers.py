"""Circuit breakers per deployment, through the service under gunicorn with
OpenAI-format stubs at their own base URLs: a circuit opens after its
threshold, is passed over without a try, answers 503 with Retry-After when
nothing else is left, lets one probe through after its cooldown and closes on
its success; and, kept in a real redis-server, one worker's failures open it
for the other."""
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest

from tests.conftest import clean_database
from tests.inference.test_routing import LLAMA_PRICES, PROMPT, model, priced
from tests.operations.test_limits_shared import redis_url  # noqa: F401
from tests.sdk_clients import assert_charged_exactly
from tests.stubs import OpenAIStub
from tests.support import add_models, live_service, live_user, openai_provider, providers_file

LLAMA, SOLO = "primary/llama", "solo/llama"
PROBED = "solo/probed"  # on the solo stub too, under a name (a breaker) of its own
THRESHOLD, COOLDOWN = 3, 2
KEYS = {"PRIMARY_KEY": "sk-primary-0000000001", "BACKUP_KEY": "sk-backup-0000000001",
        "SOLO_KEY": "sk-solo-000000000001"}


@pytest.fixture(scope="module")
def stubs_by_name():
    stubs = {name: OpenAIStub() for name in ("primary", "backup", "solo")}
    yield stubs
    for stub in stubs.values():
        stub.stop()


@pytest.fixture
def stubs(stubs_by_name):
    for stub in stubs_by_name.values():
        stub.reset()
    return stubs_by_name


@contextmanager
def service(pg_server, template_db, stubs_by_name, directory, workers=1, cooldown=COOLDOWN, **settings):
    """The service with a model served by primary then backup, and one served by solo alone."""
    declared = providers_file(directory, *(openai_provider(name, f"{stubs_by_name[name].url}/v1", f"{name.upper()}_KEY")
                                           for name in ("primary", "backup", "solo")))
    with clean_database(pg_server, template_db) as database, live_service(
            database, workers=workers, PROVIDERS_FILE=str(declared), PROVIDER_TIMEOUT=5, PROVIDER_RETRIES=0,
            BREAKER_FAILURES=THRESHOLD, BREAKER_COOLDOWN=cooldown, **KEYS, **settings) as live:
        add_models(database.owner_url, model(LLAMA, LLAMA_PRICES, ("primary", "llama"), ("backup", "llama")),
                   model(SOLO, LLAMA_PRICES), model(PROBED, LLAMA_PRICES))
        yield live


def new_user(live):
    """(user id, access key) of a funded user of `live`."""
    headers, user_id = live_user(live.url, "10")
    return user_id, httpx.post(f"{live.url}/api/v1/access-keys", json={"name": "breakers"},
                               headers=headers).json()["key"]


def chat(live, key, model_id):
    return httpx.post(f"{live.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": model_id, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 50},
                      timeout=30)


@pytest.fixture(scope="module")
def one_worker(pg_server, template_db, stubs_by_name, tmp_path_factory):
    with service(pg_server, template_db, stubs_by_name, tmp_path_factory.mktemp("breakers")) as started:
        yield started


def test_a_circuit_opens_after_its_threshold_is_passed_over_then_probed_and_closed(one_worker, stubs):
    live = one_worker
    user_id, key = new_user(live)
    stubs["primary"].behaviour.status = 503
    for _ in range(THRESHOLD):
        assert chat(live, key, LLAMA).headers["X-Served-By"] == "backup"
    assert len(stubs["primary"].requests) == THRESHOLD

    for _ in range(5):  # open: passed over without a try
        response = chat(live, key, LLAMA)
        assert response.status_code == 200 and response.headers["X-Served-By"] == "backup"
    assert len(stubs["primary"].requests) == THRESHOLD

    stubs["primary"].behaviour.status = 200
    time.sleep(COOLDOWN + 0.2)
    assert chat(live, key, LLAMA).headers["X-Served-By"] == "primary"  # the probe, which closes it
    assert [chat(live, key, LLAMA).headers["X-Served-By"] for _ in range(3)] == ["primary"] * 3
    assert_charged_exactly(live, user_id, 12 * priced(LLAMA_PRICES))


def test_with_every_circuit_open_a_call_is_refused_at_once_with_retry_after(one_worker, stubs):
    live = one_worker
    user_id, key = new_user(live)
    stubs["solo"].behaviour.status = 500
    assert [chat(live, key, SOLO).status_code for _ in range(THRESHOLD)] == [502] * THRESHOLD
    began = time.monotonic()
    refused = chat(live, key, SOLO)
    assert time.monotonic() - began < 1
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "providers_unavailable"
    assert 1 <= int(refused.headers["Retry-After"]) <= COOLDOWN
    assert len(stubs["solo"].requests) == THRESHOLD
    assert_charged_exactly(live, user_id, 0)


def test_while_a_probe_is_out_other_calls_are_told_to_wait_not_to_add_a_key(one_worker, stubs):
    live = one_worker
    user_id, key = new_user(live)
    stubs["solo"].behaviour.status = 500
    assert [chat(live, key, PROBED).status_code for _ in range(THRESHOLD)] == [502] * THRESHOLD
    stubs["solo"].behaviour.status = 200
    gate = stubs["solo"].behaviour.hold_answers()
    time.sleep(COOLDOWN + 0.2)
    with ThreadPoolExecutor(1) as pool:
        probe = pool.submit(chat, live, key, PROBED)
        assert stubs["solo"].wait_for_requests(THRESHOLD + 1)
        waiting = chat(live, key, PROBED)
        gate.set()
        assert probe.result().status_code == 200
    assert waiting.status_code == 503 and waiting.json()["error"]["code"] == "providers_unavailable"
    assert int(waiting.headers["Retry-After"]) >= 1
    assert chat(live, key, PROBED).status_code == 200  # the probe closed it
    assert_charged_exactly(live, user_id, 2 * priced(LLAMA_PRICES))


def test_a_provider_refusing_a_request_opens_no_circuit(one_worker, stubs):
    live = one_worker
    user_id, key = new_user(live)
    stubs["primary"].behaviour.status = 400
    assert [chat(live, key, LLAMA).status_code for _ in range(THRESHOLD + 2)] == [400] * (THRESHOLD + 2)
    assert len(stubs["primary"].requests) == THRESHOLD + 2 and stubs["backup"].requests == []


def test_shared_in_redis_one_workers_failures_open_the_circuit_for_the_other(pg_server, template_db, stubs_by_name,
                                                                            stubs, redis_url, tmp_path):  # noqa: F811
    """Three failures in all, however the two workers shared them, open the
    circuit for both: no later call reaches the primary. Kept per worker,
    each would need three of its own."""
    with service(pg_server, template_db, stubs_by_name, tmp_path, workers=2, cooldown=60,
                 RATELIMIT_STORAGE_URI=redis_url) as live:
        user_id, key = new_user(live)
        stubs["primary"].behaviour.status = 503
        for _ in range(THRESHOLD):
            assert chat(live, key, LLAMA).headers["X-Served-By"] == "backup"
        time.sleep(1.2)  # what a worker read of the breaker is trusted for a second
        served = [chat(live, key, LLAMA).headers["X-Served-By"] for _ in range(20)]
        assert served == ["backup"] * 20
        assert len(stubs["primary"].requests) == THRESHOLD
        assert_charged_exactly(live, user_id, 23 * priced(LLAMA_PRICES))
