"""The user-facing queries on a big ledger (BENCHMARKS.md, "A big ledger"):
p50 and p99 of the usage report (30 days by day and model), a ledger page,
the activity feed (both views) and the console overview's reads, for one heavy user, on an
empty database and again once the ledger holds `--rows` rows across
`--users` users, the heavy user's calls (a hold, its release and its charge
each) all within the last 30 days; then each table's and its indexes' size
per million calls; last, what pruning the audit log reclaims, from the
audit rows of `--prune-calls` real holds and releases aged past retention.

    python bench/data.py [--rows 1000000] [--users 10000] [--heavy-share 0.1] [--samples 50]

The rows are written in bulk as the owner with triggers off (the audit log
is not what is measured), and the daily usage rollups built from them as an
upgrade builds them; the queries run as the service's login through
DatabaseService, as the API runs them."""
import argparse
import sys
import time
import uuid
from contextlib import closing
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg2  # noqa: E402
import psycopg2.extras  # noqa: E402

from bench.harness import durable_database, percentile  # noqa: E402
from database import DatabaseService  # noqa: E402
from database.pool import PoolHolder  # noqa: E402
from database.retention import prune  # noqa: E402

PAGE_CALLS = 100
TABLES = ("transactions", "call_charges", "usage_daily", "audit_log", "chat_history")
SEED = """
SET session_replication_role = replica;
INSERT INTO users (id, email, username, password_hash)
SELECT gen_random_uuid(), 'seed' || n || '@example.com', 'seed' || n, 'x' FROM generate_series(1, %(users)s) n;
INSERT INTO user_balance (user_id, total_balance, spent_balance)
SELECT id, 1000, 0 FROM users WHERE email LIKE 'seed%%' ON CONFLICT DO NOTHING;
CREATE TEMP TABLE callers AS
SELECT row_number() OVER () AS n, id FROM users WHERE email LIKE 'seed%%';
-- Each call: a hold, its release 2 seconds later and its charge; the heavy user's within 30 days, the others'
-- within a year; the hold and the release side by side in id order, as the service writes them.
CREATE TEMP TABLE calls AS
SELECT row_number() OVER (ORDER BY at) AS k, user_id, at, model_id
  FROM (SELECT CASE WHEN i <= %(heavy_calls)s THEN %(heavy)s::uuid ELSE callers.id END AS user_id,
               now() - (CASE WHEN i <= %(heavy_calls)s THEN interval '30 days' ELSE interval '365 days' END)
                     * random() AS at,
               (ARRAY['openai/gpt-4o-mini', 'anthropic/claude-3-5-haiku-20241022', 'local/echo'])[1 + i %% 3]
                   AS model_id
          FROM generate_series(1, %(calls)s) i
          LEFT JOIN callers ON callers.n = 1 + (i %% greatest(%(users)s, 1))) made;
CREATE TEMP TABLE first_id AS SELECT coalesce(max(id), 0) AS base FROM transactions;
INSERT INTO transactions (id, user_id, type, amount, available_after, related_transaction_id, description,
                          created_at, model_id, call_deadline)
OVERRIDING SYSTEM VALUE
SELECT base + 2 * k - 1, user_id, 'hold', 0.001, 999, NULL, 'seed', at, model_id, at + interval '60 seconds'
  FROM calls, first_id
 UNION ALL
SELECT base + 2 * k, user_id, 'release', 0.0004, 999, base + 2 * k - 1, 'seed', at + interval '2 seconds', model_id,
       NULL
  FROM calls, first_id
 ORDER BY 1;
SELECT setval(pg_get_serial_sequence('transactions', 'id'), (SELECT max(id) FROM transactions));
INSERT INTO call_charges (hold_id, input_tokens, cached_input_tokens, cache_write_tokens, cache_write_1h_tokens,
                          output_tokens, input_cost, cached_input_cost, cache_write_cost, output_cost,
                          served_model_id, served_provider)
SELECT base + 2 * k - 1, 100, 0, 0, 0, 50, 0.0003, 0, 0, 0.0003, model_id, split_part(model_id, '/', 1)
  FROM calls, first_id;
-- The daily usage rollups, built from that ledger as migration 0015 builds an existing database's
-- (the triggers that keep them as calls settle are off here).
DELETE FROM usage_daily WHERE user_id = %(heavy)s::uuid;
INSERT INTO usage_daily (user_id, day, model_id, access_key_id, requests, cost, input_tokens, cached_input_tokens,
                         cache_write_tokens, output_tokens)
SELECT user_id, day, model_id, access_key_id, requests, cost, input_tokens, cached_input_tokens, cache_write_tokens,
       output_tokens
  FROM usage_from_ledger;
"""


