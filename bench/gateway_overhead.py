"""What the gateway adds to a chat call.

The same OpenAI-format call, through the service (authenticated, held, settled,
recorded) and straight to the stub, interleaved pair by pair; p50 and p99 of
each and of the difference. Then, with the stub answering after a stall, many
calls in flight at once must all complete.

    .venv/bin/python bench/gateway_overhead.py [--pairs 300] [--in-flight 200] [--stall 1.0]
    .venv/bin/python bench/gateway_overhead.py --profile 300            # where the time goes, in process
    .venv/bin/python bench/gateway_overhead.py --profile 300 --path v1  # the same for POST /v1/chat/completions
    .venv/bin/python bench/gateway_overhead.py --peer litellm           # side by side with LiteLLM's proxy

Everything runs on 127.0.0.1: a throwaway PostgreSQL with durable commits
(fsync on, as `make run`'s), the service under gunicorn, and the stub in its
own process (so the client's GIL is not shared). `--peer litellm` installs
LiteLLM's proxy once into .bench/litellm-venv (git-ignored)."""
import argparse
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import UNREACHED_LIMIT, Stub, durable_database, percentile, timed  # noqa: E402
from tests.support import LiveServer, settings_for  # noqa: E402

OPENAI_KEY = "sk-proj-bench-000000000000000000"
WARMUP_PAIRS = 20
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 64}


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


def profile(app_url, calls, path):
    """The chat call in this process (Flask's test client; the stub in its own
    process) with make run's settings (INFO access log, rate limits counted):
    `session` is POST /api/v1/chat/sessions/{id}/messages with a vault key, `v1`
    POST /v1/chat/completions with an access key and the house key. Prints the
    mean without and with the profiler, each SQL statement's time, the time by
    layer, the same call over HTTP through gunicorn, and cProfile's heaviest
    functions."""
    import cProfile
    import collections
    import pstats
    import tempfile

    from app import close_app, create_app
    from bench.harness import MakeRunService
    from bench.layers import by_layer, round_trips
    from database.pool import Cursor

    stub = Stub()
    settings = settings_for(app_url, OPENAI_BASE_URL=f"{stub.url}/v1", OPENAI_API_KEY=OPENAI_KEY, LOG_LEVEL="INFO",
                            RATELIMIT_ENABLED="true", RATE_LIMIT_AUTH=UNREACHED_LIMIT, RATE_LIMIT_CHAT=UNREACHED_LIMIT,
                            RATE_LIMIT_ACCESS_KEY=UNREACHED_LIMIT, DB_POOL_TIMEOUT=5)
    # The JSON access log is formatted and written as under make run, to nowhere.
    real_stderr, sys.stderr = sys.stderr, open(os.devnull, "w")
    try:
        app = create_app(settings)
    finally:
        sys.stderr = real_stderr
    client = app.test_client()
    send = _profiled_call(client, path, 2 * calls + WARMUP_PAIRS)
    for _ in range(WARMUP_PAIRS):
        send()
    plain_started = time.perf_counter()
    for _ in range(calls):
        send()
    in_process = (time.perf_counter() - plain_started) / calls * 1000

    statements = collections.defaultdict(list)
    execute = Cursor._execute

    def timed_execute(cursor, sql, params):
        started = time.perf_counter()
        execute(cursor, sql, params)
        statements[" ".join(sql.split())[:70]].append(time.perf_counter() - started)

    def timed_commit(cursor):
        started = time.perf_counter()
        commit(cursor)
        if cursor.began:
            statements["COMMIT"].append(time.perf_counter() - started)

    commit = Cursor.commit
    Cursor._execute, Cursor.commit = timed_execute, timed_commit
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for _ in range(calls):
        send()
    profiler.disable()
    profiled = (time.perf_counter() - started) / calls * 1000
    Cursor._execute, Cursor.commit = execute, commit
    with httpx.Client(base_url=stub.url, headers={"Authorization": f"Bearer {OPENAI_KEY}"}) as direct:
        straight = statistics.mean(timed(lambda: direct.post("/v1/chat/completions", json=BODY))
                                   for _ in range(calls))
    close_app(app)

    with tempfile.TemporaryDirectory() as folder:
        service = MakeRunService(settings, Path(folder) / "service.log")
        try:
            with httpx.Client(base_url=service.url, timeout=30) as http:
                send_http = _profiled_call(http, path, calls + WARMUP_PAIRS)
                for _ in range(WARMUP_PAIRS):
                    send_http()
                over_http = statistics.mean(_timed_send(send_http) for _ in range(calls))
        finally:
            service.stop()
    stub.stop()

    print(f"{calls} calls of {path} in process: {in_process:.2f} ms each without the profiler, {profiled:.2f} ms with; "
          f"straight to the stub {straight:.2f} ms; over HTTP through gunicorn (make run's settings) "
          f"{over_http:.2f} ms")
    print("SQL round trips per call (mean ms, first statement of a transaction includes BEGIN):")
    for sql, times in sorted(statements.items(), key=lambda item: -sum(item[1])):
        print(f"  {len(times) / calls:4.1f} x {statistics.mean(times) * 1000:6.3f}  {sql}")
    print("psycopg2 calls per call (each a round trip): " +
          ", ".join(f"{name} {count / calls:.1f}" for name, count in round_trips(profiler).items()))
    layers = by_layer(profiler)
    total = sum(layers.values())
    print(f"Time by layer (profiled ms per call; share; share of {in_process:.2f} ms unprofiled):")
    for layer, seconds in sorted(layers.items(), key=lambda item: -item[1]):
        print(f"  {seconds / calls * 1000:7.3f} ms {seconds / total:6.1%} {seconds / total * in_process:7.3f} ms  {layer}")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def _profiled_call(client, path, sessions):
    """A function making one call of `path` through `client` (a test client or
    an httpx client on the service), set up with its user, funds and key."""
    account = {"email": f"profile-{time.monotonic_ns()}@example.com", "password": "correct horse battery"}
    client.post("/api/v1/auth/register", json=account | {"username": f"p{time.monotonic_ns()}"})
    login = client.post("/api/v1/auth/login", json=account)
    headers = {"Authorization": "Bearer " + _json(login)["access_token"]}
    client.post("/api/v1/balance/funds", json={"amount": "1000"}, headers=headers)
    if path == "v1":
        created = client.post("/api/v1/access-keys", json={"name": "profile"}, headers=headers)
        key = {"Authorization": "Bearer " + _json(created)["key"]}
        body = BODY | {"model": "openai/gpt-4o-mini"}
        return lambda: _checked(client.post("/v1/chat/completions", json=body, headers=key))
    client.post("/api/v1/keys", json={"provider": "openai", "api_key": OPENAI_KEY}, headers=headers)
    urls = iter([f"/api/v1/chat/sessions/{_json(client.post('/api/v1/chat/sessions', json={'model_id': 'openai/gpt-4o-mini'}, headers=headers))['id']}/messages"
                 for _ in range(sessions)])
    return lambda: _checked(client.post(next(urls), json={"content": "Say hello.", "max_tokens": 64}, headers=headers))


