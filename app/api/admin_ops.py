"""Operators' operations: holds past their deadline and reconcile now, the
house keys' state, and the audit log of every admin action (admins only)."""
from datetime import datetime
from uuid import UUID

from flask import current_app, request

from app.api.admin_users import refused
from app.api.bodies import query_choice
from app.api.contract import ADMIN, body, caller, other_responses, query, response
from app.api.openapi import CURSOR, LIMIT, query_enum, query_parameter
from app.api.pagination import decode_cursor, encode_cursor, page_size, paginate, row_id
from app.api.pipeline import OperationBlueprint
from app.billing import reconcile_holds
from app.errors import ValidationFailed
from app.extensions import db, providers
from app.schemas.admin import (AuditEntry, AuditPage, HouseKey, HouseKeyReport, OverdueHold, OverdueHoldList,
                               ProviderKeys, ReasonRequest, ReconcileResult)
from database.vocab import ADMIN_ACTIONS

bp = OperationBlueprint("admin_ops", __name__, url_prefix="/admin")

# The most overdue holds one answer lists; more than any healthy service ever has.
MAX_OVERDUE_LISTED = 500


@bp.get("/holds/overdue")
@response(OverdueHoldList)
@other_responses(403)
@caller(ADMIN)
def overdue_holds(caller):
    """Open holds whose call's deadline has passed, oldest first (admins only)"""
    return OverdueHoldList(holds=[OverdueHold.from_row(row) for row in db.overdue_holds(MAX_OVERDUE_LISTED)])


@bp.post("/holds/reconcile")
@response(ReconcileResult)
@other_responses(403)
@caller(ADMIN)
@body(ReasonRequest)
def reconcile(caller, why):
    """Return now every hold whose call never settled, once its deadline and HOLD_GRACE_SECONDS are past
    (admins only)"""
    recorded = db.admin_record(caller.user_id, "reconcile", why.reason, {})
    if not recorded["ok"]:
        refused(recorded["reason"])
    returned = reconcile_holds(current_app.config)
    return ReconcileResult(returned=returned, audit_id=str(recorded["action_id"]))


@bp.get("/house-keys")
@response(HouseKeyReport)
@other_responses(403)
@caller(ADMIN)
def house_key_status(caller):
    """Each provider's house keys by the setting that holds them, never the value (admins only)"""
    report, failures = [], db.house_key_failures()
    for name, provider in current_app.config["PROVIDERS"].items():
        if not provider.remote:
            continue
        keys = [HouseKey(setting=setting, state=state, **_last_failure(failures.get((name, setting))))
                for setting, state in providers.house_keys[name].states()]
        keys += [HouseKey(setting=setting, state="unset") for setting in provider.unset_keys]
        report.append(ProviderKeys(provider=name, needs_key=provider.needs_key, keys=keys))
    return HouseKeyReport(providers=report)


def _last_failure(row):
    if row is None:
        return {}
    return {"last_failure_status": row["status"], "last_failed_at": row["failed_at"], "failures": row["failures"]}


def _moment(name):
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        moment = None
    if moment is None or moment.utcoffset() is None:
        raise ValidationFailed(details={name: 'must be an ISO 8601 time with a zone, such as "2030-01-31T00:00:00Z"'})
    return moment


def _user_filter(name):
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        return UUID(raw)
    except ValueError:
        raise ValidationFailed(details={name: "must be a user id"}) from None


@bp.get("/audit")
@response(AuditPage)
@other_responses(403, 414)
@query(query_parameter("user_id", {"type": "string", "format": "uuid"}, "Only actions on this user."),
       query_parameter("admin_id", {"type": "string", "format": "uuid"}, "Only actions of this admin."),
       query_enum("action", ADMIN_ACTIONS, "Only this action."),
       query_parameter("from", {"type": "string", "format": "date-time"}, "Only actions at or after this time."),
       query_parameter("to", {"type": "string", "format": "date-time"}, "Only actions before this time."),
       LIMIT, CURSOR)
@caller(ADMIN)
def audit_log(caller):
    """Every admin action, newest first, filtered by user, admin, action and time (admins only)"""
    limit = page_size()
    cursor = decode_cursor(row_id)
    rows = db.admin_audit_log(caller.user_id, limit + 1, before_id=cursor and cursor[0],
                              user_id=_user_filter("user_id"), actor_id=_user_filter("admin_id"),
                              action=query_choice("action", ADMIN_ACTIONS), since=_moment("from"), until=_moment("to"))
    page, next_cursor = paginate(rows, limit, lambda last: encode_cursor(last["id"]))
    return AuditPage(actions=[AuditEntry.from_row(row) for row in page], next_cursor=next_cursor)
