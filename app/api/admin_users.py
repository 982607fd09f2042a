"""Operators and users: search, one user's file, credit and debit, disable and
enable. Every route is for admins only (checked on each request); every
change is the schema's admin_* function's, which checks the admin again and
writes the audit row."""
from flask import current_app, request

from app.api.contract import ADMIN, body, caller, idempotent, other_responses, query, response
from app.api.guards import uuid_from_path
from app.api.openapi import CURSOR, LIMIT, query_parameter
from app.api.pagination import newest_first
from app.api.pipeline import OperationBlueprint
from app.errors import AdminRequired, NotFound, SelfActionForbidden, ValidationFailed
from app.extensions import db
from app.money import format_money
from app.schemas import Balance, LedgerEntry
from app.schemas.admin import (AdminAccessKey, AdminCall, AdminUser, AdminUserFile, AdminUserPage, MoneyAdjustment,
                               MoneyAdjustmentRequest, ReasonRequest, UserStanding)

bp = OperationBlueprint("admin_users", __name__, url_prefix="/admin/users")

# Ledger entries and calls a user's file shows: the latest, enough for a support ticket.
RECENT_ROWS = 50
MAX_QUERY_LENGTH = 254


@bp.get("")
@response(AdminUserPage)
@other_responses(403, 414)
@query(query_parameter("q", {"type": "string", "maxLength": MAX_QUERY_LENGTH},
                       "Part of an email or username (any case); absent: every user."), LIMIT, CURSOR)
@caller(ADMIN)
def search_users(caller):
    """Users whose email or username holds `q`, newest first (admins only)"""
    text = request.args.get("q", "").strip()
    if len(text) > MAX_QUERY_LENGTH:
        raise ValidationFailed(details={"q": f"must be at most {MAX_QUERY_LENGTH} characters"})
    page, next_cursor = newest_first(lambda limit, after: db.search_users(text, limit, after))
    return AdminUserPage(users=[AdminUser.model_validate(row) for row in page], next_cursor=next_cursor)


@bp.get("/<user_id>")
@response(AdminUserFile)
@other_responses(403)
@caller(ADMIN)
def user_file(caller, user_id):
    """One user: balance, latest ledger entries, access keys (no secrets) and calls (admins only)"""
    found = db.user_file(uuid_from_path(user_id), RECENT_ROWS)
    if found is None:
        raise NotFound()
    return AdminUserFile(user=AdminUser.model_validate(found["user"]), balance=Balance.from_row(found["user"]),
                         transactions=[LedgerEntry.from_row(row) for row in found["ledger"]],
                         access_keys=[AdminAccessKey.from_row(row) for row in found["access_keys"]],
                         calls=[AdminCall.from_row(row) for row in found["calls"]])


@bp.post("/<user_id>/credit")
@response(MoneyAdjustment, 201)
@other_responses(403, 409, 422)
@caller(ADMIN)
@idempotent(claims_in_view=True)
@body(MoneyAdjustmentRequest)
def credit(caller, adjustment, idempotency, user_id):
    """Credit a user's balance, with a reason: a refund, a goodwill credit (admins only)"""
    maximum = current_app.config["MAX_TOPUP"]
    if adjustment.amount > maximum:
        raise ValidationFailed(details={"amount": f"must be at most MAX_TOPUP ({format_money(maximum)}); "
                                                  "the database owner's `flask credit` may credit more"})
    return _move_money(caller, "credit", adjustment, idempotency, user_id)


@bp.post("/<user_id>/debit")
@response(MoneyAdjustment, 201)
@other_responses(403, 409, 422)
@caller(ADMIN)
@idempotent(claims_in_view=True)
@body(MoneyAdjustmentRequest)
def debit(caller, adjustment, idempotency, user_id):
    """Take money back out of a user's available balance, never below zero, with a reason (admins only)"""
    return _move_money(caller, "debit", adjustment, idempotency, user_id)


def _move_money(caller, action, adjustment, idempotency, user_id):
    target = _target(caller, user_id)
    with db.transaction(acting_user_id=caller.user_id) as tx:
        stored = idempotency.claim(tx)
        if stored is not None:
            return stored.response()
        moved = db.admin_move_money(caller.user_id, target, action, adjustment.amount, adjustment.reason,
                                    {"idempotency_key": idempotency.key}, tx=tx)
        if not moved["ok"]:
            refused(moved["reason"], moved.get("available"))
        found = db.user_file(target, 1, tx=tx)
        answer = MoneyAdjustment(transaction=LedgerEntry.from_row(found["ledger"][0]),
                                 balance=Balance.from_row(found["user"]), audit_id=str(moved["action_id"]))
        return idempotency.respond(answer, 201, tx)


@bp.post("/<user_id>/disable")
@response(UserStanding)
@other_responses(403)
@caller(ADMIN)
@body(ReasonRequest)
def disable(caller, why, user_id):
    """Disable a user: their tokens and access keys stop at once; their money and calls in flight stay (admins only)"""
    return _set_active(caller, why, user_id, False)


@bp.post("/<user_id>/enable")
@response(UserStanding)
@other_responses(403)
@caller(ADMIN)
@body(ReasonRequest)
def enable(caller, why, user_id):
    """Enable a disabled user again (admins only)"""
    return _set_active(caller, why, user_id, True)


def _set_active(caller, why, user_id, active):
    target = _target(caller, user_id)
    with db.transaction(acting_user_id=caller.user_id) as tx:
        changed = db.admin_set_user_active(caller.user_id, target, active, why.reason, tx=tx)
        if not changed["ok"]:
            refused(changed["reason"])
        found = db.user_file(target, 0, tx=tx)
    return UserStanding(user=AdminUser.model_validate(found["user"]), changed=changed["changed"])


def _target(caller, user_id):
    """The user a path names; acting on one's own account is refused before any work."""
    target = uuid_from_path(user_id)
    if target == caller.user_id:
        raise SelfActionForbidden()
    return target


def refused(reason, available=None):
    """The answer to an admin function's refusal; its transaction rolls back with it."""
    if reason == "insufficient_funds":
        raise ValidationFailed(details={"amount": "is more than the user's available balance "
                                                  f"({format_money(available or 0)}): a debit never goes below zero"})
    if reason == "self_action":
        raise SelfActionForbidden()
    if reason == "not_admin":
        raise AdminRequired()  # revoked between the request's check and its write
    if reason == "reason_required":
        raise ValidationFailed(details={"reason": "must say why, in 1 to 400 characters"})
    raise NotFound()
