"""Operators and alias lists: list them, add one, change its models, remove
one (admins only). A list is checked as a catalog file's is, and written by
the schema's admin_put_alias_list, which checks the admin and writes the
audit row; its models must exist and its name must be no model's, which the
schema checks at commit."""
import psycopg2

from app.api.admin_users import refused
from app.api.contract import ADMIN, body, caller, other_responses, response
from app.api.pipeline import OperationBlueprint
from app.errors import Conflict, NotFound, ValidationFailed
from app.extensions import db
from app.schemas.admin import (AliasListChangeRequest, AliasListEntry, AliasListPage, NewAliasListRequest,
                               ReasonRequest)

bp = OperationBlueprint("admin_alias_lists", __name__, url_prefix="/admin/alias-lists")


class AliasListExists(Conflict):
    code = "alias_list_exists"
    message = "An alias list already has this name; change its models instead."


@bp.get("")
@response(AliasListPage)
@other_responses(403)
@caller(ADMIN)
def list_alias_lists(caller):
    """Every alias list: a name that stands for models tried in order (admins only)"""
    return AliasListPage(alias_lists=[AliasListEntry(**row) for row in db.alias_lists()])


@bp.post("")
@response(AliasListEntry, 201)
@other_responses(403, 409)
@caller(ADMIN)
@body(NewAliasListRequest)
def add_alias_list(caller, new):
    """Add an alias list (admins only)"""
    return _put(caller, "add_alias_list", new.alias, new.models, new.reason), 201


@bp.patch("/<alias>")
@response(AliasListEntry)
@other_responses(403)
@caller(ADMIN)
@body(AliasListChangeRequest)
def change_alias_list(caller, change, alias):
    """Replace an alias list's models (admins only)"""
    return _put(caller, "change_alias_list", alias, change.models, change.reason)


@bp.delete("/<alias>")
@response(None, 204)
@other_responses(403)
@caller(ADMIN)
@body(ReasonRequest)
def drop_alias_list(caller, why, alias):
    """Remove an alias list; calls naming it then name no model (admins only)"""
    with db.transaction(acting_user_id=caller.user_id) as tx:
        _refused(db.admin_drop_alias_list(caller.user_id, alias, why.reason, tx=tx))
    return None, 204


def _put(caller, action, alias, models, reason):
    """Writes the list; the schema's check at commit refuses a model that does
    not exist (400 naming `models`) or a name a model holds (naming `alias`)."""
    try:
        with db.transaction(acting_user_id=caller.user_id) as tx:
            _refused(db.admin_put_alias_list(caller.user_id, action, alias, models, reason, tx=tx))
    except psycopg2.IntegrityError as exc:
        problem = (exc.diag.message_primary or "a name is already taken").removeprefix("catalog refused: ")
        raise ValidationFailed(details={"alias" if "is also a name of" in problem else "models": problem}) from None
    return next(AliasListEntry(**row) for row in db.alias_lists() if row["alias"] == alias)


def _refused(written):
    if written["reason"] == "no_such_alias_list":
        raise NotFound("No alias list has this name.")
    if written["reason"] == "alias_list_exists":
        raise AliasListExists()
    if not written["ok"]:
        refused(written["reason"])
