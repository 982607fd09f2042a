"""Creates the database and roles when missing, brings the schema up to date,
writes MAX_TOPUP as the service login's deposit cap, verifies every object
exists, and loads the sample catalog. Running it again is harmless: it prints
what it found and changes nothing else.

The schema is the numbered files in database/migrations/ (0001_initial_schema.sql
is release 1, then 0002_what.sql, …): every database, new or old, gets the ones
its schema_version lacks, in order, each in its own transaction and recorded
there, never edited once released. So a database of any earlier release upgrades
to this one with every row kept, and ends with the same schema as a new one.
`schema.sql` is that schema as one file to read, generated from them (`make schema`).

    python migrate.py            # uses MIGRATE_DATABASE_URL (the owner) from .env / the environment
"""
import re
import sys
from decimal import Decimal
from pathlib import Path

import psycopg2
import psycopg2.errors
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

from database.catalog_file import load_catalog, read_catalog
from database.errors import no_server_answered, unreachable_database

ROOT = Path(__file__).resolve().parent
MIGRATIONS_DIR = ROOT / "database" / "migrations"
MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
CATALOG_FILE = ROOT / "catalog.json"
APP_ROLE = "app_user"
ANALYTICS_ROLE = "analytics_user"
# Serialises concurrent runs of this script against one database: a session-level
# advisory lock, so MIGRATE_DATABASE_URL must reach PostgreSQL itself, never
# through PgBouncer in transaction mode (which would hand each transaction to any
# server connection, and leave the lock held on one of them).
MIGRATION_LOCK_ID = 0x514D4B54

EXPECTED = {
    "table": ["schema_version", "users", "refresh_tokens", "login_attempts", "api_keys", "models",
              "model_ratings", "model_usage_stats", "user_balance", "deposit_cap", "transactions",
              "idempotency_keys", "chat_sessions", "chat_history", "user_preferences", "audit_log", "access_keys",
              "call_charges", "alias_lists", "reconcile_schedule", "admins", "admin_actions", "model_prices", "webhooks",
              "alert_deliveries", "alert_marks", "access_key_period_spend", "usage_daily", "house_key_failures"],
    "view": ["user_with_balance", "model_popularity", "recent_activity", "usage_calls", "usage_from_ledger",
             "usage_rollup_differences"],
    "function": ["deduct_user_balance", "add_user_funds", "deposit_with_receipt", "chat_call_context", "settle_chat_call",
                 "audit_row_change", "create_user_balance", "touch_updated_at", "charge_parts",
                 "alias_lists_check", "models_list_names_check", "live_access_key", "debit_user_balance", "admin_move_money",
                 "admin_set_user_active", "admin_put_model", "admin_schedule_price", "admin_audit_log", "price_in_force",
                 "model_prices_unchangeable", "raise_alert", "transactions_alerts", "usage_count_release",
                 "usage_count_charges", "usage_recount", "usage_recount_ledger", "usage_recount_charges",
                 "admin_put_alias_list", "admin_drop_alias_list", "model_call_context"],
}


def ensure_database(owner_url):
    """Creates the target database through the server's maintenance database when
    it does not exist yet. Returns True when it was created."""
    params = parse_dsn(owner_url)
    name = params.get("dbname", "postgres")
    conn = psycopg2.connect(make_dsn(owner_url, dbname="postgres"))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone():
                return False
            try:
                cur.execute(sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(
                    sql.Identifier(name)))
            except (psycopg2.errors.DuplicateDatabase, psycopg2.errors.UniqueViolation):
                return False  # a run beside this one made it first; the migration lock orders the rest
            return True
    finally:
        conn.close()


def ensure_roles(cur, app_password):
    """app_user logs in, with `app_password` when given (set again on each run, so
    it follows .env); analytics_user is made without a login, which an operator
    may grant later and a later run leaves alone."""
    cur.execute("SELECT rolname FROM pg_roles WHERE rolname IN (%s, %s)", (APP_ROLE, ANALYTICS_ROLE))
    existing = {row[0] for row in cur.fetchall()}
    password = sql.SQL("PASSWORD {}").format(sql.Literal(app_password)) if app_password else sql.SQL("")
    verb = sql.SQL("ALTER" if APP_ROLE in existing else "CREATE")
    cur.execute(sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE {}").format(
        verb, sql.Identifier(APP_ROLE), password))
    if ANALYTICS_ROLE not in existing:
        cur.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(ANALYTICS_ROLE)))


def write_deposit_cap(cur, max_topup):
    """The largest deposit add_user_funds lets the service's login make."""
    cur.execute(
        """
        INSERT INTO deposit_cap (max_amount)
        VALUES (%(max_amount)s)
        ON CONFLICT (only_row) DO UPDATE
           SET max_amount = EXCLUDED.max_amount,
               updated_at = now()
         WHERE deposit_cap.max_amount <> EXCLUDED.max_amount
        """,
        {"max_amount": max_topup},
    )