def _json(response):
    return response.get_json() if hasattr(response, "get_json") else response.json()


def _checked(response):
    if response.status_code >= 300:
        raise RuntimeError(f"{response.status_code}: {_json(response)}")
    return response


def _timed_send(send):
    started = time.perf_counter()
    send()
    return (time.perf_counter() - started) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--in-flight", type=int, default=200)
    parser.add_argument("--stall", type=float, default=1.0)
    parser.add_argument("--profile", type=int, metavar="CALLS", help="profile CALLS calls in process instead")
    parser.add_argument("--path", choices=("session", "v1"), default="session", help="the call --profile profiles")
    parser.add_argument("--peer", choices=("litellm",), help="measure side by side with this gateway instead")
    peer = parser.add_argument_group("--peer litellm")
    peer.add_argument("--calls", type=int, default=300, help="plain calls per side")
    peer.add_argument("--stream-calls", type=int, default=200, help="streamed calls per side")
    peer.add_argument("--rounds", type=int, default=10, help="interleaved rounds the calls are split into")
    peer.add_argument("--chunk-delay", type=float, default=0.005, help="the stub's pause before each streamed delta")
    peer.add_argument("--topups", type=int, default=2000, help="API top-ups")
    peer.add_argument("--raw-seconds", type=float, default=5.0, help="seconds of raw add_user_funds calls")
    peer.add_argument("--max-load", type=float, default=1.5, help="wait for the 1-minute load to fall below this")
    peer.add_argument("--wait-for-quiet", type=float, default=300, help="at most this many seconds")
    args = parser.parse_args()

    with durable_database() as (owner_url, app_url):
        if args.peer:
            from bench.against_litellm import compare
            compare(owner_url, app_url, args)
        elif args.profile:
            profile(app_url, args.profile, args.path)
        else:
            measure_overhead(app_url, args)


def measure_overhead(app_url, args):
    stubs, servers = [], []
    try:
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


if __name__ == "__main__":
    main()
