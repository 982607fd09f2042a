"""Failover: what a crash of a model's first deployment costs its calls, and
what its open circuit costs each call after it.

A catalog model with two deployments, [primary, backup], each an OpenAI-format
stub in a process of its own (tests/stubs.py) at a base URL of its own, as
PROVIDERS_FILE configures them. The service runs as `make run` serves it:
gunicorn with gunicorn.conf.py, one worker (memory:// rate limits), every
setting at its default (BREAKER_FAILURES 5, BREAKER_COOLDOWN 30 s,
PROVIDER_RETRIES 2, PROVIDER_TIMEOUT 60 s, LOG_LEVEL INFO), except the rate
limits, set above anything this run sends (they still count every call).
One run measures:

1. Recovery. --threads client threads, each with its own keep-alive httpx
   client, send billed `POST /v1/chat/completions` on the model, one every
   --interval seconds each (or as soon as the one before answered, if later).
   After --before seconds the primary's process is killed (SIGKILL: the kernel
   closes every connection it held and refuses new ones); the load goes on
   for --after seconds, long enough for the circuit's cooldown to end and one
   call to probe the dead primary. Each call is sent with an X-Request-ID of
   its own, and the service's log says which calls tried the primary and
   failed and which opened its circuit, so every call is put in its window:
   before the kill, in flight at it, after it while the circuit was still
   closed (tried the dead primary first), after the circuit opened (primary
   passed over without a try), and the probes. Reported: failed calls (any
   answer but 200), the last one's time after the kill, when the circuit
   opened, p50/p99 of each window, and the CPU each process group used
   before and after the kill (/proc; "other" is the rest of the machine).
2. The p99 (and p50) added while the circuit is open: window "circuit open"
   against window "before the kill", same load.
3. What an open circuit costs a call, sequential calls: the model (its
   first deployment's circuit open, served by the second) and a model listing
   the same two deployments the other way round (served by its first, healthy),
   alternated in random order, each paired with the same call straight to the
   stub that served (the backup); overhead = through the service - straight,
   as bench/gateway_overhead.py measures it. The same model's overhead before
   the kill (served by the primary, healthy) is measured too, for reference.

It ends with checks: README's ledger query returns no rows, nothing is held,
and the user was charged exactly the successful calls times the per-call price
(the stubs' usage, 11 prompt and 7 completion tokens, at the model's prices),
each call's charge recorded against the provider its X-Served-By named; it
exits 1 if any of them fails.

    .venv/bin/python bench/failover.py            # about 70 s on 2 cores
    .venv/bin/python bench/failover.py --threads 8 --interval 0.1 --before 10 --after 40 --pairs 200

Everything runs on 127.0.0.1, with a throwaway PostgreSQL committing durably
(bench/harness.py). The service's log is read from a temporary folder and
deleted with it; --keep-log PATH keeps a copy."""
import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack, closing
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.config import SETTINGS  # noqa: E402
from bench.harness import UNREACHED_LIMIT, MakeRunService, Stub, durable_database, percentile, timed  # noqa: E402
from bench.money import cpu_by_group, machine_cpu  # noqa: E402
from tests.inference.test_routing import PROMPT, model  # noqa: E402
from tests.support import (add_models, live_user, openai_provider, providers_file, readme_ledger_query,  # noqa: E402
                           settings_for)

MODEL, HEALTHY = "primary/llama", "backup/llama"
PRIMARY, BACKUP = ("primary", "llama"), ("backup", "llama-b")
PRICES = (Decimal("0.10"), Decimal("0.20"))  # per million prompt and completion tokens
USAGE = (11, 7)  # what the stubs report
PER_CALL = sum(tokens * price for tokens, price in zip(USAGE, PRICES)) / 1_000_000
KEYS = {"PRIMARY_KEY": "sk-primary-bench-0000001", "BACKUP_KEY": "sk-backup-bench-00000001"}
MAX_TOKENS = 50
# settings_for's test values that `make run` leaves at their defaults.
TEST_ONLY = ("PASSWORD_ITERATIONS", "LOG_LEVEL", "DB_POOL_TIMEOUT", "RATELIMIT_ENABLED", "PROVIDER_RETRIES",
             "BREAKER_FAILURES", "BREAKER_MIN_CALLS")
WARMUP_CALLS = 20


