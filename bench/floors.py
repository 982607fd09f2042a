"""The floors under a billed call: what the parts cost that no code of ours
can make cheaper, measured in one run.

1. A keep-alive request through gunicorn's gevent worker to a bare WSGI app (the
   server's floor), to the service's GET /healthz (Flask, the request hooks and
   the JSON access log on top), and a whole completion from the stub (the provider's floor).
2. A durable COMMIT after a one-row insert (what the hold and the settle each
   wait for): back to back; then with the connection idle 2 ms and 5 ms between
   commits, as a sequential benchmark's calls space them (a billed call commits
   twice, some 3 ms apart); then back to back with both cores kept busy.
3. What durability costs a billed call: `POST /v1/chat/completions` in process
   (Flask's test client), with the service's database login committing durably
   as `make run`'s does, then with `synchronous_commit = off` set on that login
   (a measurement only: the service never runs so), alternated in blocks.
4. Where the billed call's SQL spends the server's time: pg_stat_statements'
   planning and execution per call of each statement the durable calls ran
   (nested ones included; a COMMIT's flush is not in its figure).

    .venv/bin/python bench/floors.py [--requests 2000] [--commits 2000] [--calls 300]"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing, contextmanager
from pathlib import Path

import httpx
import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import MakeRunService, Stub, durable_database, percentile, stop_process, timed  # noqa: E402
from devtools.cluster import free_port  # noqa: E402
from tests.support import settings_for, wait_until_ready  # noqa: E402

BARE_APP = '''
def app(environ, start_response):
    body = b'{"status":"ok"}'
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
'''
WARMUP = 100
STATEMENT_STATISTICS = ("-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all "
                        "-c pg_stat_statements.track_planning=on")
STUB_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 64}


def latencies(url, count, body=None):
    """Milliseconds of each of `count` keep-alive requests: GET, or POST `body`."""
    with httpx.Client(headers={"Authorization": "Bearer sk-floor"}) as client:
        def send():
            return client.get(url) if body is None else client.post(url, json=body)
        for _ in range(WARMUP):
            send()
        return [timed(send) for _ in range(count)]


@contextmanager
def bare_gunicorn(folder):
    """A bare WSGI app under gunicorn's gevent worker, with no config of ours."""
    (folder / "bare.py").write_text(BARE_APP)
    (folder / "empty_config.py").write_text("")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", str(folder / "empty_config.py"), "--worker-class", "gevent",
         "--bind", f"127.0.0.1:{port}", "--chdir", str(folder), "bare:app"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, path="/", output=lambda: "")
        yield f"{url}/"
    finally:
        stop_process(process)


@contextmanager
def busy_cores(count):
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(0.5)
        yield
    finally:
        for burner in burners:
            stop_process(burner)


def commit_latencies(owner_url, count, gap=0.0):
    """Milliseconds of each COMMIT after a one-row insert, `gap` seconds apart."""
    with closing(psycopg2.connect(owner_url)) as conn:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("CREATE TABLE IF NOT EXISTS bench_commit (id bigserial PRIMARY KEY, at timestamptz)")
            samples = []
            for _ in range(count):
                cursor.execute("BEGIN; INSERT INTO bench_commit (at) VALUES (now())")
                started = time.perf_counter()
                cursor.execute("COMMIT")
                samples.append((time.perf_counter() - started) * 1000)
                time.sleep(gap)
    return samples


