"""The user's own settings and history: endpoints 21–23."""
from datetime import datetime

from flask import Blueprint, g

from app.auth import require_auth
from app.errors import ValidationFailed
from app.extensions import db
from app.openapi import CURSOR, LIMIT, documented
from app.pagination import decode_cursor, encode_cursor, page_size, paginate, row_id
from app.requests import json_body
from app.schemas import ActivityItem, ActivityPage, Preferences, PreferencesBody

bp = Blueprint("account", __name__, url_prefix="")

DEFAULT_PREFERENCES = PreferencesBody().model_dump()


@bp.get("/preferences")
@documented("Your preferences", {200: Preferences})
@require_auth
def show_preferences():
    row = db.preferences(g.user_id) or {**DEFAULT_PREFERENCES, "updated_at": None}
    return Preferences.from_row(row).model_dump(mode="json")


@bp.put("/preferences")
@documented("Replace your preferences (keys left out take their defaults)", {200: Preferences},
            request=PreferencesBody)
@require_auth
def replace_preferences():
    body = json_body(PreferencesBody)
    row = db.replace_preferences(g.user_id, body.model_dump())
    if row is None:
        raise ValidationFailed(details={"default_model_id": "is not a model of the catalog"})
    return Preferences.from_row(row).model_dump(mode="json")


def _activity_key(text):
    if text not in ("transaction", "message"):
        raise ValueError(text)
    return text


@bp.get("/activity")
@documented("Your recent transactions and messages, newest first", {200: ActivityPage}, query=[LIMIT, CURSOR])
@require_auth
def activity():
    limit = page_size()
    before = decode_cursor(datetime.fromisoformat, _activity_key, row_id)
    rows = db.activity(g.user_id, limit + 1, before)
    page, next_cursor = paginate(
        rows, limit, lambda last: encode_cursor(last["created_at"].isoformat(), last["kind"], last["item_id"]))
    return ActivityPage(activity=[ActivityItem.from_row(row) for row in page], next_cursor=next_cursor
                        ).model_dump(mode="json")
