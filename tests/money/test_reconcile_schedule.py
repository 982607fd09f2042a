"""Reconcile on many instances. Three gunicorn instances started at once on
one database, each reconciling the whole ledger as it starts, are held at the
same point and let go together: every stale hold comes back exactly once. And
the schedule of the runs while the service runs is PostgreSQL's, not a
worker's: one worker of all the instances takes each interval's run, which
reads back to where the last run that worked began, whoever ran it."""
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import timedelta
from decimal import Decimal


from app import close_app, create_app
from app.billing import reconcile_on_schedule
from tests.support import LiveServer, readme_ledger_query, settings_for

INSTANCES = 3
STALE_HOLDS = 40
HOLD = Decimal("0.25")
# Below LiveServer's wait for /readyz, which the held instances cannot answer yet.
WAIT_SECONDS = 25
LOCK_WAITERS = """
    SELECT count(*) FROM pg_locks
     WHERE locktype = 'relation' AND relation = 'transactions'::regclass AND NOT granted
"""
QUICK = {"PROVIDER_TIMEOUT": 1, "STREAM_TIMEOUT": 1, "HOLD_GRACE_SECONDS": 1, "RECONCILE_INTERVAL": 60}


def user_with_stale_holds(database, name, count, made_ago):
    """A user with `count` holds of calls that died `made_ago`, each ending a second after it was made."""
    [(user_id,)] = database.query("INSERT INTO users (email, username, password_hash) "
                                  "VALUES (%s, %s, 'x') RETURNING id", (f"{name}@example.com", name))
    database.query("SELECT add_user_funds(%s, %s)", (user_id, HOLD * count))
    holds = [database.query("SELECT transaction_id FROM deduct_user_balance(%s, %s, 'h', '{}', NULL, 1)",
                            (user_id, HOLD))[0][0] for _ in range(count)]
    database.query("UPDATE transactions SET created_at = now() - %s::interval, "
                   "call_deadline = now() - %s::interval + interval '1 second' WHERE id = ANY(%s)",
                   (made_ago, made_ago, holds))
    return user_id, holds


def releases_of(database, holds):
    """{hold: [(amount, kind)] of its releases}, for the holds that have any."""
    found = {}
    for hold_id, amount, kind in database.query(
            "SELECT related_transaction_id, amount, metadata ->> 'kind' FROM transactions "
            "WHERE type = 'release' AND related_transaction_id = ANY(%s)", (holds,)):
        found.setdefault(hold_id, []).append((amount, kind))
    return found


def lock_waiters_reach(database, count, starting):
    """Whether `count` sessions come to wait on the ledger's lock before an instance fails to start."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline and not any(start.done() for start in starting):
        if database.query(LOCK_WAITERS)[0][0] >= count:
            return True
        time.sleep(0.1)
    return False


def test_three_instances_reconciling_at_once_return_each_hold_once(database, tmp_path):
    user_id, holds = user_with_stale_holds(database, "held", STALE_HOLDS, "1 hour")
    logs = [tmp_path / f"instance-{number}.log" for number in range(INSTANCES)]
    settings = settings_for(database.app_url)
    with closing(database.owner()) as blocker, ThreadPoolExecutor(max_workers=INSTANCES) as pool:
        with blocker.cursor() as cur:
            # Each instance's start-up reconcile waits here to read the stale holds.
            cur.execute("BEGIN; LOCK TABLE transactions IN ACCESS EXCLUSIVE MODE")
        starting = [pool.submit(LiveServer, {**settings, "GUNICORN_CMD_ARGS": f"--error-logfile {log}"}, workers=1)
                    for log in logs]
        try:
            all_waiting = lock_waiters_reach(database, INSTANCES, starting)
        finally:
            with blocker.cursor() as cur:
                cur.execute("COMMIT")  # they go on together
        servers = [start.result() for start in starting]
    for server in servers:
        server.stop()

    assert all_waiting, "the instances reconciled one after another, not at once"
    returned = [sum(map(int, re.findall(r"reconcile: returned (\d+) stale holds", log.read_text()))) for log in logs]
    assert sum(returned) == STALE_HOLDS, f"returns counted by each instance: {returned}"
    assert releases_of(database, holds) == {hold: [(HOLD, "reconcile")] for hold in holds}
    assert database.query("SELECT spent_balance, held_balance FROM user_balance WHERE user_id = %s",
                          (user_id,)) == [(0, 0)]
    assert database.query(readme_ledger_query()) == []


def test_a_run_reads_back_to_where_the_last_that_worked_began_whoever_ran_it(settings, database):
    """The last run that worked began an hour ago (the database down since, and
    every worker restarted, say): this worker, new, still reads the hold that
    came due 50 minutes ago; the schedule's run is then taken for the interval."""
    _, [due_since_then] = user_with_stale_holds(database, "recent", 1, "50 minutes")
    _, [due_before] = user_with_stale_holds(database, "old", 1, "3 hours")
    database.query("INSERT INTO reconcile_schedule (next_run_at, reconciled_until) "
                   "VALUES ('-infinity', now() - interval '1 hour')")
    app = create_app({**settings, **QUICK})
    try:
        with app.app_context():
            assert reconcile_on_schedule(app.config) == 1
            assert reconcile_on_schedule(app.config) is None, "this interval's run was taken"
            database.query("UPDATE reconcile_schedule SET next_run_at = now()")
            assert reconcile_on_schedule(app.config) == 0, "the next interval's"
    finally:
        close_app(app)
    # A hold due before the last run that worked is that run's: only the whole ledger's reconcile reads so far.
    assert releases_of(database, [due_since_then, due_before]) == {due_since_then: [(HOLD, "reconcile")]}
    [(behind,)] = database.query("SELECT now() - reconciled_until FROM reconcile_schedule")
    assert behind < timedelta(minutes=1)
    assert database.query(readme_ledger_query()) == []


def test_the_first_run_reads_the_whole_ledger(settings, database):
    _, [old] = user_with_stale_holds(database, "old", 1, "3 hours")
    app = create_app({**settings, **QUICK})
    try:
        with app.app_context():
            assert reconcile_on_schedule(app.config) == 1
    finally:
        close_app(app)
    assert releases_of(database, [old]) == {old: [(HOLD, "reconcile")]}
    assert database.query(readme_ledger_query()) == []