def heavy_user(owner_url):
    with closing(psycopg2.connect(owner_url)) as conn, conn, conn.cursor() as cur:
        cur.execute("INSERT INTO users (email, username, password_hash) VALUES ('heavy@example.com', 'heavy', 'x') "
                    "RETURNING id")
        return cur.fetchone()[0]


def queries(db, user_id):
    today = date.today()
    first = today - timedelta(days=29)
    return {
        "usage (30 days by day and model)": lambda: db.charges(user_id, first, today, True, True),
        "ledger page (50)": lambda: db.list_transactions(user_id, 50),
        "activity feed, one row per call (50)": lambda: db.call_activity(user_id, 51),
        "activity feed, every entry (50)": lambda: db.activity(user_id, 51),
        "console overview (balance, 30 days by day, activity)": lambda: (
            db.balance(user_id), db.charges(user_id, first, today, True, False), db.call_activity(user_id, 11)),
    }


def measure(db, user_id, samples):
    results = {}
    for name, query in queries(db, user_id).items():
        query()  # warm
        timings = []
        for _ in range(samples):
            started = time.perf_counter()
            query()
            timings.append((time.perf_counter() - started) * 1000)
        results[name] = (percentile(timings, 0.5), percentile(timings, 0.99))
    return results


def sizes(owner_url):
    """Each table's size and its indexes', once ANALYZE has given the planner
    the seeded tables' statistics, as autovacuum would (committed: ANALYZE's
    statistics are rolled back with its transaction)."""
    with closing(psycopg2.connect(owner_url)) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute("ANALYZE")
        cur.execute("SELECT relname, pg_table_size(oid), pg_indexes_size(oid) FROM pg_class WHERE relname = ANY(%s)",
                    (list(TABLES),))
        return {name: (table, indexes) for name, table, indexes in cur.fetchall()}


def audit_bytes(cur):
    return scalar(cur, "SELECT pg_total_relation_size('audit_log')")


def scalar(cur, statement, *params):
    cur.execute(statement, params)
    return cur.fetchone()[0]


def billed_calls(db, user_id, calls):
    for _ in range(calls):
        token = str(uuid.uuid4())
        hold = db.hold_funds(user_id, 0.001, "bench", {}, hold_token=token)
        if not hold["ok"]:
            raise RuntimeError(f"the pruning phase's hold was refused: {hold['reason']}")
        db.release_hold(user_id, hold["transaction_id"], 0.0004, "bench", {}, hold_token=token)


