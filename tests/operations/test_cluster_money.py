"""Money across the instances of one cluster (what `make cluster` starts:
PgBouncer in transaction mode, Redis, three instances, nginx): one user's
calls sent at once to every instance, directly and through nginx, never pass
a balance, an access key's spend limit or a daily limit; one Idempotency-Key
sent to every instance at once is applied once; a stream through nginx is
passed on as it comes. The README's ledger check finds nothing after each."""
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest

from app.money import format_money
from tests.cluster import (HOLD, answer_at_the_hold, assert_ledger_exact, balance_of, billed_call, holds_of,
                           running_cluster, targets)
from tests.conftest import clean_database
from tests.support import bearer, live_user

pytestmark = pytest.mark.server

# Five holds fit under each limit, a sixth does not.
LIMIT = Decimal("0.05")
FITTING = 5
CALLS = 16
DECIDED_TIMEOUT_SECONDS = 60


@pytest.fixture(scope="module")
def cluster_database(pg_server, template_db):
    with clean_database(pg_server, template_db) as database:
        yield database


@pytest.fixture(scope="module")
def cluster(cluster_database, openai_stub):
    with running_cluster(cluster_database, openai_stub) as cluster:
        yield cluster


@pytest.fixture
def stub(cluster, stubs):
    openai, _ = stubs
    answer_at_the_hold(openai)
    return openai


def all_at_once(calls, stub):
    """Runs `calls` (functions of no argument) at once. The stub answers none
    until every call has either reached it or been answered without it, so
    every hold made is still open while the others are decided."""
    gate = stub.behaviour.hold_answers()
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        deadline = time.monotonic() + DECIDED_TIMEOUT_SECONDS
        while len(stub.requests) + sum(future.done() for future in futures) < len(calls):
            assert time.monotonic() < deadline, "calls neither reached the provider nor were answered"
            time.sleep(0.02)
        gate.set()
        return [future.result() for future in futures]


def spread(cluster, headers, count, **extra_headers):
    """`count` billed calls, sent to each instance's port and to nginx in turn."""
    ways_in = targets(cluster)
    return [lambda url=ways_in[n % len(ways_in)]: billed_call(url, headers, **extra_headers) for n in range(count)]


def error_codes(responses):
    return sorted(response.json()["error"]["code"] for response in responses if response.status_code != 200)


@pytest.mark.parametrize("limit", ["balance", "access key spend limit", "daily limit"])
def test_parallel_calls_across_the_instances_never_pass_a_limit(cluster, cluster_database, stub, limit):
    assert LIMIT // HOLD == FITTING
    headers, user_id = live_user(cluster.url, format_money(LIMIT) if limit == "balance" else "10")
    refusal = "insufficient_funds" if limit == "balance" else "spend_limit_reached"
    if limit == "access key spend limit":
        key = httpx.post(f"{cluster.url}/api/v1/access-keys", headers=headers, json={
            "name": "burst", "spend_limit": format_money(LIMIT), "spend_limit_period": "day"}).json()
        headers = bearer(key["key"])
    if limit == "daily limit":
        answer = httpx.put(f"{cluster.url}/api/v1/preferences", headers=headers,
                           json={"daily_spend_limit": format_money(LIMIT)})
        assert answer.status_code == 200, answer.text

    responses = all_at_once(spread(cluster, headers, CALLS), stub)

    assert sorted(response.status_code for response in responses) == [200] * FITTING + [402] * (CALLS - FITTING)
    assert error_codes(responses) == [refusal] * (CALLS - FITTING)
    total, spent, held = balance_of(cluster_database, user_id)
    assert (spent, held) == (FITTING * HOLD, 0)
    assert spent <= LIMIT and total - spent >= 0
    if limit == "access key spend limit":
        assert cluster_database.query("SELECT spent FROM access_keys WHERE id = %s", (key["id"],)) == [(spent,)]
    assert_ledger_exact(cluster_database)


