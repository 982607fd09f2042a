"""Capacity: one instance of ours against LiteLLM's proxy, in one run, on the
same cores, the same stub and the same load generators.

Both gateways sit in front of the OpenAI stub (`tests/stubs.py`, a process of
its own). Ours runs as `make run` serves it (gunicorn.conf.py and the settings'
own worker count, the JSON access log at INFO, rate limits counted on every
call but set above anything sent, PostgreSQL committing durably); LiteLLM as
bench/litellm_proxy.py starts it (one worker, no database). The call is a
billed `POST /v1/chat/completions` with an access key (ours) or the master key
(LiteLLM), `max_tokens` 64, paid with the house key.

1. Saturation: wrk, one thread, --connections keep-alive connections, for
   --seconds, each side in turn, --rounds times (the order swapped each round).
2. Fixed rates: an open-loop generator (bench/fixed_rate.py: each call due at
   its time, latency from then) at each of --fractions of LiteLLM's median
   saturation rate measured above, each side in turn.
3. For each phase, the CPU each process used per call, from /proc: gunicorn
   (master and workers), PostgreSQL (every backend), LiteLLM, the stub and the
   load generator; "other" is the rest of the machine meanwhile.
4. At the end: every hold of the run is settled, the user was charged exactly
   the calls answered 200 times the call's cost, and README's ledger query
   returns no rows.

--profile adds a phase at --profile-rate against ours alone, with
pg_stat_statements loaded in the benchmark's cluster (statements per call:
planning and execution, nested ones included) and py-spy sampling the gunicorn
worker (functions by own time, and by layer). py-spy is not a dependency:
`pip install py-spy` into the environment that runs this.

    .venv/bin/python bench/capacity.py                        # ~3 min
    .venv/bin/python bench/capacity.py --rounds 3 --seconds 20
    .venv/bin/python bench/capacity.py --profile --no-litellm  # ours alone, where the time goes
    .venv/bin/python bench/capacity.py --setting LOG_LEVEL=WARNING  # ours without its access log
    .venv/bin/python bench/capacity.py --cluster 3             # ours as make cluster serves it"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack, closing
from pathlib import Path

import httpx
import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.against_litellm import OPENAI_KEY, OURS_BODY, STUB_BODY, load_average, wait_for_quiet  # noqa: E402
from bench.floors import STATEMENT_STATISTICS, reset_statement_times, statement_times  # noqa: E402
from bench.harness import UNREACHED_LIMIT, MakeRunService, Stub, durable_database, percentile  # noqa: E402
from bench.litellm_proxy import REQUIREMENT, LiteLLMProxy  # noqa: E402
from bench.money import Phase  # noqa: E402
from bench.py_spy import layers_of, record_worker, top_functions  # noqa: E402
from devtools.cluster import free_port  # noqa: E402
from tests.support import cost, readme_ledger_query, settings_for  # noqa: E402

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "{authorization}"
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout, 0))
  io.write(string.format("LATENCY %d %d %d\\n", latency:percentile(50), latency:percentile(99), latency.max))
end
"""
WARMUP_SECONDS = 3
# A billed call's cost on the stub's usage (11 prompt, 7 completion tokens) at the catalog's prices.
CALL_COST = cost("openai/gpt-4o-mini", 11, 7)


class Gateway:
    """One side: its URL, the header its calls carry, the body, and the root
    processes whose CPU is its own."""

    def __init__(self, name, url, authorization, body, roots):
        self.name, self.url, self.authorization, self.body, self.roots = name, url, authorization, body, roots
        self.answered = 0  # calls answered 200, warm-ups included


def postmaster_pid(owner_url):
    with closing(psycopg2.connect(owner_url)) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    return int(Path(f"/proc/{backend}/stat").read_text().rpartition(")")[2].split()[1])


def run_load_generator(command, roots):
    """Runs `command` (a load generator) to its end inside a Phase over
    `roots`: (its stdout, the Phase, its own CPU seconds, from wait4)."""
    with Phase(roots) as phase:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        output = process.stdout.read()
        error = process.stderr.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {error.decode()[-500:]}")
    generator_cpu = usage.ru_utime + usage.ru_stime
    phase.cpu["other"] = max(0.0, phase.cpu["other"] - generator_cpu)
    phase.cpu["load generator"] = generator_cpu
    return output.decode(), phase


