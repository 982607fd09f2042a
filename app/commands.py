"""Operator commands: `flask --app wsgi <command>` (see README)."""
import click
from flask import Flask, current_app
from flask.cli import AppGroup
from pydantic import TypeAdapter, ValidationError

from app.extensions import db
from app.gateway import reconcile_holds
from app.schemas import Email, TopUpRequest

EMAIL = TypeAdapter(Email)


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
            email = EMAIL.validate_python(email)
        except ValidationError as exc:
            raise click.BadParameter(exc.errors()[0]["msg"]) from None
        note = note.strip()
        if not note or len(note) > 400 or "\x00" in note:
            raise click.BadParameter("--note must be 1 to 400 characters")
        user_id = db.user_id_by_email(email)
        if user_id is None:
            raise click.ClickException(f"no account with email {email}")
        kind = "refund" if refund else "credit"
        with db.transaction() as tx:
            moved = db.add_funds(user_id, amount, f"Operator {kind}: {note}", {"source": "operator", "kind": kind}, tx=tx)
        click.echo(f"{kind}ed {amount} USD to {email}: transaction {moved['transaction_id']}, "
                   f"available {moved['available']}")

    keys = AppGroup("keys", help="The key vault.")

    @keys.command("rotate")
    def rotate():
        """Re-encrypt every stored API key under the newest ENCRYPTION_KEYS entry."""
        moved, current, failed = db.reencrypt_api_keys()
        click.echo(f"re-encrypted {moved} keys under {current_app.extensions['vault'].newest_kid!r}; "
                   f"{current} were already under it")
        if failed:
            raise click.ClickException(
                f"{len(failed)} keys could not be decrypted and were left as they are: "
                + ", ".join(str(key_id) for key_id in failed))

    app.cli.add_command(keys)

    holds = AppGroup("holds", help="Holds on balances for chat calls.")

    @holds.command("reconcile")
    def reconcile():
        """Return every hold whose call never settled (its process died)."""
        click.echo(f"returned {reconcile_holds(current_app.config)} holds")

    app.cli.add_command(holds)

    @app.cli.command("prune")
    def prune():
        """Delete idempotency records older than 24 hours."""
        click.echo(f"pruned {db.prune_idempotency_keys()} idempotency records")