def pruning(db, owner_url, user_id, calls):
    """The audit rows of `calls` billed calls (a hold and its release, as the
    money functions write them), aged past a year, and of as many calls after
    them; the aged ones then pruned as `flask prune` does with AUDIT_RETENTION_DAYS=365:
    what is deleted, in what time, and what the table then has free for new
    rows (the kept rows after them, as in a live table, keep VACUUM from
    shortening its files)."""
    with closing(psycopg2.connect(owner_url)) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        scalar(cur, "SELECT ok FROM add_user_funds(%s, 1000, 'deposit', NULL, 'bench', '{}', NULL)", user_id)
        ledger_before = scalar(cur, "SELECT count(*) FROM transactions")
        first_id = scalar(cur, "SELECT coalesce(max(id), 0) FROM audit_log")
        size_before = audit_bytes(cur)
        billed_calls(db, user_id, calls)
        aged_id = scalar(cur, "SELECT max(id) FROM audit_log")
        rows = aged_id - first_id
        grown = audit_bytes(cur) - size_before
        cur.execute("UPDATE audit_log SET created_at = created_at - interval '400 days' WHERE id > %s AND id <= %s",
                    (first_id, aged_id))
        cur.execute("VACUUM FULL audit_log")  # the aged rows first in its files, without the update's old versions
        billed_calls(db, user_id, calls)
        size_full = audit_bytes(cur)
        started = time.perf_counter()
        deleted = prune(owner_url, {"audit_rows": 365})["audit_rows"]
        seconds = time.perf_counter() - started
        cur.execute("VACUUM audit_log")
        free = scalar(cur, "SELECT free_space FROM pgstattuple('audit_log')")
        size_after = audit_bytes(cur)
        ledger_after = scalar(cur, "SELECT count(*) FROM transactions")
    per_million = 1_000_000 / calls / 2**20
    print(f"pruning: {calls:,} calls wrote {rows:,} audit rows ({rows / calls:.1f} a call), "
          f"{grown * per_million:,.0f} MiB per million calls with indexes; prune deleted {deleted:,} of them "
          f"in {seconds:.1f} s ({deleted / seconds:,.0f} rows/s); after VACUUM the table has "
          f"{free * per_million:,.0f} MiB per million calls free for new rows, its files "
          f"{size_full / 2**20:,.1f} MiB before and {size_after / 2**20:,.1f} MiB after; "
          f"ledger rows {ledger_before:,} before, {ledger_after:,} after ({4 * calls:,} written meanwhile)")


def seed(owner_url, users, calls, heavy, heavy_calls):
    started = time.perf_counter()
    with closing(psycopg2.connect(owner_url)) as conn, conn, conn.cursor() as cur:
        cur.execute(SEED, {"users": users, "calls": calls, "heavy": str(heavy), "heavy_calls": heavy_calls})
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="ledger rows to seed (two per call)")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--heavy-share", type=float, default=0.1, help="the heavy user's share of the calls")
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--prune-calls", type=int, default=20_000, help="calls whose audit rows are pruned")
    args = parser.parse_args()
    calls = args.rows // 2
    with durable_database() as (owner_url, app_url):
        psycopg2.extras.register_uuid()
        holder = PoolHolder(app_url, 2, 5)
        db = DatabaseService(lambda: holder)
        user_id = heavy_user(owner_url)
        empty = measure(db, user_id, args.samples)
        # A page's worth of calls, so that each answer is as long as it will be on the big ledger.
        seed(owner_url, 0, PAGE_CALLS, user_id, PAGE_CALLS)
        page = measure(db, user_id, args.samples)
        heavy_calls = int(calls * args.heavy_share)
        seconds = seed(owner_url, args.users, calls, user_id, heavy_calls)
        print(f"seeded {calls * 2:,} ledger rows ({calls:,} calls; the heavy user {heavy_calls:,} "
              f"in 30 days) across {args.users:,} users in {seconds:.0f} s")
        measured = sizes(owner_url)
        full = measure(db, user_id, args.samples)
        print(f"p50 / p99 ms: empty; the heavy user with {PAGE_CALLS} calls; seeded; the seeded p50 to each")
        page_label, page_ratio = f"{PAGE_CALLS} calls", f"/{PAGE_CALLS}"
        print(f"{'query':54} {'empty':>13} {page_label:>13} {'seeded':>13} {'/empty':>7} {page_ratio:>6}")
        for name in empty:
            (e50, e99), (p50, p99), (f50, f99) = empty[name], page[name], full[name]
            print(f"{name:54} {e50:6.2f} {e99:6.2f} {p50:6.2f} {p99:6.2f} {f50:6.2f} {f99:6.2f} "
                  f"{f50 / e50:6.1f}x {f50 / p50:5.1f}x")
        print("per million calls:")
        for name, (table, indexes) in sorted(measured.items()):
            scale = 1_000_000 / calls
            print(f"  {name:14} table {table * scale / 2**20:8.0f} MiB, indexes {indexes * scale / 2**20:8.0f} MiB")
        pruning(db, owner_url, user_id, args.prune_calls)
        holder.close()


if __name__ == "__main__":
    main()
