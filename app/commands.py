"""Operator commands: `flask --app wsgi <command>` (see README)."""
import functools
from contextlib import closing, contextmanager

import click
import psycopg2
import psycopg2.errors
import psycopg2.extras
from flask import Flask, current_app
from flask.cli import AppGroup
from pydantic import TypeAdapter, ValidationError

from app.api.bodies import validation_details
from app.alerts import WEBHOOK_BINDING
from app.billing import reconcile_holds
from app.extensions import db, vault
from app.money import format_money
from app.schemas import Email, TopUpRequest
from database import retention
from database.catalog_file import CatalogError, load_catalog, read_catalog
from database.errors import DatabaseUnavailable, no_server_answered, unreachable_database
from database.pool import CONNECT_TIMEOUT_SECONDS, Cursor
from database.vault import VaultError

EMAIL = TypeAdapter(Email)
USAGE_COUNTS = ("requests", "cost", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens")


def register_commands(app: Flask):
    @app.cli.command("credit")
    @click.argument("email")
    @click.argument("amount")
    @click.option("--note", required=True, help="Why the money is credited; kept in the ledger.")
    @click.option("--refund", is_flag=True, help="Record the credit as a refund of earlier charges.")
    def credit(email, amount, note, refund):
        """Credit AMOUNT (USD, up to 2 decimals) to the account with EMAIL."""
        try:
            amount = TopUpRequest.model_validate({"amount": amount}).amount
        except ValidationError as exc:
            problem = validation_details(exc, {"amount": amount})["amount"]
            raise click.BadParameter(problem, param_hint="AMOUNT") from None
        email = _email_argument(email)
        note = note.strip()
        if not note or len(note) > 400 or "\x00" in note:
            raise click.BadParameter("--note must be 1 to 400 characters")
        kind = "refund" if refund else "credit"
        try:
            # As the owner: the service's own login may not deposit more than MAX_TOPUP.
            with owner_transaction() as tx:
                user_id = db.user_id_by_email(email, tx=tx)
                if user_id is None:
                    raise click.ClickException(f"no account with email {email}")
                moved = db.add_funds(user_id, amount, f"Operator {kind}: {note}",
                                     {"source": "operator", "kind": kind}, tx=tx)
                if not moved["ok"]:
                    raise click.ClickException(f"nothing credited: {moved['reason']}")
        except psycopg2.errors.InsufficientPrivilege:
            raise click.ClickException(
                "nothing credited: only the database owner may credit more than MAX_TOPUP; "
                "MIGRATE_DATABASE_URL must name the owner") from None
        click.echo(f"{kind}ed {format_money(amount)} USD to {email}: transaction {moved['transaction_id']}, "
                   f"available {format_money(moved['available'])}")

    admin = AppGroup("admin", help="Who may use the admin API and console pages.")

    def _set_admin(email, reason, grant):
        email = _email_argument(email)
        reason = reason.strip()
        if not reason or len(reason) > 400 or "\x00" in reason:
            raise click.BadParameter("--reason must be 1 to 400 characters")
        # As the owner: the service's own login may read the admins, never write them.
        with owner_transaction() as tx:
            change = db.grant_admin if grant else db.revoke_admin
            if change(email, reason, tx=tx) is None:
                raise click.ClickException(f"no account with email {email}")
        click.echo(f"{email} is {'now' if grant else 'no longer'} an admin")

    @admin.command("grant")
    @click.argument("email")
    @click.option("--reason", default="granted at the command line", show_default=True,
                  help="Why; kept in the audit log.")
    def grant(email, reason):
        """Make the account with EMAIL an admin, from its next request."""
        _set_admin(email, reason, grant=True)

    @admin.command("revoke")
    @click.argument("email")
    @click.option("--reason", default="revoked at the command line", show_default=True,
                  help="Why; kept in the audit log.")
    def revoke(email, reason):
        """Stop the account with EMAIL being an admin, from its next request."""
        _set_admin(email, reason, grant=False)

    app.cli.add_command(admin)

    keys = AppGroup("keys", help="The key vault.")

    @keys.command("rotate")
    def rotate():
        """Re-encrypt every stored API key and webhook secret under the newest ENCRYPTION_KEYS entry."""
        moved, current, failed = _reseal(db.keys_to_reseal, db.reseal_api_key, lambda row: row["provider"])
        click.echo(f"re-encrypted {moved} keys under {vault.newest_kid!r}; "
                   f"{current} were already under it")
        try:
            # As the owner: the service's own login may read webhooks' sealed secrets, never rewrite them.
            with owner_transaction() as tx:
                hooks_moved, hooks_current, hooks_failed = _reseal(
                    db.webhooks_to_reseal, db.reseal_webhook_secret, lambda row: WEBHOOK_BINDING, tx=tx)
        except psycopg2.errors.InsufficientPrivilege:
            raise click.ClickException("webhook secrets are re-encrypted by the database owner only: "
                                       "MIGRATE_DATABASE_URL must name the owner") from None
        click.echo(f"re-encrypted {hooks_moved} webhook secrets under {vault.newest_kid!r}; "
                   f"{hooks_current} were already under it")
        unreadable = [(len(ids), what, ids) for what, ids in (("keys", failed), ("webhook secrets", hooks_failed))
                      if ids]
        if unreadable:
            raise click.ClickException("; ".join(
                f"{count} {what} could not be decrypted and were left as they are: " + ", ".join(map(str, ids))
                for count, what, ids in unreadable))

    app.cli.add_command(keys)

    holds = AppGroup("holds", help="Holds on balances for chat calls.")

    @holds.command("reconcile")
    def reconcile():
        """Return every hold whose call never settled (its process died)."""
        click.echo(f"returned {reconcile_holds(current_app.config)} holds")

    app.cli.add_command(holds)

    catalog = AppGroup("catalog", help="The model catalog.")

    @catalog.command("load")
    @click.argument("path", type=click.Path(exists=True, dir_okay=False))
    def load(path):
        """Add or update the models in PATH (catalog.json's format), all or none.

        Runs as the database owner (MIGRATE_DATABASE_URL): the service's own
        login may read the catalog but not change it."""
        try:
            catalog = read_catalog(path)
        except CatalogError as exc:
            raise click.ClickException(str(exc)) from None
        configured, models = current_app.config["PROVIDERS"], catalog["models"]
        for index, model in enumerate(models):
            named = [("provider", model["provider"])] + [(f"deployments.{place}.provider", deployment["provider"])
                                                          for place, deployment in enumerate(model["deployments"])]
            for field, provider in named:
                if provider not in configured:
                    raise click.ClickException(
                        f"catalog refused: models.{index}.{field}: {provider} is no configured provider "
                        f"({', '.join(configured)}); add it to PROVIDERS_FILE first")
        try:
            with closing(owner_connection()) as conn:
                with conn, conn.cursor() as cur:
                    added, updated = load_catalog(cur, catalog)
        except psycopg2.Error as exc:
            if no_server_answered(exc):
                raise
            raise click.ClickException(f"nothing loaded: {str(exc).strip()}") from None
        lists = len(catalog["alias_lists"])
        click.echo(f"catalog: {added} models added, {updated} updated, {len(models) - added - updated} unchanged"
                   + (f"; {lists} alias lists written" if lists else ""))

    app.cli.add_command(catalog)

    alerts = AppGroup("alerts", help="Alerts to webhooks and email.")

    @alerts.command("deliver")
    def deliver():
        """Send the alert deliveries due now, once (the workers do so every ALERT_POLL_INTERVAL)."""
        from app.alerts import deliver_due
        click.echo(f"delivered {deliver_due(current_app.config)} alerts")

    app.cli.add_command(alerts)

    usage = AppGroup("usage", help="The daily usage rollups that GET /api/v1/usage reads.")

    @usage.command("verify")
    @click.option("--user", "email", help="Only the account with this email.")
    def verify(email):
        """Recount every day's usage from the ledger and name each rollup row (user, day, model,
        access key) that differs; exit status 1 when any does."""
        user_id = None
        if email is not None:
            email = _email_argument(email)
            user_id = db.user_id_by_email(email)
            if user_id is None:
                raise click.ClickException(f"no account with email {email}")
        differences, rows = db.usage_differences(user_id)
        for row in differences:
            click.echo(f"differs: {row['email']} {row['day']} model {row['model_id'] or '-'} "
                       f"key {row['access_key_id'] or '-'}: rollup {_counts(row['rollup'])}, "
                       f"ledger {_counts(row['ledger'])}")
        if differences:
            raise click.ClickException(f"{len(differences)} rollup rows differ from the ledger")
        click.echo(f"usage verified: {rows} rollup rows{f' of {email}' if email else ''} agree with the ledger")

    app.cli.add_command(usage)

    @app.cli.command("prune")
    def prune():
        """Delete idempotency records older than 24 hours, login-failure counts gone stale, and (as the
        owner, MIGRATE_DATABASE_URL, in small batches) chat messages, audit rows and finished alert
        deliveries past their retention. Never a ledger row. Run it daily, from cron."""
        config = current_app.config
        click.echo(f"pruned {db.prune_idempotency_keys()} idempotency records and "
                   f"{db.prune_login_attempts(config['LOGIN_LOCKOUT_SECONDS'])} login-failure counts")
        if config["MIGRATE_DATABASE_URL"] == config["DATABASE_URL"]:
            click.echo("retention skipped: it runs as the database owner, and MIGRATE_DATABASE_URL names none")
            return
        try:
            deleted = retention.prune(config["MIGRATE_DATABASE_URL"], {
                "chat_messages": config["CHAT_RETENTION_DAYS"], "audit_rows": config["AUDIT_RETENTION_DAYS"],
                "alert_deliveries": config["ALERT_DELIVERY_RETENTION_DAYS"]})
        except psycopg2.errors.InsufficientPrivilege:
            raise click.ClickException("audit rows may be deleted by the database owner only: "
                                       "MIGRATE_DATABASE_URL must name the owner") from None
        click.echo(f"pruned {deleted['chat_messages']} chat messages, {deleted['audit_rows']} audit rows and "
                   f"{deleted['alert_deliveries']} alert deliveries")

    explain_database_outages(app.cli)


def _email_argument(email):
    try:
        return EMAIL.validate_python(email)
    except ValidationError as exc:
        raise click.BadParameter(next(iter(validation_details(exc, email).values())), param_hint="EMAIL") from None


def _counts(counts):
    """A side of a usage difference, in one line; `none` when that side has no row."""
    if counts is None:
        return "none"
    shown = {**counts, "cost": format_money(counts["cost"])}
    return ", ".join(f"{name} {'-' if shown[name] is None else shown[name]}" for name in USAGE_COUNTS)


def _reseal(to_reseal, reseal, binding_of, tx=None):
    """Moves every sealed secret that `to_reseal` lists under the vault's
    newest encryption key (each bound to its user and `binding_of(row)`):
    (moved, already_current, ids that could not be decrypted). Each is
    rewritten only if no one changed it meanwhile."""
    stale, current = to_reseal(vault.newest_kid, tx=tx)
    moved, failed = 0, []
    for row in stale:
        try:
            plaintext = vault.decrypt(*row["sealed"], row["user_id"], binding_of(row))
        except VaultError:
            failed.append(row["id"])
            continue
        moved += reseal(row["id"], row["sealed"], vault.encrypt(plaintext, row["user_id"], binding_of(row)), tx=tx)
    return moved, current, failed


def owner_connection(**options):
    """A connection as the database owner (MIGRATE_DATABASE_URL), for what the
    service's own login may not do."""
    return psycopg2.connect(current_app.config["MIGRATE_DATABASE_URL"], connect_timeout=CONNECT_TIMEOUT_SECONDS,
                            **options)


@contextmanager
def owner_transaction():
    """One transaction as the owner, with the transaction helper's vocabulary;
    committed when the block ends, dropped with the connection on error."""
    with closing(owner_connection(cursor_factory=psycopg2.extras.RealDictCursor)) as conn:
        conn.autocommit = True  # the helper opens the transaction itself
        tx = Cursor(conn)
        yield tx
        tx.commit()


def explain_database_outages(group):
    """Every command in `group`: a database that cannot be reached ends it with
    one line saying so, not a traceback."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            explain_database_outages(command)
        else:
            command.callback = _explaining_outages(command.callback)


def _explaining_outages(callback):
    @functools.wraps(callback)
    def run(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except DatabaseUnavailable:
            raise click.ClickException(unreachable_database()) from None
        except psycopg2.Error as exc:
            if no_server_answered(exc):
                raise click.ClickException(unreachable_database(exc)) from None
            raise
    return run