@dataclass
class Call:
    request_id: str
    began: float   # time.monotonic()
    ended: float
    status: object  # the HTTP status, or the client's exception's name
    served_by: str | None

    @property
    def ms(self):
        return (self.ended - self.began) * 1000


def load_average():
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def body(model_id):
    return {"model": model_id, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS}


def declared_providers(folder, stubs):
    return providers_file(folder, *(openai_provider(name, f"{stubs[name].url}/v1", key)
                                    for name, key in (("primary", "PRIMARY_KEY"), ("backup", "BACKUP_KEY"))))


def load_models(owner_url):
    add_models(owner_url, model(MODEL, PRICES, PRIMARY, BACKUP), model(HEALTHY, PRICES, BACKUP, PRIMARY))


def send(client, model_id, request_id):
    """One billed call: a Call, whatever it was answered (or not)."""
    began = time.monotonic()
    try:
        response = client.post("/v1/chat/completions", json=body(model_id), headers={"X-Request-ID": request_id})
        status, served_by = response.status_code, response.headers.get("X-Served-By")
    except httpx.HTTPError as exc:
        status, served_by = type(exc).__name__, None
    return Call(request_id, began, time.monotonic(), status, served_by)


def steady_load(url, key, threads, interval, before, after, kill, snapshot):
    """The calls of `threads` paced threads for before + after seconds, with
    `kill()` run `before` seconds in: (the calls, each thread's first call,
    made before the clock to open its connection, the kill's time.monotonic(),
    `snapshot()` taken at the start, at the kill and at the end)."""
    calls, warm, lock = [], [], threading.Lock()
    began = {}
    start = threading.Barrier(threads + 1, action=lambda: began.update(at=time.monotonic()))

    def worker(index):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=90) as client:
            first = send(client, MODEL, f"load-warm-{index}")
            mine = []
            start.wait()
            next_send = began["at"] + index * interval / threads
            while next_send < began["at"] + before + after:
                time.sleep(max(0.0, next_send - time.monotonic()))
                call = send(client, MODEL, f"load-{index}-{len(mine)}")
                mine.append(call)
                next_send = max(next_send + interval, call.ended)
        with lock:
            warm.append(first)
            calls.extend(mine)

    workers = [threading.Thread(target=worker, args=(index,), daemon=True) for index in range(threads)]
    for thread in workers:
        thread.start()
    snapshots = [snapshot()]
    start.wait()
    time.sleep(max(0.0, began["at"] + before - time.monotonic()))
    snapshots.append(snapshot())
    killed_at = time.monotonic()
    kill()
    for thread in workers:
        thread.join()
    snapshots.append(snapshot())
    return sorted(calls, key=lambda call: call.began), warm, killed_at, snapshots


def process_groups(service, stubs):
    """{group: root pid} of the processes this run started, for cpu_by_group;
    "client" is this process (the stubs', gunicorn's and PostgreSQL's own
    subtrees not counted in it)."""
    children = [int(pid) for pid in Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()]
    postgres = next(pid for pid in children if "postgres" in Path(f"/proc/{pid}/cmdline").read_text())
    return {"client": os.getpid(), "gunicorn": service.process.pid, "postgres": postgres,
            "stubs": stubs["backup"].process.pid, "primary stub": stubs["primary"].process.pid}


def snapshot_of(groups):
    return lambda: (time.monotonic(), cpu_by_group(groups), machine_cpu()[0])


def cpu_between(first, second, calls):
    """({group: share of the cores used between two snapshots}, "other" the
    rest of the machine; gunicorn's CPU ms per call)."""
    wall = second[0] - first[0]
    used = {group: second[1][group] - first[1][group] for group in first[1]}
    # Once reaped, the killed stub's time counts in this process's (its children's): the sum is right.
    used["client, stubs"] = used.pop("client") + used.pop("stubs") + used.pop("primary stub")
    used["other"] = max(0.0, second[2] - first[2] - sum(used.values()))
    shares = {group: seconds / wall / os.cpu_count() for group, seconds in used.items()}
    return shares, used["gunicorn"] * 1000 / max(calls, 1)