def billed_call_ms(owner_url, app_url, stub, calls, blocks=6):
    """Per-call ms of the billed /v1 call in process, durable commits against
    synchronous_commit off for the service's login, alternated in `blocks`
    (the statement statistics are reset after the warm-up); and the number of
    calls made since."""
    from app import close_app, create_app
    from app.extensions import db
    from bench.gateway_overhead import OPENAI_KEY, _profiled_call

    app = create_app(settings_for(app_url, OPENAI_BASE_URL=f"{stub.url}/v1", OPENAI_API_KEY=OPENAI_KEY))
    send = _profiled_call(app.test_client(), "v1", 0)
    for _ in range(WARMUP):
        send()
    reset_statement_times(owner_url)
    per_call, made = {"on": [], "off": []}, 0
    with closing(psycopg2.connect(owner_url)) as owner:
        owner.autocommit = True
        for _ in range(blocks):
            for setting in per_call:
                with owner.cursor() as cursor:
                    cursor.execute(f"ALTER ROLE app_user SET synchronous_commit = {setting}")
                with app.app_context():
                    db.close()  # new connections take the login's setting
                send()
                started = time.perf_counter()
                for _ in range(calls // blocks):
                    send()
                per_call[setting].append((time.perf_counter() - started) / (calls // blocks) * 1000)
                made += 1 + calls // blocks
        with owner.cursor() as cursor:
            cursor.execute("ALTER ROLE app_user RESET synchronous_commit")
    close_app(app)
    return per_call, made


STATEMENT_TIMES = """
    SELECT calls, total_plan_time, total_exec_time, toplevel, regexp_replace(query, '\\s+', ' ', 'g') AS query
      FROM pg_stat_statements
     WHERE query NOT ILIKE '%%pg_stat_statements%%'
     ORDER BY total_plan_time + total_exec_time DESC
     LIMIT 12
"""


def statement_times(owner_url, calls):
    """The busiest statements since the last reset, per billed call."""
    with closing(psycopg2.connect(owner_url)) as owner, owner.cursor() as cursor:
        cursor.execute(STATEMENT_TIMES)
        for count, plan, execute, top_level, query in cursor.fetchall():
            print(f"  {count / calls:4.1f} x  plan {plan / calls:6.3f}  execute {execute / calls:6.3f} ms  "
                  f"{'' if top_level else '(nested) '}{query[:80]}")


def reset_statement_times(owner_url):
    with closing(psycopg2.connect(owner_url)) as owner:
        owner.autocommit = True
        with owner.cursor() as cursor:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            cursor.execute("SELECT pg_stat_statements_reset()")


def report(label, samples):
    print(f"  {label:<44} p50 {percentile(samples, 0.5):6.3f} ms  p99 {percentile(samples, 0.99):6.3f} ms  "
          f"mean {statistics.mean(samples):6.3f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    stub = Stub()
    try:
        with durable_database(STATEMENT_STATISTICS) as (owner_url, app_url), tempfile.TemporaryDirectory() as folder:
            service = MakeRunService(settings_for(app_url, LOG_LEVEL="INFO"), Path(folder) / "service.log")
            try:
                with bare_gunicorn(Path(folder)) as bare_url:
                    print("Keep-alive requests, one client (httpx):")
                    report("bare WSGI app, gunicorn gevent worker", latencies(bare_url, args.requests))
                    report("the service's GET /healthz (make run)", latencies(f"{service.url}/healthz", args.requests))
                    report("a whole completion from the stub (POST)",
                           latencies(f"{stub.url}/v1/chat/completions", args.requests, STUB_BODY))
            finally:
                service.stop()
            print("Durable COMMIT after a one-row insert (fsync on):")
            report("back to back", commit_latencies(owner_url, args.commits))
            for gap_ms in (2, 5):
                report(f"{gap_ms} ms apart", commit_latencies(owner_url, args.commits // 2, gap_ms / 1000))
            with busy_cores(2):
                report("back to back, both cores busy", commit_latencies(owner_url, args.commits))
            print(f"A billed POST /v1/chat/completions in process, {args.calls} calls each, ms per call (median of blocks):")
            per_call, made = billed_call_ms(owner_url, app_url, stub, args.calls)
            for setting, label in (("on", "durable commits (as make run)"), ("off", "synchronous_commit off")):
                print(f"  {label:<44} {statistics.median(per_call[setting]):6.2f} ms")
            print("The server's time per billed call, by statement (pg_stat_statements):")
            statement_times(owner_url, made)
    finally:
        stub.stop()


if __name__ == "__main__":
    main()
