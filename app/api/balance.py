"""The prepaid balance: endpoints 9–11."""
from flask import current_app

from app.api.bodies import query_choice
from app.api.contract import ACCOUNT, body, caller, idempotent, other_responses, query, response
from app.api.openapi import CURSOR, LIMIT, query_enum
from app.api.pagination import decode_cursor, encode_cursor, page_size, paginate, row_id
from app.api.pipeline import OperationBlueprint
from app.errors import InvalidToken, TopUpsDisabled, ValidationFailed
from app.extensions import db
from app.schemas import Balance, LedgerEntry, TopUpRequest, TopUpResponse, TransactionPage
from database.vocab import TRANSACTION_TYPES

bp = OperationBlueprint("balance", __name__, url_prefix="/balance")


@bp.get("")
@response(Balance)
@caller(ACCOUNT)
def show_balance(caller):
    """Your balance"""
    return Balance.from_row(db.balance(caller.user_id))


@bp.post("/funds")
@response(TopUpResponse, 201)
@other_responses(403, 409, 422)
@caller(ACCOUNT)
@idempotent(claims_in_view=True)
@body(TopUpRequest)
def add_funds(caller, top_up, idempotency):
    """Add funds (stands in for a payment provider)"""
    if not current_app.config["SELF_TOPUP_ENABLED"]:
        raise TopUpsDisabled()
    maximum = current_app.config["MAX_TOPUP"]
    if top_up.amount > maximum:
        raise ValidationFailed(details={"amount": f"must be at most {maximum}"})
    with db.transaction(acting_user_id=caller.user_id) as tx:
        stored = idempotency.claim(tx)  # a retry waits for the first's commit and replays its answer
        if stored is not None:
            return stored.response()
        # The balance row stays locked from the deposit to the commit: the deposit
        # brings its receipt, and the answer's record goes out with the COMMIT.
        receipt = db.deposit(caller.user_id, top_up.amount, "Top-up", {"source": "self_topup"}, tx=tx)
        if receipt is None:
            raise InvalidToken()  # the user is gone
        entry, balance = receipt
        answer = TopUpResponse(transaction=LedgerEntry.from_row(entry), balance=Balance.from_row(balance))
        return idempotency.respond(answer, 201, tx)


@bp.get("/transactions")
@response(TransactionPage)
@query(LIMIT, CURSOR, query_enum("type", TRANSACTION_TYPES, "Only this type of transaction."))
@caller(ACCOUNT)
def list_transactions(caller):
    """Your ledger, newest first"""
    limit = page_size()
    kind = query_choice("type", TRANSACTION_TYPES)
    cursor = decode_cursor(row_id)
    rows = db.list_transactions(caller.user_id, limit + 1, before_id=cursor and cursor[0], kind=kind)
    page, next_cursor = paginate(rows, limit, lambda last: encode_cursor(last["id"]))
    return TransactionPage(transactions=[LedgerEntry.from_row(row) for row in page], next_cursor=next_cursor)