def sequential(url, key, stub, rounds, models, tag):
    """{model: [(through the service ms, straight to the stub ms, request id)]}:
    `rounds` rounds, each model once a round in random order, each call
    followed by the same call straight to the stub that serves them (`stub`:
    its provider's name, base URL and key), after WARMUP_CALLS rounds not
    counted. Every call through the service must be served by that stub."""
    name, stub_url, stub_key = stub
    samples = {model_id: [] for model_id in models}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client, \
            httpx.Client(base_url=stub_url, headers={"Authorization": f"Bearer {stub_key}"}, timeout=30) as direct:
        for round_number in range(WARMUP_CALLS + rounds):
            order = list(models)
            random.shuffle(order)
            for model_id in order:
                call = send(client, model_id, f"{tag}-{model_id.replace('/', '_')}-{round_number}")
                if (call.status, call.served_by) != (200, name):
                    raise RuntimeError(f"{call.request_id}: {call.status}, served by {call.served_by}, not {name}")
                straight = timed(lambda: direct.post("/v1/chat/completions", json=body(models[model_id])))
                if round_number >= WARMUP_CALLS:
                    samples[model_id].append((call.ms, straight, call.request_id))
    return samples


def log_events(path):
    """(request ids whose call tried the primary and failed, request ids of
    the calls that opened its circuit, in order) from the service's JSON log."""
    tried, opened = set(), []
    for line in Path(path).read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        message = entry.get("message", "")
        if message.startswith(f"primary failed for {MODEL} "):
            tried.add(entry.get("request_id"))
        elif message.startswith(f"the circuit of {'/'.join(PRIMARY)} opened"):
            opened.append(entry.get("request_id"))
    return tried, opened


def windows(calls, killed_at, tried, opened):
    """{window: [Call]} and the call that first opened the circuit (None if none did)."""
    by_id = {call.request_id: call for call in calls}
    first_open = next((by_id[request_id] for request_id in opened if request_id in by_id), None)
    opened_by = first_open.ended if first_open else float("inf")
    named = {"before the kill": [], "in flight at the kill": [], "after it, circuit closed: tried primary first": [],
             "circuit open: primary passed over": [], "probe of the dead primary after the cooldown": []}
    for call in calls:
        if call.ended < killed_at:
            named["before the kill"].append(call)
        elif call.began < killed_at:
            named["in flight at the kill"].append(call)
        elif call.request_id in tried and call.began <= opened_by:
            named["after it, circuit closed: tried primary first"].append(call)
        elif call.request_id in tried:
            named["probe of the dead primary after the cooldown"].append(call)
        else:
            named["circuit open: primary passed over"].append(call)
    return named, first_open


def ledger_checks(owner_url, user_id, successes, served):
    """Problems found in the ledger, as sentences (none: it is exact)."""
    problems = []
    with closing(psycopg2.connect(owner_url)) as conn, conn.cursor() as cur:
        cur.execute(readme_ledger_query())
        rows = cur.fetchall()
        if rows:
            problems.append(f"README's ledger query returned {len(rows)} rows: {rows[:3]}")
        cur.execute("SELECT spent_balance, held_balance FROM user_balance WHERE user_id = %s", (user_id,))
        spent, held = cur.fetchone()
        if held != 0:
            problems.append(f"{held} is still held")
        if spent != successes * PER_CALL:
            problems.append(f"charged {spent}, not {successes} successful calls x {PER_CALL} = {successes * PER_CALL}")
        cur.execute("SELECT c.served_provider, count(*) FROM call_charges c JOIN transactions t ON t.id = c.hold_id"
                    " WHERE t.user_id = %s GROUP BY 1", (user_id,))
        recorded = dict(cur.fetchall())
        if recorded != dict(served):
            problems.append(f"charges recorded by provider {recorded}, answers said {dict(served)}")
    return problems, spent


def row(label, samples):
    return (f"{label:<54} {len(samples):>6} {percentile(samples, 0.5):8.2f} {percentile(samples, 0.99):8.2f} "
            f"{max(samples, default=float('nan')):8.2f}")