def wrk(gateway, connections, seconds, folder):
    """(calls answered 200 per second, p50 ms, p99 ms, failed calls, Phase) of wrk at saturation."""
    script = Path(folder) / f"{gateway.name}.lua"
    script.write_text(WRK_SCRIPT.format(body=json.dumps(gateway.body), authorization=gateway.authorization))
    command = ["wrk", "--threads", "1", "--connections", str(connections), "--duration", f"{seconds}s",
               "--timeout", "30s", "--script", str(script), f"{gateway.url}/v1/chat/completions"]
    output, phase = run_load_generator(command, gateway.roots)
    result = next(line for line in output.splitlines() if line.startswith("RESULT")).split()[1:]
    latency = next(line for line in output.splitlines() if line.startswith("LATENCY")).split()[1:]
    requests, duration, *errors = (int(value) for value in result)
    failed = sum(errors)
    gateway.answered += requests - errors[3]  # a non-2xx answer is in errors.status
    return {"rate": (requests - failed) / (duration / 1e6), "p50": int(latency[0]) / 1000,
            "p99": int(latency[1]) / 1000, "failed": failed, "calls": requests, "phase": phase}


def fixed_rate(gateway, rate, seconds, folder):
    body = Path(folder) / f"{gateway.name}.json"
    body.write_text(json.dumps(gateway.body))
    command = [sys.executable, "-m", "bench.fixed_rate", f"{gateway.url}/v1/chat/completions", str(rate),
               str(seconds), str(body), "--header", f"Authorization: {gateway.authorization}"]
    output, phase = run_load_generator(command, gateway.roots)
    result = json.loads(output)
    ok = result["statuses"].get("200", 0)
    gateway.answered += ok
    latencies = result["latencies_ms"]
    return {"rate": ok / result["wall"], "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
            "failed": result["sent"] - ok, "calls": result["sent"], "phase": phase}


def print_rows(title, rows, groups):
    print(f"\n{title}")
    print(f"  {'side':<10} {'calls/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'failed':>7}   CPU ms per call: "
          + "  ".join(f"{group[:9]:>9}" for group in groups) + "  (all)")
    for name, result in rows:
        total = sum(result["phase"].cpu.get(group, 0) for group in groups if group != "other") / max(result["calls"], 1)
        print(f"  {name:<10} {result['rate']:8.1f} {result['p50']:8.2f} {result['p99']:8.2f} {result['failed']:7d}   "
              f"{'':17}" + "  ".join(f"{result['phase'].cpu.get(group, 0) / max(result['calls'], 1) * 1000:9.2f}"
                                     for group in groups) + f"  {total * 1000:5.2f}")


def ratios(ours, theirs, label):
    """Ours over LiteLLM's, of the medians of each figure."""
    def median(rows, figure):
        return statistics.median(row[figure] for row in rows)
    print(f"  ratio ours / LiteLLM, {label}: " + ", ".join(
        f"{figure} {median(ours, figure) / median(theirs, figure):.2f}" for figure in ("rate", "p50", "p99")))


def check_ledger(owner_url, gateway):
    """Every hold settled, each call charged exactly its cost or nothing, and
    README's query returns nothing. A load generator stops counting at its
    deadline, so the calls it left in flight are charged but not counted."""
    with closing(psycopg2.connect(owner_url)) as conn, conn.cursor() as cursor:
        cursor.execute("""
            SELECT count(*) FILTER (WHERE rel.id IS NULL),
                   count(*) FILTER (WHERE hold.amount - rel.amount = %(cost)s),
                   count(*) FILTER (WHERE hold.amount - rel.amount NOT IN (0, %(cost)s))
              FROM transactions hold
              LEFT JOIN transactions rel ON rel.related_transaction_id = hold.id AND rel.type = 'release'
             WHERE hold.type = 'hold'""", {"cost": CALL_COST})
        open_holds, charged, wrong = cursor.fetchone()
        cursor.execute(readme_ledger_query())
        broken = cursor.fetchall()
    print(f"\nLedger: {gateway.answered} calls answered 200 and counted, {charged} charged {CALL_COST} each, "
          f"{wrong} charged anything else, {open_holds} holds open, README's query: {len(broken)} rows")
    if open_holds or broken or wrong or charged < gateway.answered:
        raise RuntimeError("the ledger does not match the calls answered")


SERVER_COUNTS = """
    SELECT (SELECT sum(calls) FROM pg_stat_statements WHERE toplevel AND query NOT ILIKE '%%pg_stat%%'),
           (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
           (SELECT wal_sync FROM pg_stat_wal), (SELECT wal_write FROM pg_stat_wal)
"""


