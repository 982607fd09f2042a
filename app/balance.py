"""The prepaid balance: endpoints 9–11."""
from flask import Blueprint, current_app, g

from app.auth import require_auth
from app.errors import APIError, ValidationFailed
from app.extensions import db
from app.openapi import CURSOR, LIMIT, documented, query_enum
from app.idempotency import idempotent, respond
from app.pagination import decode_cursor, encode_cursor, page_size, paginate, row_id
from app.requests import json_body, query_choice
from app.schemas import Balance, LedgerEntry, TopUpRequest, TopUpResponse, TransactionPage

bp = Blueprint("balance", __name__, url_prefix="/balance")

TRANSACTION_TYPES = ("deposit", "hold", "release")


class TopUpsDisabled(APIError):
    status = 403
    code = "topups_disabled"
    message = "Self-service top-ups are turned off on this service."


@bp.get("")
@documented("Your balance", {200: Balance})
@require_auth
def show_balance():
    return Balance.from_row(db.balance(g.user_id)).model_dump(mode="json")


@bp.post("/funds")
@documented("Add funds (stands in for a payment provider)", {201: TopUpResponse}, request=TopUpRequest,
            errors=[403, 409, 422], idempotent=True)
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
@documented("Your ledger, newest first", {200: TransactionPage},
            query=[LIMIT, CURSOR, query_enum("type", TRANSACTION_TYPES, "Only this type of transaction.")])
@require_auth
def list_transactions():
    limit = page_size()
    kind = query_choice("type", TRANSACTION_TYPES)
    cursor = decode_cursor(row_id)
    rows = db.list_transactions(g.user_id, limit + 1, before_id=cursor and cursor[0], kind=kind)
    page, next_cursor = paginate(rows, limit, lambda last: encode_cursor(last["id"]))
    return TransactionPage(transactions=[LedgerEntry.from_row(row) for row in page],
                           next_cursor=next_cursor).model_dump(mode="json")
