"""`flask prune`: chat messages, audit rows and finished alert deliveries past
their retention deleted as the owner in small batches, twice or two at once
harmlessly, and never a ledger row or a usage rollup."""
from concurrent.futures import ThreadPoolExecutor

from psycopg2.extensions import make_dsn

from app import close_app, create_app
from database import retention
from tests.support import readme_ledger_query, settings_for

OLD, RECENT = "now() - interval '400 days'", "now() - interval '1 day'"


def seed(database, old_audit_rows=0):
    """A user with an old and a recent chat message, old ledger rows (a deposit and a
    settled call, counted in the usage rollups), and old and recent audit rows and
    alert deliveries; returns the user's id."""
    user_id = database.query("INSERT INTO users (email, username, password_hash) "
                             "VALUES ('ada@example.com', 'ada', 'x') RETURNING id")[0][0]
    database.query("SELECT add_user_funds(%s, 5, 'deposit', NULL, 'test', '{}')", (user_id,))
    hold_id = database.query("SELECT transaction_id FROM deduct_user_balance(%s, 1)", (user_id,))[0][0]
    database.query("SELECT add_user_funds(%s, 0.25, 'release', %s)", (user_id, hold_id))
    session_id = database.query("INSERT INTO chat_sessions (user_id, model_id) VALUES (%s, 'local/echo') "
                                "RETURNING id", (user_id,))[0][0]
    for age in (OLD, RECENT):
        database.query(f"INSERT INTO chat_history (session_id, user_id, role, content, created_at) "
                       f"VALUES (%s, %s, 'user', 'hello', {age})", (session_id, user_id))
        for status in ("delivered", "pending"):
            database.query(f"INSERT INTO alert_deliveries (user_id, channel, kind, payload, status, created_at) "
                           f"VALUES (%s, 'email', 'low_balance', '{{}}', %s, {age})", (user_id, status))
    database.query(f"INSERT INTO audit_log (table_name, operation, row_id, created_at) "
                   f"SELECT 'users', 'UPDATE', 'x', {OLD} FROM generate_series(1, %s)", (old_audit_rows + 1,))
    database.query("UPDATE transactions SET created_at = now() - interval '400 days' WHERE user_id = %s",
                   (user_id,))
    return user_id


def counts(database):
    return {table: database.query(f"SELECT count(*) FROM {table}")[0][0]
            for table in ("chat_history", "alert_deliveries", "transactions", "usage_daily")} | {
        "old_audit": database.query("SELECT count(*) FROM audit_log WHERE created_at < now() - interval '365 days'")
        [0][0]}


def run_prune(database, **settings):
    app = create_app(settings_for(database.app_url, MIGRATE_DATABASE_URL=database.owner_url, **settings))
    try:
        return app.test_cli_runner().invoke(args=["prune"])
    finally:
        close_app(app)


def test_prune_deletes_what_is_past_its_retention_and_never_money(database):
    seed(database)
    before = counts(database)
    result = run_prune(database, CHAT_RETENTION_DAYS=30)
    assert result.exit_code == 0, result.output
    assert "pruned 1 chat messages, " in result.output and "1 alert deliveries" in result.output
    after = counts(database)
    assert after == {"chat_history": 1, "alert_deliveries": before["alert_deliveries"] - 1,
                     "transactions": before["transactions"], "usage_daily": 1, "old_audit": 0}
    # Pending deliveries stay, however old; so does the recent message.
    assert database.query("SELECT status FROM alert_deliveries WHERE created_at < now() - interval '30 days'") == [
        ("pending",)]
    assert database.query("SELECT day < current_date - 365 FROM usage_daily") == [(True,)]
    assert database.query(readme_ledger_query()) == []
    again = run_prune(database, CHAT_RETENTION_DAYS=30)
    assert again.exit_code == 0 and "pruned 0 chat messages, 0 audit rows and 0 alert deliveries" in again.output


def test_chat_messages_are_kept_for_ever_by_default(database):
    seed(database)
    assert run_prune(database).exit_code == 0
    assert counts(database)["chat_history"] == 2


def test_two_prunes_at_once_delete_each_row_once(database):
    seed(database, old_audit_rows=400)
    old = counts(database)["old_audit"]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: retention.prune(database.owner_url, {"audit_rows": 365}, batch=7),
                                range(2)))
    assert sum(result["audit_rows"] for result in results) == old
    assert counts(database)["old_audit"] == 0


def test_prune_without_an_owner_login_skips_retention_and_says_so(database):
    seed(database)
    app = create_app(settings_for(database.app_url))  # MIGRATE_DATABASE_URL unset: the service's login
    try:
        result = app.test_cli_runner().invoke(args=["prune"])
    finally:
        close_app(app)
    assert result.exit_code == 0 and "retention skipped" in result.output and "MIGRATE_DATABASE_URL" in result.output
    assert counts(database)["old_audit"] > 0


def test_prune_with_an_owner_url_that_is_no_owner_fails_in_one_line(database):
    seed(database)
    not_owner = make_dsn(database.app_url, application_name="not-owner")  # the service's login, named apart
    app = create_app(settings_for(database.app_url, MIGRATE_DATABASE_URL=not_owner))
    try:
        result = app.test_cli_runner().invoke(args=["prune"])
    finally:
        close_app(app)
    assert result.exit_code == 1 and "MIGRATE_DATABASE_URL must name the owner" in result.output
    assert counts(database)["old_audit"] > 0