def server_counts(owner_url):
    """(statements sent, commits, WAL flushes, WAL writes) so far; the statistics are flushed first."""
    with closing(psycopg2.connect(owner_url)) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        conn.commit()
        cursor.execute(SERVER_COUNTS)
        return [float(value or 0) for value in cursor.fetchone()]


def profile(ours, owner_url, rate, seconds, folder):
    """Statements per call and the worker's Python, at a fixed rate, ours alone."""
    reset_statement_times(owner_url)
    counted = server_counts(owner_url)
    answered_before = ours.answered
    with record_worker(ours.roots["gunicorn"], seconds, Path(folder) / "worker.txt") as samples:
        result = fixed_rate(ours, rate, seconds, folder)
    calls = ours.answered - answered_before
    statements, commits, flushes, writes = (after - before for after, before in zip(server_counts(owner_url), counted))
    print(f"\nPer call: {statements / calls:.2f} statements sent (round trips), {commits / calls:.2f} commits, "
          f"{flushes / calls:.2f} WAL flushes (fsync), {writes / calls:.2f} WAL writes")
    print_rows(f"Profile phase: ours at {rate}/s for {seconds} s, py-spy attached (not comparable)",
               [("ours", result)], ["gunicorn", "postgres", "stub", "load generator", "other"])
    print(f"\nThe server's time per call by statement (pg_stat_statements, {calls} calls):")
    statement_times(owner_url, calls)
    print("\nThe gunicorn worker's samples (py-spy), by layer (a sample counts once, in its innermost layer of ours):")
    raw = samples.read()
    for layer, share in layers_of(raw):
        print(f"  {share * 100:5.1f}%  {layer}")
    print("Its busiest functions (own time):")
    for frame, share in top_functions(raw):
        print(f"  {share * 100:5.1f}%  {frame[:110]}")


def compare(args):
    wait_for_quiet(args.max_load, args.wait_for_quiet)
    loads = [("start", load_average())]
    database_args = STATEMENT_STATISTICS if args.profile else ""
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="qmarket-capacity-") as folder:
        owner_url, app_url = stack.enter_context(durable_database(database_args))
        stub = Stub()
        stack.callback(stub.stop)
        settings = settings_for(app_url, LOG_LEVEL="INFO", RATELIMIT_ENABLED="true", RATE_LIMIT_AUTH=UNREACHED_LIMIT,
                                RATE_LIMIT_CHAT=UNREACHED_LIMIT, RATE_LIMIT_ACCESS_KEY=UNREACHED_LIMIT,
                                OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=f"{stub.url}/v1")
        for test_only in ("PROVIDER_RETRIES", "BREAKER_FAILURES", "BREAKER_MIN_CALLS", "DB_POOL_TIMEOUT"):
            settings.pop(test_only)  # make run's defaults
        settings.update(args.setting)
        roots = {"postgres": postmaster_pid(owner_url), "stub": stub.process.pid}
        if args.cluster:
            url, own_roots, stop_service = start_cluster(stack, app_url, settings, args.cluster)
        else:
            service = MakeRunService(settings, Path(folder) / "service.log")
            stack.callback(service.stop)
            url, own_roots, stop_service = service.url, {"gunicorn": service.process.pid}, service.stop
        key = access_key(url)
        ours = Gateway("ours", url, f"Bearer {key}", OURS_BODY, roots | own_roots)
        sides = [ours]
        if not args.no_litellm:
            proxy = LiteLLMProxy(free_port(), stub.url, "gpt-4o-mini", OPENAI_KEY)
            stack.callback(proxy.stop)
            sides.append(Gateway("LiteLLM", proxy.url, proxy.headers["Authorization"], STUB_BODY,
                                 roots | {"litellm": proxy.process.pid}))
        for side in sides:
            wrk(side, args.connections, WARMUP_SECONDS, folder)
        groups = ["gunicorn", "postgres", *CLUSTER_PIECES[:bool(args.cluster) * 3], "litellm", "stub", "load generator",
                  "other"]

        saturated = {side.name: [] for side in sides}
        for round_number in range(args.rounds):
            for side in sides if round_number % 2 == 0 else sides[::-1]:
                saturated[side.name].append(wrk(side, args.connections, args.seconds, folder))
        loads.append(("after saturation", load_average()))
        print_rows(f"Saturation: wrk, 1 thread, {args.connections} keep-alive connections, {args.seconds} s, "
                   f"{args.rounds} rounds", [(name, row) for name in saturated for row in saturated[name]], groups)
        if not args.no_litellm:
            ratios(saturated["ours"], saturated["LiteLLM"], "saturation (medians)")

        reference = statistics.median(r["rate"] for r in saturated[sides[-1].name])
        for fraction in args.fractions:
            rate = round(reference * fraction)
            rows = {side.name: [fixed_rate(side, rate, args.fixed_seconds, folder)] for side in sides}
            print_rows(f"Fixed rate {rate}/s ({fraction:.0%} of {sides[-1].name}'s saturation), open loop, "
                       f"{args.fixed_seconds} s", [(name, rows[name][0]) for name in rows], groups)
            if not args.no_litellm:
                ratios(rows["ours"], rows["LiteLLM"], f"{rate}/s")
        loads.append(("after fixed rates", load_average()))
        if args.profile:
            profile(ours, owner_url, args.profile_rate, args.fixed_seconds, folder)
        stop_service()
        check_ledger(owner_url, ours)
    if args.cluster:
        print(f"\nOurs: make cluster with {args.cluster} instances (PgBouncer in transaction mode, Redis for the "
              "limits and health, nginx in front), each with make run's settings.")
    print(f"\nOurs: make run's settings (gunicorn.conf.py, workers and connections as the settings give them, "
          f"JSON access log at INFO, rate limits on at {UNREACHED_LIMIT}, fsync on). "
          f"LiteLLM: {REQUIREMENT}, 1 worker, no database.")
    print("load average (1/5/15 min): " + "; ".join(f"{when} {value}" for when, value in loads))


