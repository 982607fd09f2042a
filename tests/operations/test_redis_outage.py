"""Redis gone under a running service (two workers sharing their rate limits,
circuit breakers and health in a real redis-server, killed with SIGKILL and
started again): no call fails. The limits fail open to each worker's own
count in memory, so a limit still holds in every worker, and they go back to
Redis once it answers; billed calls are billed exactly throughout, and the
README's ledger check finds nothing."""
import socket
import threading
import time

import pytest
import redis

from app import shared_store
from app.breakers import Breakers
from app.health import Health
from devtools.redis_server import RedisServer, redis_binary
from tests.cluster import HOLD, answer_at_the_hold, assert_ledger_exact, balance_of, billed_call, holds_of
from tests.support import HOUSE_OPENAI, live_service, live_user

pytestmark = pytest.mark.server

# Per access key or user; an hour, so that no window ends during the test.
LIMIT = 6
WORKERS = 2
CALLS_WHILE_DOWN = 16
BACK_TIMEOUT_SECONDS = 90  # flask-limiter tries its storage again after 1, 2, 4 … 32 s


@pytest.fixture
def redis_server(tmp_path):
    if redis_binary() is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server; .ci/run installs it)")
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def limit_counters(server):
    """The rate-limit counters flask-limiter keeps in `server`."""
    with redis.Redis.from_url(server.url) as client:
        return client.keys("LIMITS:*")


def statuses(responses):
    return sorted({response.status_code for response in responses})


def test_calls_go_on_while_redis_is_down_and_the_limits_hold_in_each_worker(database, stubs, redis_server):
    openai, _ = stubs
    answer_at_the_hold(openai)
    with live_service(database, workers=WORKERS, RATELIMIT_ENABLED=True, RATELIMIT_STORAGE_URI=redis_server.url,
                      RATE_LIMIT_ACCESS_KEY=f"{LIMIT} per hour", RATE_LIMIT_AUTH="1000 per hour",
                      OPENAI_BASE_URL=f"{openai.url}/v1", OPENAI_API_KEY=HOUSE_OPENAI) as live:
        headers, user_id = live_user(live.url, "1")
        before = [billed_call(live.url, headers) for _ in range(2)]
        assert statuses(before) == [200] and limit_counters(redis_server)

        redis_server.process.kill()
        redis_server.process.wait()
        down = [billed_call(live.url, headers) for _ in range(CALLS_WHILE_DOWN)]
        # Each worker counts from nothing: at least one worker's whole limit, at most every worker's.
        assert set(statuses(down)) <= {200, 429}, [response.text for response in down]
        passed = sum(response.status_code == 200 for response in down)
        assert LIMIT <= passed <= WORKERS * LIMIT
        assert all(response.json()["error"]["code"] == "rate_limited"
                   for response in down if response.status_code == 429)

        redis_server.start()  # again, on its port, empty
        after = []
        deadline = time.monotonic() + BACK_TIMEOUT_SECONDS
        while not limit_counters(redis_server):
            assert time.monotonic() < deadline, "the limits did not go back to Redis"
            after.append(billed_call(live.url, headers))
            time.sleep(0.5)
        after.append(billed_call(live.url, headers))
        assert set(statuses(after)) <= {200, 429}

    billed = sum(response.status_code == 200 for response in before + down + after)
    holds = holds_of(database, user_id)
    assert len(holds) == billed, "a refused call made no hold"
    assert all(releases == [(0, "settle")] for _, releases in holds), holds
    total, spent, held = balance_of(database, user_id)
    assert (spent, held) == (billed * HOLD, 0)
    assert_ledger_exact(database)


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts connections and reads what is
    sent, never answering: a hung Redis. Counts the connections made to it."""

    def __init__(self):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"
        self.connections = 0
        self._open = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(conn)

    def close(self):
        self._listener.close()
        for conn in self._open:
            conn.close()


@pytest.fixture
def silent_redis():
    server = SilentServer()
    yield server
    server.close()


BREAKER_CONFIG = {"BREAKER_FAILURES": 3, "BREAKER_COOLDOWN": 30, "BREAKER_WINDOW": 60, "BREAKER_MIN_CALLS": 10}


def test_a_redis_that_does_not_answer_costs_one_timeout_per_pause_not_one_per_call(silent_redis, monkeypatch):
    monkeypatch.setattr(shared_store, "RETRY_AFTER_SECONDS", 1.0)
    config = {**BREAKER_CONFIG, "RATELIMIT_STORAGE_URI": silent_redis.url}
    breakers, health = Breakers(config), Health(config)
    for _ in range(10):  # ten calls' worth of what a call asks of them
        assert breakers.allows("openai/gpt-4o-mini") is True
        breakers.succeeded("openai/gpt-4o-mini")
        assert health.figures("openai/gpt-4o-mini") is not None
    # Each tried Redis once, met its timeout, and left it alone since.
    assert silent_redis.connections == 2
    time.sleep(1.1)  # the pause is over: each tries again, once
    for _ in range(10):
        breakers.allows("openai/gpt-4o-mini")
        health.figures("openai/gpt-4o-mini")
    assert silent_redis.connections == 4