def test_one_top_up_key_sent_to_every_instance_at_once_is_credited_once(cluster, cluster_database, stub):
    headers, user_id = live_user(cluster.url, "1")
    ways_in = targets(cluster)

    def top_up(url):
        return httpx.post(f"{url}/api/v1/balance/funds", json={"amount": "5.00"}, timeout=30,
                          headers={**headers, "Idempotency-Key": "one-top-up"})

    with ThreadPoolExecutor(max_workers=2 * len(ways_in)) as pool:
        responses = list(pool.map(top_up, ways_in * 2))
    retried = [top_up(url) for url in ways_in]

    first = [response for response in responses if response.status_code == 201
             and "Idempotent-Replayed" not in response.headers]
    assert len(first) == 1
    assert all(response.status_code == 201 or (response.status_code, response.json()["error"]["code"])
               == (409, "idempotency_in_progress") for response in responses)
    assert all((response.status_code, response.headers.get("Idempotent-Replayed"), response.json())
               == (201, "true", first[0].json()) for response in retried)
    assert cluster_database.query("SELECT count(*) FROM transactions WHERE type = 'deposit' AND user_id = %s",
                                  (user_id,)) == [(2,)]
    assert balance_of(cluster_database, user_id) == (Decimal("6"), 0, 0)
    assert_ledger_exact(cluster_database)


def test_one_call_key_sent_to_every_instance_at_once_runs_and_bills_once(cluster, cluster_database, stub):
    headers, user_id = live_user(cluster.url, "10")
    calls = spread(cluster, headers, 2 * len(targets(cluster)), **{"Idempotency-Key": "one-call"})

    responses = all_at_once(calls, stub)
    retried = [call() for call in calls[:len(targets(cluster))]]

    assert len(stub.requests) == 1
    assert sorted(response.status_code for response in responses) == [200] + [409] * (len(calls) - 1)
    assert error_codes(responses) == ["idempotency_in_progress"] * (len(calls) - 1)
    answer = next(response.json() for response in responses if response.status_code == 200)
    assert all((response.status_code, response.headers.get("Idempotent-Replayed"), response.json())
               == (200, "true", answer) for response in retried)
    assert holds_of(cluster_database, user_id) == [(HOLD, [(0, "settle")])]
    assert balance_of(cluster_database, user_id) == (Decimal("10"), HOLD, 0)
    assert_ledger_exact(cluster_database)


@pytest.mark.parametrize("api", ["v1", "session"])
def test_a_stream_through_nginx_arrives_as_it_is_made(cluster, cluster_database, stub, api):
    """The stub sends its first delta and holds the rest back until the first
    has reached the client through nginx: a buffered stream would wait forever
    (the read timeout fails the test instead)."""
    headers, user_id = live_user(cluster.url, "10")
    stub.behaviour.chunks = ["first ", "second ", "third"]
    stub.behaviour.prompt_tokens, stub.behaviour.completion_tokens = 9, 3
    rest = stub.behaviour.rest_of_stream_gate = threading.Event()
    if api == "v1":
        url = f"{cluster.url}/v1/chat/completions"
        body = {"model": "openai/gpt-4o-mini", "max_tokens": 100, "stream": True,
                "messages": [{"role": "user", "content": "Hi"}]}
    else:
        session = httpx.post(f"{cluster.url}/api/v1/chat/sessions", headers=headers,
                             json={"model_id": "openai/gpt-4o-mini"}).json()
        url = f"{cluster.url}/api/v1/chat/sessions/{session['id']}/messages"
        body = {"content": "Hi", "max_tokens": 100, "stream": True}
    texts = []
    with httpx.stream("POST", url, json=body, headers=headers, timeout=httpx.Timeout(20)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: {"):
                texts.append(json.dumps(json.loads(line[6:])))
                if "first" in texts[-1] and not rest.is_set():
                    assert len(stub.requests) == 1
                    rest.set()
    assert rest.is_set() and any("third" in text for text in texts)
    total, spent, held = balance_of(cluster_database, user_id)
    assert spent > 0 and held == 0
    assert_ledger_exact(cluster_database)