CLUSTER_PIECES = ["pgbouncer", "nginx", "redis"]


def start_cluster(stack, app_url, settings, instances):
    """`make cluster`'s pieces with `instances` instances in front of the
    benchmark's PostgreSQL: (nginx's URL, the CPU groups' root processes, stop)."""
    from devtools.local_cluster import LocalCluster
    work_dir = tempfile.mkdtemp(prefix="qmarket-capacity-cluster-", dir="/tmp")  # the server account enters it
    stack.callback(shutil.rmtree, work_dir, ignore_errors=True)
    cluster = LocalCluster(work_dir, app_url, settings, instances=instances, port=free_port()).start()
    stack.callback(cluster.stop, 10)
    roots = {"gunicorn": [instance.process.pid for instance in cluster.instances],
             "pgbouncer": cluster.pgbouncer.process.pid, "nginx": cluster.nginx.process.pid,
             "redis": cluster.redis.process.pid}
    return cluster.url, roots, lambda: cluster.stop(10)


def access_key(url):
    """A funded user's access key on our service."""
    with httpx.Client(base_url=url, timeout=30) as client:
        account = {"email": "capacity@example.com", "password": "correct horse battery"}
        client.post("/api/v1/auth/register", json=account | {"username": "capacity"}).raise_for_status()
        headers = {"Authorization": "Bearer " + client.post("/api/v1/auth/login", json=account).json()["access_token"]}
        client.post("/api/v1/balance/funds", json={"amount": "1000"}, headers=headers).raise_for_status()
        created = client.post("/api/v1/access-keys", json={"name": "capacity"}, headers=headers)
        created.raise_for_status()
        return created.json()["key"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=15, help="each saturation phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--fractions", type=lambda text: [float(part) for part in text.split(",")], default=[0.8],
                        help="fixed rates, as fractions of LiteLLM's saturation rate (comma-separated)")
    parser.add_argument("--fixed-seconds", type=int, default=15)
    parser.add_argument("--no-litellm", action="store_true", help="ours alone; fixed rates then of our saturation")
    parser.add_argument("--cluster", type=int, default=0, metavar="N",
                        help="ours as make cluster serves it, with N instances behind nginx (needs pgbouncer, "
                             "redis-server and nginx)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--profile-rate", type=int, default=150)
    parser.add_argument("--setting", action="append", default=[], type=lambda text: tuple(text.split("=", 1)),
                        help="NAME=VALUE: one of ours' settings otherwise (what a lever costs: LOG_LEVEL=WARNING)")
    parser.add_argument("--max-load", type=float, default=2.5)
    parser.add_argument("--wait-for-quiet", type=float, default=0)
    compare(parser.parse_args())


if __name__ == "__main__":
    main()
