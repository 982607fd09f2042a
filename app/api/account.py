"""The user's own settings and history: endpoints 21–23."""
from datetime import datetime

from app.api.bodies import configured_provider, query_choice
from app.api.contract import ACCOUNT, body, caller, query, response
from app.api.openapi import CURSOR, LIMIT, query_enum
from app.api.pagination import decode_cursor, encode_cursor, page_size, paginate, row_id
from app.api.pipeline import OperationBlueprint
from app.errors import ValidationFailed
from app.extensions import db
from app.schemas import ActivityItem, ActivityPage, CallActivity, Preferences, PreferencesBody

bp = OperationBlueprint("account", __name__, url_prefix="")

DEFAULT_PREFERENCES = PreferencesBody().model_dump()


@bp.get("/preferences")
@response(Preferences)
@caller(ACCOUNT)
def show_preferences(caller):
    """Your preferences"""
    row = db.preferences(caller.user_id) or {**DEFAULT_PREFERENCES, "updated_at": None}
    return Preferences.from_row(row)


@bp.put("/preferences")
@response(Preferences)
@caller(ACCOUNT)
@body(PreferencesBody)
def replace_preferences(caller, preferences):
    """Replace your preferences (keys left out take their defaults)"""
    for index, provider in enumerate(preferences.preferred_providers):
        configured_provider(f"preferred_providers.{index}", provider)
    row = db.replace_preferences(caller.user_id, preferences.model_dump())
    if row is None:
        raise ValidationFailed(details={"default_model_id": "is not a model of the catalog"})
    return Preferences.from_row(row)


def _activity_key(text):
    if text not in ("transaction", "message"):
        raise ValueError(text)
    return text


ACTIVITY_VIEWS = ("calls", "entries")


@bp.get("/activity")
@response(ActivityPage)
@query(LIMIT, CURSOR, query_enum("view", ACTIVITY_VIEWS, "calls (the default): one row per call and per deposit, "
                                 "signed; entries: every ledger entry and chat message, as recent_activity has them."))
@caller(ACCOUNT)
def activity(caller):
    """Your recent calls and deposits (or every entry), newest first"""
    limit = page_size()
    if query_choice("view", ACTIVITY_VIEWS) == "entries":
        before = decode_cursor(datetime.fromisoformat, _activity_key, row_id)
        rows = db.activity(caller.user_id, limit + 1, before)
        page, next_cursor = paginate(
            rows, limit, lambda last: encode_cursor(last["created_at"].isoformat(), last["kind"], last["item_id"]))
        return ActivityPage(activity=[ActivityItem.from_row(row) for row in page], next_cursor=next_cursor)
    before = decode_cursor(_calls_view, row_id)
    rows = db.call_activity(caller.user_id, limit + 1, before and before[1])
    page, next_cursor = paginate(rows, limit, lambda last: encode_cursor("calls", last["id"]))
    return ActivityPage(activity=[CallActivity.from_row(row) for row in page], next_cursor=next_cursor)


def _calls_view(text):
    """The first part of a calls-view cursor, so that an entries cursor is refused there."""
    if text != "calls":
        raise ValueError(text)
    return text