def releases():
    """[(version, description, file)] of the whole schema, oldest first. The
    description is the file's name after its number: 0001_initial_schema.sql is
    recorded as (1, 'initial schema'), as release 1 recorded itself."""
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = MIGRATION_NAME.match(path.name)
        if match is None:
            raise RuntimeError(f"{path.name}: a migration is named NNNN_what_it_does.sql")
        found.append((int(match[1]), match[2].replace("_", " "), path))
    versions = [version for version, _, _ in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 0001, 0002, … without gaps; found {versions}")
    return found


def schema_version(cur):
    """The newest release applied to this database; 0 for a new one."""
    cur.execute("SELECT to_regclass('public.schema_version') IS NOT NULL")
    if not cur.fetchone()[0]:
        return 0
    cur.execute("SELECT coalesce(max(version), 0) FROM schema_version")
    return cur.fetchone()[0]


def apply_release(cur, version, description, path):
    cur.execute(path.read_text())
    cur.execute(
        """
        INSERT INTO schema_version (version, description)
        VALUES (%(version)s, %(description)s)
        """,
        {"version": version, "description": description},
    )


def upgrade(conn, out):
    """Applies every release the database lacks, each in a transaction of its
    own; returns (version before, version after)."""
    known = releases()
    with conn, conn.cursor() as cur:
        before = schema_version(cur)
    if before > len(known):
        raise RuntimeError(f"the database is at schema version {before}, newer than this code's "
                           f"{len(known)}: run the code it was migrated with, or newer")
    for version, description, path in known:
        if version > before:
            with conn, conn.cursor() as cur:
                apply_release(cur, version, description, path)
            out(f"applied {path.name} (schema version {version}: {description})")
    with conn, conn.cursor() as cur:
        return before, schema_version(cur)


def verify(cur):
    """{kind: (found, missing)} for every expected table, view and function."""
    cur.execute(
        """
        SELECT CASE c.relkind WHEN 'v' THEN 'view' ELSE 'table' END, c.relname
          FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v')
        UNION ALL
        SELECT 'function', p.proname
          FROM pg_proc p
          JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public'
        """
    )
    present = set(cur.fetchall())
    return {kind: ([name for name in names if (kind, name) in present],
                   [name for name in names if (kind, name) not in present])
            for kind, names in EXPECTED.items()}


def migrate(owner_url, app_password, catalog=None, out=print, max_topup=None):
    """The whole migration; returns the verify() report. Raises when an expected
    object is missing afterwards. `max_topup` (default: MAX_TOPUP's default) caps
    the deposits of every login but the owner's."""
    if max_topup is None:
        from app.config import SETTINGS
        max_topup = Decimal(SETTINGS["MAX_TOPUP"][0])
    if ensure_database(owner_url):
        out(f"created database {parse_dsn(owner_url).get('dbname')}")
    conn = psycopg2.connect(owner_url)
    try:
        # Held by the session across the transactions below; closing it lets go.
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
            ensure_roles(cur, app_password)
        before, version = upgrade(conn, out)
        with conn, conn.cursor() as cur:
            write_deposit_cap(cur, max_topup)
            inserted, updated = load_catalog(cur, read_catalog(CATALOG_FILE) if catalog is None else catalog)
            report = verify(cur)
            missing = [f"{kind} {name}" for kind, (_, absent) in report.items() for name in absent]
            if missing:
                raise RuntimeError("schema incomplete, missing: " + ", ".join(missing))
    finally:
        conn.close()
    state = "new database" if before == 0 else "up to date" if before == version else f"upgraded from {before}"
    out(f"schema version {version} ({state})")
    for kind, (found, _) in report.items():
        out(f"{len(found)} {kind}s: {', '.join(found)}")
    out(f"catalog: {inserted} models added, {updated} updated")
    out(f"deposit cap for the service's login: {max_topup} (MAX_TOPUP)")
    return report


def service_password(database_url):
    """The password migrate gives app_user: DATABASE_URL's, but only when that
    URL logs in as app_user. Another login's password is never copied to it."""
    params = parse_dsn(database_url) if database_url else {}
    return params.get("password") if params.get("user") == APP_ROLE else None


def migrate_configured(config, out=print):
    """migrate() with what the settings say: the owner's URL, app_user's
    password and the deposit cap."""
    return migrate(config["MIGRATE_DATABASE_URL"], service_password(config["DATABASE_URL"]),
                   out=out, max_topup=config["MAX_TOPUP"])


def main():
    from app.config import ConfigError, load_config

    try:
        config = load_config(check_secrets=False)
    except ConfigError as exc:
        sys.exit(f"migrate: {exc}")
    if not config["MIGRATE_DATABASE_URL"]:
        sys.exit("migrate: set MIGRATE_DATABASE_URL to the database owner's URL "
                 "(`make run` writes the embedded cluster's into .env)")
    try:
        migrate_configured(config)
    except psycopg2.Error as exc:
        if no_server_answered(exc):
            sys.exit(f"migrate: {unreachable_database(exc)}")
        sys.exit(f"migrate: database error: {str(exc).strip()}")


if __name__ == "__main__":
    main()
