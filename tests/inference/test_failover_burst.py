"""A provider that crashes in the middle of a burst of plain calls, with a
second deployment of the model configured: the service under gunicorn's two
workers, ten callers at once, each on a kept-alive connection of its own, and
the model's first provider killed once it has taken about a third of them,
with a few taken and not yet answered. Every call is answered, those in flight
on it and those made after the crash by the other provider, and the user pays
exactly what the providers' usage says, nothing left held."""
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import ROUND_CEILING, Decimal

import httpx
import pytest

from tests.conftest import clean_database
from tests.inference.test_routing import PROMPT, model
from tests.sdk_clients import assert_charged_exactly
from tests.stubs import OpenAIStub
from tests.support import add_models, live_service, live_user, openai_provider, providers_file

LLAMA, PRICES = "primary/llama", (Decimal("0.10"), Decimal("0.20"))
KEYS = {"PRIMARY_KEY": "sk-primary-0000000001", "BACKUP_KEY": "sk-backup-0000000001"}
CALLS, CALLERS, KILLED_AFTER = 200, 10, 60
# Calls the primary has taken and holds unanswered when it crashes.
IN_FLIGHT = 3


class CrashingStub(OpenAIStub):
    """An OpenAI-format stub that can crash as a provider's process would:
    `crash()` stops it listening (new connections are refused) and resets
    every connection it holds, the kept-alive idle ones and those with a
    request in flight, which `stop()` alone would go on serving."""

    def __init__(self):
        self.crashed, self.connections = False, set()
        super().__init__()
        answer_errors = self.server.handle_error
        # After the crash, a handler writing its answer to a reset connection is expected.
        self.server.handle_error = lambda *args: None if self.crashed else answer_errors(*args)

    def _handler(self):
        stub, handler = self, super()._handler()

        class Tracked(handler):
            def setup(self):
                super().setup()
                with stub._lock:
                    stub.connections.add(self.connection)
                    if stub.crashed:  # accepted just before the crash
                        _reset(self.connection)

            def finish(self):
                with stub._lock:
                    stub.connections.discard(self.connection)
                super().finish()

        return Tracked

    def crash(self):
        self.stop()
        with self._lock:
            self.crashed = True
            for connection in self.connections:
                _reset(connection)


def _reset(connection):
    """Closes the connection with a reset (SO_LINGER 0), waking its handler."""
    try:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone


def charge(prompt_tokens=11, completion_tokens=7):
    """One call's charge at the model's prices from the stubs' usage, each part rounded up to 10 decimals."""
    return sum((tokens * price / 1_000_000).quantize(Decimal("1e-10"), rounding=ROUND_CEILING)
               for tokens, price in ((prompt_tokens, PRICES[0]), (completion_tokens, PRICES[1])))


@pytest.fixture
def stubs():
    stubs = {"primary": CrashingStub(), "backup": OpenAIStub()}
    yield stubs
    for stub in stubs.values():
        stub.stop()


@pytest.fixture
def server(pg_server, template_db, stubs, tmp_path):
    declared = providers_file(tmp_path, *(openai_provider(name, f"{stubs[name].url}/v1", key)
                                          for name, key in (("primary", "PRIMARY_KEY"), ("backup", "BACKUP_KEY"))))
    with clean_database(pg_server, template_db) as database, live_service(
            database, PROVIDERS_FILE=str(declared), PROVIDER_TIMEOUT=5, **KEYS,
            # Not each call's "moving on" warning: nothing reads the service's output while it runs.
            LOG_LEVEL="ERROR") as live:
        add_models(database.owner_url, model(LLAMA, PRICES, ("primary", "llama"), ("backup", "llama-b")))
        yield live


def burst(server, access_key, on_the_side):
    """CALLS plain calls from CALLERS threads, each with its own kept-alive
    client, while `on_the_side` runs: each call's (start, status, X-Served-By, body)."""
    clients, local = [], threading.local()

    def call(_):
        if not hasattr(local, "client"):
            local.client = httpx.Client(headers={"Authorization": f"Bearer {access_key}"}, timeout=30)
            clients.append(local.client)
        began = time.monotonic()
        response = local.client.post(f"{server.url}/v1/chat/completions", json={
            "model": LLAMA, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 50})
        return began, response.status_code, response.headers.get("X-Served-By"), response.text

    side = threading.Thread(target=on_the_side, daemon=True)
    side.start()
    try:
        with ThreadPoolExecutor(CALLERS) as pool:
            return list(pool.map(call, range(CALLS)))
    finally:
        side.join(10)
        for client in clients:
            client.close()


def test_a_provider_killed_mid_burst_fails_no_call_and_the_ledger_stays_exact(server, stubs):
    headers, user_id = live_user(server.url, "10")
    key = httpx.post(f"{server.url}/api/v1/access-keys", json={"name": "burst"}, headers=headers).json()["key"]
    killed_at = []

    def kill_midway():
        """Once the primary has taken KILLED_AFTER calls, it holds the next
        ones, and crashes with IN_FLIGHT of them taken and unanswered."""
        primary = stubs["primary"]
        if not primary.wait_for_requests(KILLED_AFTER, timeout=60):
            return
        held = primary.behaviour.hold_answers()
        if primary.wait_for_requests(len(primary.requests) + IN_FLIGHT, timeout=10):
            primary.crash()
            killed_at.append(time.monotonic())
        held.set()

    results = burst(server, key, kill_midway)

    failed = [(status, body) for _, status, _, body in results if status != 200]
    assert not failed, f"{len(failed)} of {CALLS} calls failed, the first: {failed[:3]}"
    assert killed_at, f"the primary took only {len(stubs['primary'].requests)} calls"
    served = [provider for _, _, provider, _ in results]
    after = [provider for began, _, provider, _ in results if began > killed_at[0]]
    assert served.count("primary") >= KILLED_AFTER - CALLERS, "the primary did not serve up to its crash"
    assert after and set(after) == {"backup"}, "a call made after the crash was not served by the backup"
    assert set(served) == {"primary", "backup"}
    assert len(stubs["primary"].requests) - served.count("primary") >= IN_FLIGHT, "the crash broke no call in flight"
    backup_calls = [(request["body"]["model"], request["headers"]["Authorization"])
                    for request in stubs["backup"].requests]
    assert backup_calls == [("llama-b", f"Bearer {KEYS['BACKUP_KEY']}")] * served.count("backup")
    assert len(backup_calls) >= len(after)
    assert server.database.query(
        "SELECT served_provider, count(*) FROM call_charges GROUP BY 1 ORDER BY 1") == [
        ("backup", served.count("backup")), ("primary", served.count("primary"))]
    assert_charged_exactly(server, user_id, CALLS * charge())
