"""Money throughput: top-ups through the API against raw deduct_user_balance calls.

Starts its own throwaway PostgreSQL (as the tests do) and the service under
gunicorn on loopback, then measures, in one run:

  API        POST /api/v1/balance/funds of "0.01" from --clients threads (one
             keep-alive httpx client each), all as one user: --requests with a
             fresh Idempotency-Key each (the brief's figure), --nokey-requests
             without one (no claim transaction); then --spread-requests keyed,
             each client thread its own user (no queue on one balance row)
  raw        SELECT deduct_user_balance(user, 0.0001) as app_user from --clients
             threads (own psycopg2 connection each, a commit per call) for
             --seconds, first one user per thread, then all on one user (every
             call queues on that user's balance row lock)

and the CPU each process group used per phase (/proc), so it shows what the
two cores were busy with. Loopback only; every loop is bounded.

    .venv/bin/python bench/money.py                      # ~40 s
    .venv/bin/python bench/money.py --requests 500 --seconds 2
    .venv/bin/python bench/money.py --profile 300        # plus cProfile of in-process top-ups
"""
import argparse
import cProfile
import os
import platform
import pstats
import shutil
import sys
import tempfile
import threading
import time
import uuid
from contextlib import closing
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["ENV_FILE"] = os.devnull  # never a developer's .env

import httpx  # noqa: E402
import psycopg2  # noqa: E402
import testing.postgresql  # noqa: E402
from psycopg2.extensions import make_dsn  # noqa: E402

import migrate  # noqa: E402
from devtools.cluster import testing_postgresql_options  # noqa: E402
from tests.support import PASSWORD, LiveServer, readme_ledger_query, settings_for  # noqa: E402

APP_PASSWORD = "app-user-bench-password"
DATABASE = "qmarket_bench"
TOPUP = "0.01"
HOLD = Decimal("0.0001")
FUNDING = Decimal("1000")
MAX_RAW_CALLS_PER_THREAD = 200_000  # a bound on the timed loop, far above what --seconds allows
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ CPU accounting

def _stat(pid):
    """(ppid, cpu seconds) of a live process, from /proc/<pid>/stat: its own
    user + system time plus that of its children already reaped (a PostgreSQL
    backend that has exited is then still counted, in the postmaster)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(fields[1]), sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def _pids(root):
    return (root,) if isinstance(root, int) else tuple(root)


def cpu_by_group(roots):
    """{group: cpu seconds of its root process (or processes) and their live
    descendants, not counting another group's subtree (the bench starts
    gunicorn and postgres)}."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat:
                stats[int(entry)] = stat
    children = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    totals, group_roots = {}, {group: _pids(root) for group, root in roots.items()}
    for group, own in group_roots.items():
        seen, todo, total = set(), list(own), 0.0
        others = {pid for other, pids in group_roots.items() if other != group for pid in pids}
        while todo:
            pid = todo.pop()
            if pid in seen or pid in others or pid not in stats:
                continue
            seen.add(pid)
            total += stats[pid][1]
            todo.extend(children.get(pid, []))
        totals[group] = total
    return totals


def machine_cpu():
    """(busy, all) CPU seconds of the whole machine so far, from /proc/stat."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS, sum(ticks) / CLOCK_TICKS


class Phase:
    """Wall time and per-group CPU of one measured phase, plus "other": what
    the rest of the machine used meanwhile (another job skews the figures)."""

    def __init__(self, roots):
        self.roots = roots

    def __enter__(self):
        self.cpu = cpu_by_group(self.roots)
        self.machine = machine_cpu()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.started
        after, machine = cpu_by_group(self.roots), machine_cpu()
        self.cpu = {group: after[group] - self.cpu[group] for group in self.roots}
        busy = machine[0] - self.machine[0]
        self.cpu["other"] = max(0.0, busy - sum(self.cpu.values()))


# ------------------------------------------------------------------ workloads

def run_threads(count, target, phase):
    """Runs target(index, barrier) in `count` threads that start together once
    each has set up (connected); `phase` measures from that start to the last
    thread's end. The results in thread order; raises the first error a thread hit."""
    barrier = threading.Barrier(count + 1)
    results, errors = [None] * count, []

    def body(index):
        try:
            results[index] = target(index, barrier)
        except BaseException as exc:  # reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    try:
        barrier.wait(timeout=60)
    except threading.BrokenBarrierError:
        pass
    with phase:
        for thread in threads:
            thread.join(timeout=300)
    if errors:
        raise errors[0]
    return results