def report_sequential(title, samples, models):
    print(title)
    print(f"{'':<54} {'calls':>6} {'p50 ms':>8} {'p99 ms':>8}   overhead p50 / p99 (of each)   per pair p50 / p99")
    overheads = {}
    for model_id, label in models.items():
        via = [sample[0] for sample in samples[model_id]]
        direct = [sample[1] for sample in samples[model_id]]
        pairs = [v - d for v, d in zip(via, direct)]
        overheads[model_id] = (percentile(via, 0.5) - percentile(direct, 0.5),
                               percentile(via, 0.99) - percentile(direct, 0.99))
        print(f"{label:<54} {len(via):>6} {percentile(via, 0.5):8.2f} {percentile(via, 0.99):8.2f}   "
              f"{overheads[model_id][0]:8.2f} / {overheads[model_id][1]:6.2f}            "
              f"{percentile(pairs, 0.5):6.2f} / {percentile(pairs, 0.99):6.2f}")
        print(f"{'  straight to the stub':<54} {len(direct):>6} {percentile(direct, 0.5):8.2f} "
              f"{percentile(direct, 0.99):8.2f}")
    return overheads


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=8, help="client threads of the steady load")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between one thread's calls")
    parser.add_argument("--before", type=float, default=10, help="seconds of load before the kill")
    parser.add_argument("--after", type=float, default=40,
                        help="seconds of load after it (past BREAKER_COOLDOWN, for the probe)")
    parser.add_argument("--pairs", type=int, default=200, help="sequential calls of each model (part 3)")
    parser.add_argument("--keep-log", type=Path, metavar="PATH", help="copy the service's log here")
    args = parser.parse_args()
    defaults = {name: SETTINGS[name][0] for name in ("BREAKER_FAILURES", "BREAKER_COOLDOWN", "BREAKER_WINDOW",
                                                     "BREAKER_MIN_CALLS", "PROVIDER_RETRIES", "PROVIDER_TIMEOUT")}
    load_at_start = load_average()
    print(f"load average {load_at_start} at the start; {os.cpu_count()} cores; make run's settings: "
          + ", ".join(f"{name} {value}" for name, value in defaults.items()), flush=True)

    with ExitStack() as stack:
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="qmarket-bench-failover-"))
        owner_url, app_url = stack.enter_context(durable_database())
        stubs = {"primary": Stub(), "backup": Stub()}
        for stub in stubs.values():
            stack.callback(stub.stop)
        load_models(owner_url)
        settings = settings_for(app_url, PROVIDERS_FILE=declared_providers(folder, stubs), RATE_LIMIT_AUTH=UNREACHED_LIMIT,
                                RATE_LIMIT_CHAT=UNREACHED_LIMIT, RATE_LIMIT_ACCESS_KEY=UNREACHED_LIMIT, **KEYS)
        for name in TEST_ONLY:
            del settings[name]
        log_path = Path(folder) / "service.log"
        service = MakeRunService(settings, log_path)
        stack.callback(service.stop)
        if args.keep_log:
            stack.callback(lambda: shutil.copyfile(log_path, args.keep_log))

        headers, user_id = live_user(service.url, "100")
        key = httpx.post(f"{service.url}/api/v1/access-keys", json={"name": "failover"}, headers=headers).json()["key"]
        primary_stub = ("primary", stubs["primary"].url, KEYS["PRIMARY_KEY"])
        backup_stub = ("backup", stubs["backup"].url, KEYS["BACKUP_KEY"])

        # 3, reference: the model healthy, served by the primary (the same stub program as the backup).
        healthy_before = sequential(service.url, key, primary_stub, args.pairs, {MODEL: "llama"}, "before")

        def kill():
            stubs["primary"].process.send_signal(signal.SIGKILL)
            stubs["primary"].process.wait()

        print(f"steady load: {args.threads} threads, one call each every {args.interval * 1000:.0f} ms, "
              f"{args.before:.0f} s, then the primary killed, then {args.after:.0f} s", flush=True)
        snapshot = snapshot_of(process_groups(service, stubs))
        calls, warm, killed_at, snapshots = steady_load(service.url, key, args.threads, args.interval, args.before,
                                                        args.after, kill, snapshot)
        load_after_kill = load_average()

        # 3: the circuit stays open (the probe during the load reopened it for BREAKER_COOLDOWN).
        after = sequential(service.url, key, backup_stub, args.pairs, {MODEL: "llama-b", HEALTHY: "llama-b"},
                           "after")
        tried, opened = log_events(log_path)

        sequential_calls = len(healthy_before[MODEL]) + len(after[MODEL]) + len(after[HEALTHY])
        served = Counter(call.served_by for call in calls + warm if call.status == 200)
        served["primary"] += len(healthy_before[MODEL]) + WARMUP_CALLS
        served["backup"] += len(after[MODEL]) + len(after[HEALTHY]) + 2 * WARMUP_CALLS
        failed = [call for call in calls + warm if call.status != 200]
        successes = sum(served.values())
        problems, spent = ledger_checks(owner_url, user_id, successes, served)
        probes_in_sequence = [request_id for request_id in tried if request_id.startswith("after-")]
        load_at_end = load_average()

    named, first_open = windows(calls, killed_at, tried, opened)
    print(f"\n1. Recovery: {len(calls)} calls of {args.threads} threads, primary killed {args.before:.0f} s in")
    if failed:
        last = max(failed, key=lambda call: call.ended)
        print(f"   {len(failed)} calls failed ({Counter(str(call.status) for call in failed)}); the last answered "
              f"{(last.ended - killed_at) * 1000:.0f} ms after the kill: every call succeeded from then on")
    else:
        print("   no call failed: every call succeeded throughout (recovery time 0)")
    if first_open:
        print(f"   the circuit opened {(first_open.began - killed_at) * 1000:.0f}-"
              f"{(first_open.ended - killed_at) * 1000:.0f} ms after the kill (the call that opened it "
              f"began / was answered then); {len(named['after it, circuit closed: tried primary first'])} calls "
              f"began after the kill and tried the dead primary first")
    else:
        print("   the circuit never opened")
    probes = named["probe of the dead primary after the cooldown"]
    if probes:
        print("   probes: " + ", ".join(f"{(call.began - killed_at):.1f} s after the kill ({call.ms:.1f} ms)"
                                       for call in probes))
    print(f"   served by: {dict(Counter(call.served_by for call in calls))}; circuit opened by the log "
          f"{len(opened)} times")
    print(f"\n{'window':<54} {'calls':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for label, members in named.items():
        print(row(label, [call.ms for call in members]))
    print("\nCPU, share of the machine's cores (other: the rest of the machine), and gunicorn's CPU per call")
    for label, (first, second) in (("before the kill", snapshots[:2]), ("after it", snapshots[1:])):
        count = len([call for call in calls if first[0] <= call.began < second[0]])
        shares, per_call = cpu_between(first, second, count)
        print(f"   {label:<16} {count / (second[0] - first[0]):6.1f} calls/s  "
              + "  ".join(f"{group} {share:4.0%}" for group, share in shares.items())
              + f"  gunicorn {per_call:.2f} ms a call")
    before_ms = [call.ms for call in named["before the kill"]]
    open_ms = [call.ms for call in named["circuit open: primary passed over"]]
    print(f"\n2. Added while the circuit is open, against before the kill (same load): "
          f"p50 {percentile(open_ms, 0.5) - percentile(before_ms, 0.5):+.2f} ms, "
          f"p99 {percentile(open_ms, 0.99) - percentile(before_ms, 0.99):+.2f} ms")

    print("\n3. Sequential calls, one keep-alive client; overhead = through the service - straight to the stub "
          "that served (ms)")
    report_sequential("   before the kill", healthy_before, {MODEL: f"{MODEL}, primary healthy, serves"})
    overheads = report_sequential("   after it, alternated", after,
                                  {MODEL: f"{MODEL}, primary's circuit open, backup serves",
                                   HEALTHY: f"{HEALTHY}, backup first, serves"})
    cost = (overheads[MODEL][0] - overheads[HEALTHY][0], overheads[MODEL][1] - overheads[HEALTHY][1])
    print(f"   an open circuit costs a call p50 {cost[0]:+.2f} ms, p99 {cost[1]:+.2f} ms "
          f"(overhead with it open - overhead of the healthy first deployment)")
    if probes_in_sequence:
        print(f"   ({len(probes_in_sequence)} sequential calls probed the primary: {sorted(probes_in_sequence)})")

    print(f"\nLedger: {successes} successful calls ({sequential_calls} sequential, {3 * WARMUP_CALLS + args.threads} "
          f"warm-up) x {PER_CALL} = {successes * PER_CALL}; charged {spent}")
    print("   " + ("; ".join(problems) if problems else "exact: README's ledger query returns no rows, nothing held, "
                                                         "charges recorded against the provider that served"))
    print(f"load average {load_at_start} at the start, {load_after_kill} after the load, {load_at_end} at the end")
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
