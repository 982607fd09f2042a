"""What the gateway adds to a chat call.

The same OpenAI-format call, through the service (authenticated, held, settled,
recorded) and straight to the stub, interleaved pair by pair; p50 and p99 of
each and of the difference. Then, with the stub answering after a stall, many
calls in flight at once must all complete.

    .venv/bin/python bench/gateway_overhead.py [--pairs 300] [--in-flight 200] [--stall 1.0]
    .venv/bin/python bench/gateway_overhead.py --profile 300   # where the time goes, in process

Everything runs on 127.0.0.1: a throwaway PostgreSQL, the service under
gunicorn, and the stub in its own process (so the client's GIL is not shared)."""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import testing.postgresql
from psycopg2.extensions import make_dsn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import migrate  # noqa: E402
from devtools.cluster import free_port, testing_postgresql_options  # noqa: E402
from tests.support import LiveServer, settings_for  # noqa: E402

APP_PASSWORD = "bench-app-user"
OPENAI_KEY = "sk-proj-bench-000000000000000000"
WARMUP_PAIRS = 20
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 64}


def percentile(samples, fraction):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


class Stub:
    """The OpenAI stub in a process of its own."""

    def __init__(self, stall=0.0):
        port = free_port()
        self.process = subprocess.Popen([sys.executable, "-m", "tests.stubs", "openai", str(port), str(stall)],
                                        cwd=ROOT, stdout=subprocess.PIPE)
        self.url = self.process.stdout.readline().decode().strip()

    def stop(self):
        self.process.terminate()
        self.process.wait()


def prepare_user(client, url):
    account = {"email": "bench@example.com", "password": "correct horse battery"}
    client.post(f"{url}/api/v1/auth/register", json=account | {"username": "bench"})
    headers = {"Authorization": "Bearer " + client.post(f"{url}/api/v1/auth/login", json=account).json()["access_token"]}
    client.post(f"{url}/api/v1/balance/funds", json={"amount": "1000"}, headers=headers)
    client.post(f"{url}/api/v1/keys", json={"provider": "openai", "api_key": OPENAI_KEY}, headers=headers)
    return headers


def new_session_url(client, url, headers):
    """A fresh session, so every measured call sends the same one-message prompt."""
    session = client.post(f"{url}/api/v1/chat/sessions", json={"model_id": "openai/gpt-4o-mini"}, headers=headers)
    return f"{url}/api/v1/chat/sessions/{session.json()['id']}/messages"


def timed(call):
    started = time.perf_counter()
    response = call()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code >= 300:
        raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
    return elapsed


def overhead(server, stub, pairs):
    with httpx.Client(timeout=30) as client:
        headers = prepare_user(client, server.url)
        direct_url = f"{stub.url}/v1/chat/completions"
        direct_headers = {"Authorization": f"Bearer {OPENAI_KEY}"}
        via, direct = [], []
        for round_number in range(pairs + WARMUP_PAIRS):
            send_url = new_session_url(client, server.url, headers)
            through = timed(lambda: client.post(send_url, json={"content": "Say hello.", "max_tokens": 64},
                                                headers=headers))
            straight = timed(lambda: client.post(direct_url, json=BODY, headers=direct_headers))
            if round_number >= WARMUP_PAIRS:
                via.append(through)
                direct.append(straight)
    return via, direct


def in_flight(server, stub_url, count):
    with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=count + 10)) as client:
        headers = prepare_user(client, server.url)
        send_url = new_session_url(client, server.url, headers)
        start = threading.Barrier(count)

        def call(_):
            start.wait()
            return client.post(send_url, json={"content": "Say hello.", "max_tokens": 64}, headers=headers).status_code

        started = time.perf_counter()
        with ThreadPoolExecutor(count) as pool:
            statuses = list(pool.map(call, range(count)))
        return statuses, time.perf_counter() - started