def api_topups(url, tokens, total, clients, keyed, roots):
    """`total` top-ups split over `clients` keep-alive clients, client i acting as
    user tokens[i % len(tokens)]; (Phase, latencies, statuses)."""
    shares = [total // clients + (i < total % clients) for i in range(clients)]

    def client(index, barrier):
        latencies, statuses = [], {}
        token = tokens[index % len(tokens)]
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            http.get("/api/v1/balance").raise_for_status()  # opens the connection before the clock starts
            barrier.wait(timeout=60)
            for _ in range(shares[index]):
                headers = {"Idempotency-Key": f"bench-{uuid.uuid4()}"} if keyed else None
                started = time.perf_counter()
                response = http.post("/api/v1/balance/funds", json={"amount": TOPUP}, headers=headers)
                latencies.append(time.perf_counter() - started)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        return latencies, statuses

    phase = Phase(roots)
    results = run_threads(clients, client, phase)
    latencies = [value for result, _ in results for value in result]
    statuses = {}
    for _, counts in results:
        for status, count in counts.items():
            statuses[status] = statuses.get(status, 0) + count
    return phase, latencies, statuses


def raw_deducts(app_url, user_ids, seconds, roots):
    """One thread per entry of `user_ids`, each on its own connection, calling
    deduct_user_balance(user, 0.0001) and committing until `seconds` pass."""

    def worker(index, barrier):
        latencies, refused = [], 0
        with closing(psycopg2.connect(app_url)) as conn:
            conn.autocommit = False
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            conn.commit()
            barrier.wait(timeout=60)
            deadline = time.perf_counter() + seconds
            for _ in range(MAX_RAW_CALLS_PER_THREAD):
                started = time.perf_counter()
                if started >= deadline:
                    break
                with conn.cursor() as cur:
                    cur.execute("SELECT ok FROM deduct_user_balance(%s::uuid, %s)", (user_ids[index], HOLD))
                    ok = cur.fetchone()[0]
                conn.commit()
                latencies.append(time.perf_counter() - started)
                refused += not ok
        return latencies, refused

    phase = Phase(roots)
    results = run_threads(len(user_ids), worker, phase)
    latencies = [value for result, _ in results for value in result]
    refused = sum(count for _, count in results)
    return phase, latencies, refused


# ------------------------------------------------------------------ setup helpers

def owner_query(owner_url, statement, params=None):
    with closing(psycopg2.connect(owner_url)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else cur.rowcount


def funded_users(owner_url, count):
    """`count` users made directly as the owner (no password work), each funded
    through add_user_funds so the ledger stays whole."""
    ids = []
    for _ in range(count):
        name = f"raw{uuid.uuid4().hex[:12]}"
        user_id = owner_query(
            owner_url,
            "INSERT INTO users (email, username, password_hash) VALUES (%s, %s, 'x') RETURNING id::text",
            (f"{name}@bench.invalid", name))[0][0]
        owner_query(owner_url, "SELECT ok FROM add_user_funds(%s::uuid, %s)", (user_id, FUNDING))
        ids.append(user_id)
    return ids


def api_user(url):
    name = f"bench{uuid.uuid4().hex[:12]}"
    email = f"{name}@example.com"
    response = httpx.post(f"{url}/api/v1/auth/register",
                          json={"email": email, "username": name, "password": PASSWORD}, timeout=30)
    response.raise_for_status()
    user_id = response.json()["id"]
    response = httpx.post(f"{url}/api/v1/auth/login", json={"email": email, "password": PASSWORD}, timeout=30)
    response.raise_for_status()
    return user_id, response.json()["access_token"]


# ------------------------------------------------------------------ report

def percentile(values, fraction):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def row(label, calls, phase, latencies, cores):
    rate = calls / phase.wall if phase.wall else 0.0
    cpu = "  ".join(f"{group} {seconds / phase.wall / cores * 100:3.0f}%" for group, seconds in phase.cpu.items())
    print(f"{label:<34}{calls:>7}{phase.wall:>8.2f}{rate:>10.0f}"
          f"{percentile(latencies, 0.5) * 1000:>9.2f}{percentile(latencies, 0.99) * 1000:>9.2f}   {cpu}")
    return rate


def _package(filename, function):
    """Who a profiled function belongs to: a site-package, the service, or the stdlib."""
    if filename == "~":
        return "C builtins"
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if filename.startswith(str(ROOT)):
        return "service: " + Path(filename).relative_to(ROOT).parts[0]
    return "stdlib"


def profile_in_process(app_url, count):
    """`count` keyed top-ups through the Flask test client (no HTTP, no
    gunicorn, one thread), timed plain and then under cProfile: what one request
    costs inside the service process, and how many statements and transactions
    it sends."""
    from app import create_app
    from app.extensions import db

    app = create_app(settings_for(app_url))
    client = app.test_client()
    name = f"prof{uuid.uuid4().hex[:12]}"
    email = f"{name}@example.com"
    assert client.post("/api/v1/auth/register",
                       json={"email": email, "username": name, "password": PASSWORD}).status_code == 201
    token = client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD}).get_json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}

    def top_ups(label):
        for _ in range(count):
            response = client.post("/api/v1/balance/funds", json={"amount": TOPUP},
                                   headers={**headers, "Idempotency-Key": f"{label}-{uuid.uuid4()}"})
            assert response.status_code == 201, response.get_data(as_text=True)

    top_ups("warm")  # the pool and the code paths
    started, cpu = time.perf_counter(), time.process_time()
    top_ups("plain")
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    profiler = cProfile.Profile()
    profiler.enable()
    top_ups("profiled")
    profiler.disable()
    with app.app_context():
        db.close()

    stats = pstats.Stats(profiler)
    total = stats.total_tt
    waits = {"execute": [0, 0.0], "commit": [0, 0.0]}  # calls, seconds in the driver (round trip + server)
    ours, by_package = [], {}
    for (filename, line, function), (_, calls, tottime, cumtime, _) in stats.stats.items():
        if function == "<method 'commit' of 'psycopg2.extensions.connection' objects>":
            waits["commit"][0] += calls
            waits["commit"][1] += tottime
        elif function.startswith("<function RealDictCursor.execute"):  # the C execute, seen through extras
            waits["execute"][0] += calls
            waits["execute"][1] += tottime
        else:
            by_package[_package(filename, function)] = by_package.get(_package(filename, function), 0.0) + tottime
        if filename.startswith(str(ROOT / "app")) or filename.startswith(str(ROOT / "database")):
            ours.append((cumtime, calls, f"{Path(filename).relative_to(ROOT)}:{line}({function})"))
    statements, commits = waits["execute"][0] / count, waits["commit"][0] / count
    print(f"\nIn-process, {count} keyed top-ups through the Flask test client, one thread: "
          f"{wall / count * 1000:.2f} ms each ({cpu / count * 1000:.2f} ms of it CPU in this process)")
    print(f"  per request: {statements:g} statements in {commits:g} transactions "
          f"= {statements + 2 * commits:g} round trips (psycopg2 sends BEGIN on its own)")
    print(f"  under cProfile ({total / count * 1000:.2f} ms/request):")
    for name, (calls, seconds) in waits.items():
        print(f"    waiting in psycopg2 {name:<8}{seconds / count * 1000:>8.3f} ms/request {seconds / total * 100:6.1f}%")
    rest = total - sum(seconds for _, seconds in waits.values())
    print(f"    {'everything else (Python)':<28}{rest / count * 1000:>8.3f} ms/request {rest / total * 100:6.1f}%")
    print("  the rest by package (own time, under cProfile):")
    for package, seconds in sorted(by_package.items(), key=lambda item: -item[1])[:8]:
        print(f"    {package:<28}{seconds / count * 1000:>8.3f} ms/request {seconds / total * 100:6.1f}%")
    print("  the service's own functions, by cumulative time per request:")
    for cumtime, calls, where in sorted(ours, reverse=True)[:14]:
        print(f"    {cumtime / count * 1000:7.3f} ms  {calls / count:4.1f}x  {where}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="keyed top-ups through the API (default 2000)")
    parser.add_argument("--nokey-requests", type=int, default=1000,
                        help="top-ups without an Idempotency-Key (default 1000; 0 skips)")
    parser.add_argument("--spread-requests", type=int, default=2000,
                        help="keyed top-ups with each client thread its own user (default 2000; 0 skips)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each raw deduct run (default 5)")
    parser.add_argument("--clients", type=int, default=10, help="concurrent client threads (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--web-threads", type=int, default=16, help="gunicorn threads per worker (default 16)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also cProfile N in-process top-ups (default 0: off)")
    args = parser.parse_args()
    if not (1 <= args.clients <= 64 and 1 <= args.requests <= 100_000 and 0 <= args.nokey_requests <= 100_000
            and 0 <= args.spread_requests <= 100_000
            and 0.5 <= args.seconds <= 60 and 0 <= args.profile <= 10_000):
        parser.error("out of range: clients 1..64, requests 1..100000 (0 allowed for --nokey/--spread), "
                     "seconds 0.5..60, profile 0..10000")

    cores = os.cpu_count() or 1
    print(f"machine: {cores} cores ({platform.machine()}), Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}")
    base_dir = tempfile.mkdtemp(prefix="qmarket-bench-pg-", dir="/tmp")
    server = live = None
    try:
        server = testing.postgresql.Postgresql(**testing_postgresql_options(base_dir))
        owner_url = make_dsn(server.url(), dbname=DATABASE)
        migrate.migrate(owner_url, APP_PASSWORD, out=lambda line: None)
        app_url = make_dsn(server.url(), dbname=DATABASE, user=migrate.APP_ROLE, password=APP_PASSWORD)
        version = owner_query(owner_url, "SHOW server_version")[0][0]
        fsync = owner_query(owner_url, "SHOW fsync")[0][0]
        print(f"PostgreSQL {version} (throwaway, fsync={fsync}); gunicorn {args.workers} workers x "
              f"{args.web_threads} threads; {args.clients} client threads; all on 127.0.0.1")

        live = LiveServer(settings_for(app_url), workers=args.workers, threads=args.web_threads)
        roots = {"bench": os.getpid(), "gunicorn": live.process.pid, "postgres": server.child_process.pid}
        user_id, token = api_user(live.url)
        others = [api_user(live.url) for _ in range(args.clients)] if args.spread_requests else []
        # Warm-up: every gunicorn worker's pool and code paths, not timed.
        warm = max(args.clients * 5, 50)
        api_topups(live.url, [token], warm, args.clients, True, roots)

        print(f"\n{'scenario':<34}{'calls':>7}{'secs':>8}{'per sec':>10}{'p50 ms':>9}{'p99 ms':>9}"
              f"   CPU share of {cores} cores")
        phase, latencies, statuses = api_topups(live.url, [token], args.requests, args.clients, True, roots)
        api_rate = row("API top-up, key, 1 user", args.requests, phase, latencies, cores)
        bad = {status: count for status, count in statuses.items() if status != 201}
        if args.nokey_requests:
            phase, latencies, more = api_topups(live.url, [token], args.nokey_requests, args.clients, False, roots)
            row("API top-up, no key, 1 user", args.nokey_requests, phase, latencies, cores)
            bad.update({status: bad.get(status, 0) + count for status, count in more.items() if status != 201})
        if others:
            phase, latencies, more = api_topups(live.url, [t for _, t in others], args.spread_requests,
                                                args.clients, True, roots)
            spread_rate = row(f"API top-up, key, {args.clients} users", args.spread_requests, phase, latencies, cores)
            bad.update({status: bad.get(status, 0) + count for status, count in more.items() if status != 201})

        spread = funded_users(owner_url, args.clients)
        phase, latencies, refused = raw_deducts(app_url, spread, args.seconds, roots)
        raw_rate = row(f"raw deduct, {args.clients} users", len(latencies), phase, latencies, cores)
        single = funded_users(owner_url, 1)[0]
        phase, latencies, refused_single = raw_deducts(app_url, [single] * args.clients, args.seconds, roots)
        single_rate = row("raw deduct, 1 user (serialised)", len(latencies), phase, latencies, cores)

        print(f"\nratio API / raw, one user: {api_rate / single_rate:.3f} (raw {single_rate / api_rate:.1f}x); "
              f"API one user / raw {args.clients} users: {api_rate / raw_rate:.3f} (raw {raw_rate / api_rate:.1f}x)")
        if others:
            print(f"ratio API / raw, {args.clients} users: {spread_rate / raw_rate:.3f} "
                  f"(raw {raw_rate / spread_rate:.1f}x)")

        # The run must have moved exactly what it says.
        expected = Decimal(TOPUP) * (warm + args.requests + args.nokey_requests)
        total = owner_query(owner_url, "SELECT total_balance FROM user_balance WHERE user_id = %s", (user_id,))[0][0]
        ledger = owner_query(owner_url, readme_ledger_query())
        print(f"checks: non-201 answers {bad or 'none'}; API user's total {total.normalize()} "
              f"(expected {expected.normalize()}); refused deducts {refused + refused_single}; "
              f"ledger check rows {len(ledger)}")
        if bad or total != expected or refused or refused_single or ledger:
            print("bench: CHECKS FAILED", file=sys.stderr)
            return 1

        if args.profile:
            live.stop()
            live = None
            profile_in_process(app_url, args.profile)
        return 0
    finally:
        if live is not None:
            live.stop()
        if server is not None:
            server.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
