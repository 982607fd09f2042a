"""Our gateway against LiteLLM's proxy, side by side in one run.

Both sit in front of the same OpenAI stub. Each call through a gateway is
paired with the same call straight to the stub, and the overhead is the
difference. Rounds interleave blocks: ours (/v1), LiteLLM, ours (/v1) again,
then the session chat endpoint, so a drift in the machine's speed touches every
side alike. Then streamed calls (time to the first content delta), then top-ups
(API against the bare procedure, 10 threads on one user)."""
import json
import os
import tempfile
import time
from contextlib import ExitStack, closing
from pathlib import Path

import httpx
import psycopg2

from bench.harness import UNREACHED_LIMIT, MakeRunService, Stub, percentile, timed
from bench.litellm_proxy import REQUIREMENT, LiteLLMProxy
from bench.money import Phase, api_topups, api_user, funded_users, run_threads
from devtools.cluster import free_port
from tests.support import settings_for

OPENAI_KEY = "sk-proj-bench-000000000000000000"
PROMPT = [{"role": "user", "content": "Say hello."}]
STUB_BODY = {"model": "gpt-4o-mini", "messages": PROMPT, "max_tokens": 64}
OURS_BODY = STUB_BODY | {"model": "openai/gpt-4o-mini"}
WARMUP_CALLS = 20
TOPUP_CLIENTS = 10


def load_average():
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def wait_for_quiet(max_load, patience):
    """Waits (at most `patience` seconds) for the 1-minute load to fall below
    `max_load`: another benchmark on the same cores skews every figure."""
    deadline = time.monotonic() + patience
    while os.getloadavg()[0] > max_load and time.monotonic() < deadline:
        time.sleep(10)
    print(f"load average {load_average()} at the start (waited for < {max_load:.1f})", flush=True)


def first_delta_ms(client, url, body, headers):
    """Milliseconds to the first chunk carrying reply text; the rest is read too."""
    started = time.perf_counter()
    first = None
    with client.stream("POST", url, json=body, headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.read()[:300]!r}")
        for line in response.iter_lines():
            if first is None and line.startswith("data: {"):
                choices = json.loads(line[6:]).get("choices") or [{}]
                if choices[0].get("delta", {}).get("content"):
                    first = (time.perf_counter() - started) * 1000
    if first is None:
        raise RuntimeError(f"no content delta from {url}")
    return first


class Sides:
    """One keep-alive client per destination, as an SDK keeps one; each method
    is one call, returning its milliseconds."""

    def __init__(self, stack, service, proxy, stub):
        self.service, self.proxy, self.stub = service, proxy, stub
        self.ours = stack.enter_context(httpx.Client(base_url=service.url, timeout=30))
        self.litellm = stack.enter_context(httpx.Client(base_url=proxy.url, timeout=30, headers=proxy.headers))
        self.direct = stack.enter_context(httpx.Client(base_url=stub.url, timeout=30,
                                                       headers={"Authorization": f"Bearer {OPENAI_KEY}"}))
        account = {"email": "bench@example.com", "password": "correct horse battery"}
        self.ours.post("/api/v1/auth/register", json=account | {"username": "bench"}).raise_for_status()
        token = self.ours.post("/api/v1/auth/login", json=account).json()["access_token"]
        self.user_headers = {"Authorization": f"Bearer {token}"}
        self.ours.post("/api/v1/balance/funds", json={"amount": "1000"}, headers=self.user_headers).raise_for_status()
        key = self.ours.post("/api/v1/access-keys", json={"name": "bench"}, headers=self.user_headers)
        key.raise_for_status()
        self.key_headers = {"Authorization": f"Bearer {key.json()['key']}"}

    def ours_v1(self):
        return timed(lambda: self.ours.post("/v1/chat/completions", json=OURS_BODY, headers=self.key_headers))

    def ours_session(self):
        # A fresh session (not timed), so every call sends the same one-message prompt.
        session = self.ours.post("/api/v1/chat/sessions", json={"model_id": "openai/gpt-4o-mini"},
                                 headers=self.user_headers).json()["id"]
        return timed(lambda: self.ours.post(f"/api/v1/chat/sessions/{session}/messages",
                                               json={"content": "Say hello.", "max_tokens": 64},
                                               headers=self.user_headers))

    def litellm_plain(self):
        return timed(lambda: self.litellm.post("/v1/chat/completions", json=STUB_BODY))

    def direct_plain(self):
        return timed(lambda: self.direct.post("/v1/chat/completions", json=STUB_BODY))

    def ours_v1_stream(self):
        return first_delta_ms(self.ours, "/v1/chat/completions", OURS_BODY | {"stream": True}, self.key_headers)

    def litellm_stream(self):
        return first_delta_ms(self.litellm, "/v1/chat/completions", STUB_BODY | {"stream": True}, None)

    def direct_stream(self):
        return first_delta_ms(self.direct, "/v1/chat/completions", STUB_BODY | {"stream": True}, None)


