"""The prepaid balance: endpoints 9–11."""
import base64
import binascii

from flask import Blueprint, current_app, g, request

from app.auth import require_auth
from app.errors import APIError, ValidationFailed
from app.extensions import db
from app.idempotency import idempotent, respond
from app.requests import json_body
from app.schemas import Balance, LedgerEntry, TopUpRequest, TopUpResponse, TransactionPage

bp = Blueprint("balance", __name__, url_prefix="/balance")

TRANSACTION_TYPES = ("deposit", "hold", "release")
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


class TopUpsDisabled(APIError):
    status = 403
    code = "topups_disabled"
    message = "Self-service top-ups are turned off on this service."


@bp.get("")
@require_auth
def show_balance():
    return Balance.from_row(db.balance(g.user_id)).model_dump(mode="json")


@bp.post("/funds")
@require_auth
@idempotent
def add_funds():
    if not current_app.config["SELF_TOPUP_ENABLED"]:
        raise TopUpsDisabled()
    amount = json_body(TopUpRequest).amount
    maximum = current_app.config["MAX_TOPUP"]
    if amount > maximum:
        raise ValidationFailed(details={"amount": f"must be at most {maximum}"})
    with db.transaction(acting_user_id=g.user_id) as tx:
        moved = db.add_funds(g.user_id, amount, "Top-up", {"source": "self_topup"}, tx=tx)
        body = TopUpResponse(
            transaction=LedgerEntry.from_row(db.ledger_entry(g.user_id, moved["transaction_id"], tx=tx)),
            balance=Balance.from_row(db.balance(g.user_id, tx=tx)),
        ).model_dump(mode="json")
        return respond(body, 201, tx)


@bp.get("/transactions")
@require_auth
def list_transactions():
    limit = page_size()
    kind = request.args.get("type")
    if kind is not None and kind not in TRANSACTION_TYPES:
        raise ValidationFailed(details={"type": f"must be one of {', '.join(TRANSACTION_TYPES)}"})
    rows = db.list_transactions(g.user_id, limit + 1, before_id=decode_cursor(), kind=kind)
    page, more = rows[:limit], len(rows) > limit
    return TransactionPage(
        transactions=[LedgerEntry.from_row(row) for row in page],
        next_cursor=encode_cursor(page[-1]["id"]) if more else None,
    ).model_dump(mode="json")


def page_size():
    """`?limit=` as an int in 1..100 (20 when absent), else a 400."""
    raw = request.args.get("limit")
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise ValidationFailed(details={"limit": f"must be an integer from 1 to {MAX_PAGE_SIZE}"})
    return int(raw)


def encode_cursor(last_id):
    return base64.urlsafe_b64encode(f"v1:{last_id}".encode()).decode().rstrip("=")


def decode_cursor():
    """The id a page continues after, from `?cursor=`; None for the first page."""
    raw = request.args.get("cursor")
    if raw is None:
        return None
    try:
        version, _, value = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode().partition(":")
        if version == "v1" and value.isascii() and value.isdigit() and 0 < int(value) < 2 ** 63:
            return int(value)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ValidationFailed(details={"cursor": "is not a cursor this service issued"})