def profile(app_url, calls):
    """The chat path in this process (Flask's test client, the stub in a thread):
    the time of each SQL statement, and cProfile's heaviest functions."""
    import cProfile
    import collections
    import pstats

    from app import close_app, create_app
    from database.pool import Cursor
    from tests.stubs import OpenAIStub

    stub = OpenAIStub()
    app = create_app(settings_for(app_url, OPENAI_BASE_URL=f"{stub.url}/v1", LOG_LEVEL="WARNING"))
    client = app.test_client()
    account = {"email": "profile@example.com", "password": "correct horse battery"}
    client.post("/api/v1/auth/register", json=account | {"username": "profile"})
    headers = {"Authorization": "Bearer " + client.post("/api/v1/auth/login", json=account).get_json()["access_token"]}
    client.post("/api/v1/balance/funds", json={"amount": "1000"}, headers=headers)
    client.post("/api/v1/keys", json={"provider": "openai", "api_key": OPENAI_KEY}, headers=headers)
    urls = [f"/api/v1/chat/sessions/{client.post('/api/v1/chat/sessions', json={'model_id': 'openai/gpt-4o-mini'}, headers=headers).get_json()['id']}/messages"
            for _ in range(calls + WARMUP_PAIRS)]
    for url in urls[:WARMUP_PAIRS]:
        client.post(url, json={"content": "Say hello.", "max_tokens": 64}, headers=headers)

    statements = collections.defaultdict(list)
    execute = Cursor._execute

    def timed_execute(cursor, sql, params):
        started = time.perf_counter()
        execute(cursor, sql, params)
        statements[" ".join(sql.split())[:70]].append(time.perf_counter() - started)

    Cursor._execute = timed_execute
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for url in urls[WARMUP_PAIRS:]:
        client.post(url, json={"content": "Say hello.", "max_tokens": 64}, headers=headers)
    profiler.disable()
    elapsed = (time.perf_counter() - started) / calls * 1000
    Cursor._execute = execute
    print(f"{calls} calls in process (profiler on): {elapsed:.2f} ms each")
    print("SQL round trips per call (mean ms, first statement of a transaction includes BEGIN):")
    for sql, times in sorted(statements.items(), key=lambda item: -sum(item[1])):
        print(f"  {len(times) / calls:4.1f} x {statistics.mean(times) * 1000:6.3f}  {sql}")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    close_app(app)
    stub.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--in-flight", type=int, default=200)
    parser.add_argument("--stall", type=float, default=1.0)
    parser.add_argument("--profile", type=int, metavar="CALLS", help="profile CALLS calls in process instead")
    args = parser.parse_args()

    base_dir = tempfile.mkdtemp(prefix="qmarket-bench-pg-", dir="/tmp")
    postgres = testing.postgresql.Postgresql(**testing_postgresql_options(base_dir))
    stubs, servers = [], []
    try:
        owner_url = make_dsn(postgres.url(), dbname="bench")
        migrate.migrate(owner_url, APP_PASSWORD, out=lambda line: None)
        app_url = make_dsn(owner_url, user="app_user", password=APP_PASSWORD)
        if args.profile:
            profile(app_url, args.profile)
            return

        stubs.append(Stub())
        servers.append(LiveServer(settings_for(app_url, OPENAI_BASE_URL=f"{stubs[0].url}/v1", LOG_LEVEL="WARNING")))
        via, direct = overhead(servers[0], stubs[0], args.pairs)
        differences = [v - d for v, d in zip(via, direct)]
        print(f"{args.pairs} interleaved pairs, sequential, keep-alive clients (ms)")
        print(f"{'':>24} {'p50':>8} {'p99':>8}")
        for name, samples in (("through the service", via), ("straight to the stub", direct),
                              ("difference (per pair)", differences)):
            print(f"{name:>24} {percentile(samples, 0.5):8.2f} {percentile(samples, 0.99):8.2f}")
        print(f"{'overhead p50/p99 of each':>24} {percentile(via, 0.5) - percentile(direct, 0.5):8.2f} "
              f"{percentile(via, 0.99) - percentile(direct, 0.99):8.2f}")
        print(f"mean through the service {statistics.mean(via):.2f} ms, straight {statistics.mean(direct):.2f} ms")

        stubs.append(Stub(stall=args.stall))
        servers.append(LiveServer(settings_for(app_url, OPENAI_BASE_URL=f"{stubs[1].url}/v1", LOG_LEVEL="WARNING"),
                                  workers=int(os.environ.get("WEB_WORKERS", 2)),
                                  threads=int(os.environ.get("WEB_THREADS", 128))))
        statuses, seconds = in_flight(servers[1], stubs[1].url, args.in_flight)
        errors = len([status for status in statuses if status != 201])
        print(f"\n{args.in_flight} calls in flight at once, stub answering after {args.stall:.1f} s: "
              f"{statuses.count(201)} completed, {errors} errors, all done in {seconds:.2f} s")
    finally:
        for server in servers:
            server.stop()
        for stub in stubs:
            stub.stop()
        postgres.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