def interleaved(blocks, direct, calls, rounds):
    """{label: [(through, straight) ms]}: `blocks` is [(label, call, share)],
    run in order each round, `share` × calls / rounds pairs per block, after
    WARMUP_CALLS uncounted pairs of each."""
    for _, call, _ in blocks:
        for _ in range(WARMUP_CALLS):
            call(), direct()
    pairs = {label: [] for label, _, _ in blocks}
    for _ in range(rounds):
        for label, call, share in blocks:
            for _ in range(max(1, round(share * calls / rounds))):
                pairs[label].append((call(), direct()))
    return pairs


def raw_deposits(app_url, user_id, clients, seconds):
    """`clients` threads, each on its own connection, all on one user:
    SELECT add_user_funds(user, 0.01), one commit per call, for `seconds`."""

    def worker(index, barrier):
        latencies = []
        with closing(psycopg2.connect(app_url)) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            conn.commit()
            barrier.wait(timeout=60)
            deadline = time.perf_counter() + seconds
            while (started := time.perf_counter()) < deadline:
                with conn.cursor() as cur:
                    cur.execute("SELECT ok FROM add_user_funds(%s::uuid, 0.01)", (user_id,))
                    if not cur.fetchone()[0]:
                        raise RuntimeError("add_user_funds refused a deposit")
                conn.commit()
                latencies.append(time.perf_counter() - started)
        return latencies

    phase = Phase({})
    latencies = [value for result in run_threads(clients, worker, phase) for value in result]
    return len(latencies) / phase.wall, latencies


def top_up_rates(service_url, owner_url, app_url, requests, seconds):
    _, token = api_user(service_url)
    phase, latencies, statuses = api_topups(service_url, [token], requests, TOPUP_CLIENTS, True, {})
    if set(statuses) != {201}:
        raise RuntimeError(f"API top-ups answered {statuses}")
    api = (len(latencies) / phase.wall, latencies)
    raw = raw_deposits(app_url, funded_users(owner_url, 1)[0], TOPUP_CLIENTS, seconds)
    return api, raw


def overhead_rows(pairs, labels, reference):
    """Table rows: p50/p99 of the per-pair overhead, of the gateway and of the
    stub; then each of ours over `reference` (LiteLLM)."""
    overheads = {label: [through - straight for through, straight in pairs[label]] for label in pairs}
    lines = [f"{'':34} {'calls':>6} {'overhead p50':>13} {'p99':>8} {'gateway p50':>12} {'stub p50':>9}"]
    for label in labels:
        through = [pair[0] for pair in pairs[label]]
        straight = [pair[1] for pair in pairs[label]]
        lines.append(f"{label:34} {len(through):6d} {percentile(overheads[label], 0.5):13.2f} "
                     f"{percentile(overheads[label], 0.99):8.2f} {percentile(through, 0.5):12.2f} "
                     f"{percentile(straight, 0.5):9.2f}")
    base = overheads[reference]
    for label in labels:
        if label != reference and not label.startswith("  "):
            lines.append(f"{'ratio ' + label.split(',')[0] + ' / LiteLLM':34} {'':6} "
                         f"{percentile(overheads[label], 0.5) / percentile(base, 0.5):13.2f} "
                         f"{percentile(overheads[label], 0.99) / percentile(base, 0.99):8.2f}")
    return lines


