"""Faults in a cluster (what `make cluster` starts), each on a cluster of
its own: an instance killed (SIGKILL) in the middle of streams leaves the
others serving, and its holds are returned exactly once, after their
deadlines, by the reconcile every instance runs; PgBouncer restarted under
load fails no request once it is back, and a request it cut short is a 503
that moves no money. The README's ledger check finds nothing after each."""
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.cluster import (HOLD, answer_at_the_hold, assert_ledger_exact, balance_of, billed_call, holds_of,
                           running_cluster, targets)
from tests.support import live_user

pytestmark = pytest.mark.server

STREAM_TIMEOUT = 15
STREAMS_PER_INSTANCE = 2
WAIT_SECONDS = 60


def wait_for(predicate, what, timeout=WAIT_SECONDS):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def stream(url, headers, first_deltas, outcome):
    """A streamed billed call; counts its first delta in `first_deltas`, then
    reads on and records how it ended in `outcome`."""
    body = {"model": "openai/gpt-4o-mini", "max_tokens": 100, "stream": True,
            "stream_options": {"include_usage": True}, "messages": [{"role": "user", "content": "Hi"}]}
    try:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers,
                          timeout=httpx.Timeout(STREAM_TIMEOUT * 2)) as response:
            assert response.status_code == 200, response.read()
            counted = False
            for line in response.iter_lines():
                if line.startswith("data: {") and not counted:
                    counted = True
                    first_deltas.release()
                if line.startswith("data: {") and json.loads(line[6:]).get("usage"):
                    outcome.append("billed")
        outcome.append("ended")
    except httpx.TransportError:
        outcome.append("cut")


def test_an_instance_killed_mid_stream_leaves_the_others_serving_and_its_holds_return_once(
        database, stubs):
    stub, _ = stubs
    stub.behaviour.chunks = ["first ", "second ", "third"]
    stub.behaviour.prompt_tokens, stub.behaviour.completion_tokens = 9, 3
    rest = stub.behaviour.rest_of_stream_gate = threading.Event()
    with running_cluster(database, stub, STREAM_TIMEOUT=STREAM_TIMEOUT) as cluster:
        victim, *survivors = cluster.instances
        victim_headers, victim_user = live_user(cluster.url, "10")
        survivor_headers, survivor_user = live_user(cluster.url, "10")
        first_deltas = threading.Semaphore(0)
        outcomes = {instance.number: [] for instance in cluster.instances}
        threads = [threading.Thread(target=stream, args=(
            instance.url, victim_headers if instance is victim else survivor_headers, first_deltas,
            outcomes[instance.number])) for instance in cluster.instances for _ in range(STREAMS_PER_INSTANCE)]
        for thread in threads:
            thread.start()
        for _ in threads:  # every stream holds its funds and has had its first delta
            assert first_deltas.acquire(timeout=WAIT_SECONDS)

        victim.kill()
        served = [billed_call(url, survivor_headers) for url in [survivor.url for survivor in survivors]
                  + [cluster.url] * 4]
        rest.set()
        for thread in threads:
            thread.join(timeout=WAIT_SECONDS)

        assert [response.status_code for response in served] == [200] * len(served)
        assert outcomes[victim.number] == ["cut"] * STREAMS_PER_INSTANCE
        assert all(sorted(outcomes[survivor.number]) == sorted(["billed", "ended"] * STREAMS_PER_INSTANCE)
                   for survivor in survivors)
        # The victim's holds come back once their deadline and grace have passed.
        wait_for(lambda: balance_of(database, victim_user)[2] == 0, "the killed instance's holds")
        time.sleep(2)  # two more reconcile runs on each instance left: none may return a hold again

    victims_holds = holds_of(database, victim_user)
    assert [(len(releases), releases[0][1], releases[0][0] == amount)
            for amount, releases in victims_holds] == [(1, "reconcile", True)] * STREAMS_PER_INSTANCE
    assert database.query(
        "SELECT bool_and(r.created_at >= h.call_deadline + interval '1 second') FROM transactions h"
        " JOIN transactions r ON r.related_transaction_id = h.id WHERE h.user_id = %s", (victim_user,)) == [(True,)]
    assert balance_of(database, victim_user)[1:] == (0, 0)
    survivors_holds = holds_of(database, survivor_user)
    assert len(survivors_holds) == STREAMS_PER_INSTANCE * len(survivors) + len(served)
    assert all(len(releases) == 1 and releases[0][1] == "settle" for _, releases in survivors_holds)
    assert balance_of(database, survivor_user)[2] == 0
    assert_ledger_exact(database)


def test_pgbouncer_restarted_under_load_fails_nothing_once_back(database, stubs):
    stub, _ = stubs
    answer_at_the_hold(stub)
    with running_cluster(database, stub) as cluster:
        headers, user_id = live_user(cluster.url, "100")
        ways_in = targets(cluster)
        back = threading.Event()
        stop = threading.Event()
        before, after = [], []

        def keep_calling(worker):
            sent = 0
            while not stop.is_set():
                was_back = back.is_set()
                response = billed_call(ways_in[(worker + sent) % len(ways_in)], headers)
                (after if was_back else before).append(response)
                sent += 1

        with ThreadPoolExecutor(max_workers=4) as pool:
            workers = [pool.submit(keep_calling, worker) for worker in range(4)]
            wait_for(lambda: len(before) >= 8, "calls before the restart")
            cluster.pgbouncer.restart()
            back.set()
            wait_for(lambda: len(after) >= 24, "calls after the restart")
            stop.set()
            for worker in workers:
                worker.result()
        wait_for(lambda: balance_of(database, user_id)[2] == 0, "every hold closed")

    assert [response.status_code for response in after] == [200] * len(after)
    failed = [response for response in before if response.status_code != 200]
    assert all((response.status_code, response.json()["error"]["code"]) == (503, "database_unavailable")
               for response in failed), [response.text for response in failed]
    billed = len(before) + len(after) - len(failed)
    assert balance_of(database, user_id)[1] == billed * HOLD
    assert_ledger_exact(database)
