"""What failed logins do to the rest of the worker.

`/readyz` latency (median and worst) on an idle service, then while 20 failed
logins to 20 different emails, sent at once, are being answered: a password
hash that ran on the gevent event loop stalled every other request (and
stream) of the worker for as long as it hashed.

    .venv/bin/python bench/login_stall.py [--logins 20] [--idle 100] [--samples 200] [--every 0.02]

Everything runs on 127.0.0.1: a throwaway PostgreSQL with durable commits (as
`make run`'s) and the service under gunicorn with `make run`'s settings: every
setting at its default (PASSWORD_ITERATIONS 600000, WEB_WORKERS and WEB_THREADS,
LOG_LEVEL INFO, DB_POOL_TIMEOUT) and rate limits on. RATE_LIMIT_AUTH (20 per
minute per client address) lets exactly 20 logins through a fresh service, so
the run sends 20 and no other login, register or refresh; /readyz is not
limited. Each email is tried once, far below LOGIN_LOCKOUT_THRESHOLD (10). The
run stops if any login is answered other than 401.

/readyz is sent from one keep-alive connection, one request every --every
seconds (or as soon as the one before answered, if later): --idle of them
first (after 20 not counted), then while any login is unanswered, at most
--samples of them."""
import argparse
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.config import SETTINGS  # noqa: E402
from bench.harness import MakeRunService, durable_database, percentile, timed  # noqa: E402
from tests.support import settings_for  # noqa: E402

WARMUP = 20
# settings_for's test values that `make run` leaves at their defaults.
TEST_ONLY = ("PASSWORD_ITERATIONS", "LOG_LEVEL", "DB_POOL_TIMEOUT", "RATELIMIT_ENABLED")


def readyz_latencies(client, every, until, limit):
    """Milliseconds of each /readyz, one every `every` seconds, until `until()`
    is true or `limit` were sent."""
    samples = []
    next_send = time.perf_counter()
    while len(samples) < limit and not until():
        time.sleep(max(0.0, next_send - time.perf_counter()))
        next_send = time.perf_counter() + every
        samples.append(timed(lambda: client.get("/readyz")))
    return samples


def failed_logins(url, count, timeout):
    """`count` logins to as many unknown emails, released together from threads
    of their own; returns (a function saying whether all have answered, the
    futures of their statuses, the executor to shut down)."""
    start = threading.Barrier(count + 1)
    client = httpx.Client(base_url=url, timeout=timeout, limits=httpx.Limits(max_connections=count))

    def login(number):
        start.wait()
        return client.post("/api/v1/auth/login", json={"email": f"nobody{number}@example.com",
                                                        "password": "not the password"}).status_code

    executor = ThreadPoolExecutor(count)
    futures = [executor.submit(login, number) for number in range(count)]
    start.wait()
    return (lambda: all(future.done() for future in futures)), futures, executor, client


def report(label, samples, idle_median=None):
    median, worst = percentile(samples, 0.5), max(samples)
    ratio = f", median {median / idle_median:.1f}x idle" if idle_median else ""
    print(f"{label}: {len(samples)} /readyz, median {median:.1f} ms, worst {worst:.0f} ms{ratio}")
    return median, worst


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logins", type=int, default=20, help="at most 20: RATE_LIMIT_AUTH's 20 per minute")
    parser.add_argument("--idle", type=int, default=100, help="/readyz samples on the idle service")
    parser.add_argument("--samples", type=int, default=500, help="at most this many /readyz during the logins")
    parser.add_argument("--every", type=float, default=0.02, help="seconds between /readyz sends")
    parser.add_argument("--timeout", type=float, default=60, help="seconds the logins may take")
    args = parser.parse_args()
    defaults = {name: SETTINGS[name][0] for name in ("PASSWORD_ITERATIONS", "WEB_THREADS", "RATE_LIMIT_AUTH")}
    print(f"load average {os.getloadavg()[0]:.2f} at start; {os.cpu_count()} cores; make run's settings: "
          f"PASSWORD_ITERATIONS {defaults['PASSWORD_ITERATIONS']}, WEB_WORKERS default (1 with memory:// limits), "
          f"WEB_THREADS {defaults['WEB_THREADS']}, rate limits on (auth {defaults['RATE_LIMIT_AUTH']})")

    with tempfile.TemporaryDirectory(prefix="qmarket-bench-login-stall-") as folder, \
            durable_database() as (_, app_url):
        settings = settings_for(app_url)
        for name in TEST_ONLY:
            del settings[name]
        service = MakeRunService(settings, Path(folder) / "service.log")
        try:
            with httpx.Client(base_url=service.url, timeout=args.timeout) as client:
                readyz_latencies(client, args.every, lambda: False, WARMUP)
                idle = readyz_latencies(client, args.every, lambda: False, args.idle)
                started = time.perf_counter()
                all_answered, futures, executor, login_client = failed_logins(service.url, args.logins, args.timeout)
                deadline = started + args.timeout
                during = readyz_latencies(client, args.every,
                                          lambda: all_answered() or time.perf_counter() > deadline, args.samples)
                statuses = [future.result() for future in futures]
                elapsed = time.perf_counter() - started
                executor.shutdown()
                login_client.close()
        finally:
            service.stop()
    if statuses != [401] * args.logins:
        sys.exit(f"every login must be answered 401, got {sorted(statuses)}")
    idle_median, _ = report("idle", idle)
    median, worst = report(f"during {args.logins} failed logins (all 401, answered within {elapsed:.2f} s)",
                           during, idle_median)
    print(f"goals: median during logins at most 2x idle: {'met' if median <= 2 * idle_median else 'NOT met'}; "
          f"worst under 400 ms: {'met' if worst < 400 else 'NOT met'}; "
          f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
