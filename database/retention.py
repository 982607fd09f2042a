"""Retention: old chat messages, audit rows and finished alert deliveries
deleted in small batches, each its own short transaction, as the database's
owner (the service's login may not delete audit rows). Money rows (the
ledger, its holds and charges) and the usage rollups made from them are
never deleted. A batch skips rows another
prune holds (SKIP LOCKED), so two prunes at once, or one run twice, delete
each row once and never wait on each other; the ledger is never locked."""
from contextlib import closing

import psycopg2

# What each retention deletes: (table, its age column, the rows it may touch).
TARGETS = {
    "chat_messages": ("chat_history", "created_at", "true"),
    "audit_rows": ("audit_log", "created_at", "true"),
    "alert_deliveries": ("alert_deliveries", "created_at", "status <> 'pending'"),
}
# Statements are built from the constants above only, never from input.
PRUNE_BATCH = """
    DELETE FROM {table}
     WHERE ctid = ANY (ARRAY(SELECT ctid FROM {table}
                              WHERE {column} < now() - make_interval(days => %(days)s) AND {rows}
                              ORDER BY {column}
                              LIMIT %(batch)s
                                FOR UPDATE SKIP LOCKED))
"""


def prune(owner_url, retention_days, batch=5000):
    """{name: rows deleted} for each target whose retention (days; 0 keeps
    everything) is set in `retention_days`."""
    deleted = {}
    with closing(psycopg2.connect(owner_url, application_name="qmarket-prune")) as conn:
        for name, (table, column, rows) in TARGETS.items():
            days = retention_days.get(name, 0)
            deleted[name] = 0
            if not days:
                continue
            statement = PRUNE_BATCH.format(table=table, column=column, rows=rows)
            while True:
                with conn, conn.cursor() as cursor:
                    cursor.execute("SET LOCAL lock_timeout = '5s'")
                    cursor.execute(statement, {"days": days, "batch": batch})
                    deleted[name] += cursor.rowcount
                if cursor.rowcount < batch:
                    break
    return deleted
