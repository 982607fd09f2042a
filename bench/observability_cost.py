"""What observability adds to one billed call (BENCHMARKS.md, "Metrics and
alerts on the call path"):

1. metrics: the Prometheus updates a billed call makes (request, provider
   attempt and duration, tokens and dollars by kind, the hold gauge, three
   pool borrows), in multiprocess mode, as under gunicorn;
2. the alert trigger on the ledger: a hold and its settle's release through
   the money procedures, as the service's login, with the trigger on and off,
   for the costliest case (a user with a low-balance threshold, calling with an
   access key that has a spend limit).

    python bench/observability_cost.py [--calls 2000] [--rounds 5]"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import closing
from decimal import Decimal
from pathlib import Path

os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="qmarket-bench-metrics-")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg2  # noqa: E402

from app import metrics  # noqa: E402
from app.pricing import Charge  # noqa: E402
from bench.harness import durable_database  # noqa: E402

CHARGE = Charge(prompt_tokens=120, completion_tokens=80, cache_read_tokens=0, cache_write_tokens=0,
                cache_write_1h_tokens=0, reasoning_tokens=None, input_cost=Decimal("0.000018"),
                cached_input_cost=Decimal(0), cache_write_cost=Decimal(0), output_cost=Decimal("0.000048"))


def metrics_of_one_call(hold_id):
    metrics.requests_total.labels("POST", "/v1/chat/completions", "200").inc()
    metrics.request_seconds.labels("POST", "/v1/chat/completions").observe(0.01)
    metrics.hold_opened(hold_id)
    metrics.provider_attempt("openai", "openai/gpt-4o-mini", True, 0.2)
    metrics.provider_served("openai", "openai/gpt-4o-mini", 0.3)
    metrics.billed("openai/gpt-4o-mini", CHARGE)
    metrics.hold_ended(hold_id)
    for _ in range(3):  # a call's borrows: its hold, its settle, its Idempotency-Key record
        metrics.PoolObserver.borrowed(0.0001)
        metrics.PoolObserver.returned()


def microseconds_per_call(work, calls, rounds):
    """Median over `rounds` of the mean microseconds of `work(i)`."""
    results = []
    for _ in range(rounds):
        started = time.perf_counter()
        for i in range(calls):
            work(i)
        results.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(results), min(results)


def ledger_user(owner_url, name):
    """A funded user with a low-balance threshold and a limited access key: (user id, key id).
    Each measurement has its own: the key's limit check sums its period's ledger rows."""
    with closing(psycopg2.connect(owner_url)) as conn, conn, conn.cursor() as cur:
        cur.execute("INSERT INTO users (email, username, password_hash) VALUES (%s, %s, 'x') RETURNING id",
                    (f"{name}@example.com", name))
        user_id = cur.fetchone()[0]
        cur.execute("SELECT add_user_funds(%s, 100000, 'deposit', NULL, 'bench', '{}')", (user_id,))
        cur.execute("INSERT INTO user_preferences (user_id, low_balance_threshold) VALUES (%s, 1)", (user_id,))
        cur.execute("INSERT INTO access_keys (user_id, name, key_hash, last4, spend_limit, spend_limit_period) "
                    "VALUES (%s, 'bench', sha256(%s::bytea), 'abcd', 100000, 'month') RETURNING id", (user_id, name))
        return user_id, cur.fetchone()[0]


def hold_and_release(app_url, user_id, key_id, calls):
    """Seconds for `calls` holds each released, one transaction each, as the service's login."""
    with closing(psycopg2.connect(app_url)) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        for _ in range(calls):
            with conn:
                cur.execute("SELECT transaction_id FROM deduct_user_balance(%s, 0.001, 'bench', '{}', NULL, 60, "
                            "'local/echo', %s)", (user_id, key_id))
                hold_id = cur.fetchone()[0]
            with conn:
                cur.execute("SELECT ok FROM add_user_funds(%s, 0.0006, 'release', %s, 'bench', '{}')",
                            (user_id, hold_id))
        return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    median, best = microseconds_per_call(metrics_of_one_call, args.calls * 5, args.rounds)
    print(f"metrics: {median:.1f} us per billed call (best round {best:.1f} us), multiprocess mode")
    with durable_database() as (owner_url, app_url):
        hold_and_release(app_url, *ledger_user(owner_url, "warmup"), 200)
        timings = {"on": [], "off": []}
        for round_number in range(args.rounds):
            for state in (("off", "on") if round_number % 2 else ("on", "off")):
                user_id, key_id = ledger_user(owner_url, f"bench{round_number}{state}")
                with closing(psycopg2.connect(owner_url)) as conn, conn, conn.cursor() as cur:
                    cur.execute(f"ALTER TABLE transactions {'ENABLE' if state == 'on' else 'DISABLE'} "
                                "TRIGGER transactions_alerts")
                timings[state].append(hold_and_release(app_url, user_id, key_id, args.calls) / args.calls * 1e6)
        on, off = statistics.median(timings["on"]), statistics.median(timings["off"])
        print(f"hold + release (two durable commits): {off:.0f} us without the alert trigger, {on:.0f} us with it "
              f"(+{on - off:.0f} us, {100 * (on - off) / off:+.1f}%), median of {args.rounds} rounds of "
              f"{args.calls}")


if __name__ == "__main__":
    main()