def with_halves(pairs, label, first, second):
    """`label` holds both blocks of ours /v1; the halves stay as drift checks."""
    pairs[label] = pairs[first] + pairs[second]
    return pairs


def compare(owner_url, app_url, args):
    loads = []
    wait_for_quiet(args.max_load, args.wait_for_quiet)
    loads.append(("start", load_average()))
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="qmarket-bench-") as folder:
        stub = Stub(chunk_delay=args.chunk_delay)
        stack.callback(stub.stop)
        service = MakeRunService(settings_for(
            app_url, LOG_LEVEL="INFO", RATELIMIT_ENABLED="true", RATE_LIMIT_AUTH=UNREACHED_LIMIT,
            RATE_LIMIT_CHAT=UNREACHED_LIMIT, RATE_LIMIT_ACCESS_KEY=UNREACHED_LIMIT, DB_POOL_TIMEOUT=5,
            OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=f"{stub.url}/v1"), Path(folder) / "service.log")
        stack.callback(service.stop)
        proxy = LiteLLMProxy(free_port(), stub.url, "gpt-4o-mini", OPENAI_KEY)
        stack.callback(proxy.stop)
        sides = Sides(stack, service, proxy, stub)

        plain = interleaved([("  ours /v1, before LiteLLM", sides.ours_v1, 0.5), ("LiteLLM", sides.litellm_plain, 1),
                             ("  ours /v1, after LiteLLM", sides.ours_v1, 0.5),
                             ("ours session chat, billed", sides.ours_session, 1)],
                            sides.direct_plain, args.calls, args.rounds)
        with_halves(plain, "ours /v1, billed", "  ours /v1, before LiteLLM", "  ours /v1, after LiteLLM")
        loads.append(("after plain calls", load_average()))
        streamed = interleaved([("  ours /v1, before LiteLLM", sides.ours_v1_stream, 0.5),
                                ("LiteLLM", sides.litellm_stream, 1),
                                ("  ours /v1, after LiteLLM", sides.ours_v1_stream, 0.5)],
                               sides.direct_stream, args.stream_calls, args.rounds)
        with_halves(streamed, "ours /v1, billed", "  ours /v1, before LiteLLM", "  ours /v1, after LiteLLM")
        loads.append(("after streamed calls", load_average()))
        (api_rate, api_latencies), (raw_rate, raw_latencies) = top_up_rates(
            service.url, owner_url, app_url, args.topups, args.raw_seconds)
        loads.append(("after top-ups", load_average()))

    print(f"\nOurs: make run's settings (gunicorn.conf.py, 1 worker x 128 threads, JSON access log at INFO, "
          f"rate limits on at {UNREACHED_LIMIT}, fsync on). LiteLLM: {REQUIREMENT}, 1 worker, no database.")
    print(f"\nPlain calls, sequential, keep-alive clients; overhead = through the gateway - straight to the stub, "
          f"per pair (ms), {args.rounds} interleaved rounds")
    labels = ["ours /v1, billed", "  ours /v1, before LiteLLM", "  ours /v1, after LiteLLM",
              "ours session chat, billed", "LiteLLM"]
    print("\n".join(overhead_rows(plain, labels, "LiteLLM")))
    print(f"\nStreamed calls: added time to the first content delta (ms), stub pausing "
          f"{args.chunk_delay * 1000:.0f} ms before each delta")
    print("\n".join(overhead_rows(streamed, [label for label in labels if "session" not in label], "LiteLLM")))
    print(f"\nTop-ups, {TOPUP_CLIENTS} keep-alive threads on one user")
    print(f"  API, keyed (POST /api/v1/balance/funds, Idempotency-Key): {len(api_latencies)} calls, "
          f"{api_rate:.0f}/s, p50 {percentile(api_latencies, 0.5) * 1000:.1f} ms")
    print(f"  raw SELECT add_user_funds, one commit each: {len(raw_latencies)} calls, {raw_rate:.0f}/s, "
          f"p50 {percentile(raw_latencies, 0.5) * 1000:.1f} ms")
    print(f"  ratio API / raw: {api_rate / raw_rate:.2f}")
    print("\nload average (1/5/15 min): " + "; ".join(f"{when} {value}" for when, value in loads))
