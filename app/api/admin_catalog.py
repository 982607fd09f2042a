"""Operators and the catalog: add a model, change one, disable and enable it
(admins only). An entry is checked as `flask catalog load` checks a file's,
and written by the schema's admin_put_model, which checks the admin and
writes the audit row. A disabled model leaves /v1/models and the public
catalog at once; its history stays."""
import psycopg2
from pydantic import ValidationError

from app.api.admin_users import refused
from app.api.bodies import configured_provider, validation_details
from app.api.contract import ADMIN, body, caller, other_responses, response
from app.api.pipeline import OperationBlueprint
from app.errors import Conflict, NotFound, ValidationFailed
from app.extensions import db
from app.schemas.admin import (AdminModel, AdminModelList, AdminModelSummary, ModelChangeRequest, NewModelRequest,
                               PriceScheduleRequest, ReasonRequest, ScheduledPrice)
from database.catalog_file import CatalogModel

bp = OperationBlueprint("admin_catalog", __name__, url_prefix="/admin/models")


class ModelExists(Conflict):
    code = "model_exists"
    message = "The catalog already has a model with this id; change it instead."


class PriceVersionExists(Conflict):
    code = "price_version_exists"
    message = "Another version of this model's prices starts at that time; a version is never changed."


@bp.get("")
@response(AdminModelList)
@other_responses(403)
@caller(ADMIN)
def list_models(caller):
    """Every catalog model, disabled ones too (admins only)"""
    return AdminModelList(models=[AdminModelSummary.from_row(row) for row in db.admin_models()])


@bp.get("/<provider>/<name>")
@response(AdminModel)
@other_responses(403)
@caller(ADMIN)
def show_model(caller, provider, name):
    """One catalog model's whole entry, as catalog.json writes it (admins only)"""
    return AdminModel(model=_current(provider, name))


@bp.post("")
@response(AdminModel, 201)
@other_responses(403, 409)
@caller(ADMIN)
@body(NewModelRequest)
def add_model(caller, new):
    """Add a model to the catalog (admins only)"""
    entry = _configured(new.model, "model")
    return _put(caller, "add_model", entry, new.reason, "model"), 201


@bp.patch("/<provider>/<name>")
@response(AdminModel)
@other_responses(403)
@caller(ADMIN)
@body(ModelChangeRequest)
def change_model(caller, change, provider, name):
    """Change a model's fields; the whole entry is checked again (admins only)"""
    current = _current(provider, name)
    if "id" in change.changes and change.changes["id"] != current["id"]:
        raise ValidationFailed(details={"changes.id": "a model's id cannot change; add a new model instead"})
    try:
        entry = CatalogModel.model_validate({**current, **change.changes})
    except ValidationError as exc:
        raise ValidationFailed(details={f"changes.{field}": problem for field, problem
                                        in validation_details(exc, {**current, **change.changes}).items()}) from None
    return _put(caller, "change_model", _configured(entry, "changes"), change.reason, "changes")


@bp.post("/<provider>/<name>/disable")
@response(AdminModel)
@other_responses(403)
@caller(ADMIN)
@body(ReasonRequest)
def disable_model(caller, why, provider, name):
    """Disable a model: it leaves the catalog and new calls; its history stays (admins only)"""
    return _set_active(caller, why, provider, name, False)


@bp.post("/<provider>/<name>/enable")
@response(AdminModel)
@other_responses(403)
@caller(ADMIN)
@body(ReasonRequest)
def enable_model(caller, why, provider, name):
    """Offer a disabled model again (admins only)"""
    return _set_active(caller, why, provider, name, True)


@bp.post("/<provider>/<name>/prices")
@response(ScheduledPrice, 201)
@other_responses(403, 409)
@caller(ADMIN)
@body(PriceScheduleRequest)
def schedule_price(caller, change, provider, name):
    """Schedule a new version of a model's prices, in force from a time still to come (admins only)"""
    model_id = f"{provider}/{name}"
    entry = {**_current(provider, name), **change.model_dump(exclude={"effective_from", "reason"})}
    try:
        CatalogModel.model_validate(entry)  # the cache prices as the model's features want them
    except ValidationError as exc:
        raise ValidationFailed(details=validation_details(exc, entry)) from None
    prices = change.model_dump(exclude={"effective_from", "reason"})
    with db.transaction(acting_user_id=caller.user_id) as tx:
        scheduled = db.admin_schedule_price(caller.user_id, model_id, change.effective_from, prices, change.reason,
                                            tx=tx)
        if scheduled["reason"] == "not_future":
            raise ValidationFailed(details={"effective_from": "must be in the future"})
        if scheduled["reason"] == "version_exists":
            raise PriceVersionExists(details={"effective_from": change.effective_from.isoformat()})
        if not scheduled["ok"]:
            refused(scheduled["reason"])
    return ScheduledPrice(version_id=str(scheduled["version_id"]), effective_from=change.effective_from), 201


def _set_active(caller, why, provider, name, active):
    entry = CatalogModel.model_validate({**_current(provider, name), "active": active})
    return _put(caller, "enable_model" if active else "disable_model", entry, why.reason, "model")


def _current(provider, name):
    current = db.admin_model_row(f"{provider}/{name}")
    if current is None:
        raise NotFound("No model of the catalog has this id.")
    return current


def _configured(entry, field):
    """The entry, once its provider and deployments' are configured ones (400 naming the field otherwise)."""
    configured_provider(f"{field}.provider", entry.provider)
    for place, deployment in enumerate(entry.deployments):
        configured_provider(f"{field}.deployments.{place}.provider", deployment.provider)
    return entry


def _put(caller, action, entry, reason, field):
    """Writes the entry through admin_put_model; a name another model or alias
    list holds (the schema's checks at commit) is a 400 naming the aliases."""
    written = entry.model_dump()  # Decimals and dates, which the function receives as text
    try:
        with db.transaction(acting_user_id=caller.user_id) as tx:
            put = db.admin_put_model(caller.user_id, action, written, reason, tx=tx)
            if put["reason"] == "model_exists":
                raise ModelExists()
            if not put["ok"]:
                refused(put["reason"])
    except psycopg2.IntegrityError as exc:
        problem = (exc.diag.message_primary or "a name is already taken").removeprefix("catalog refused: ")
        raise ValidationFailed(details={f"{field}.aliases": problem}) from None
    return AdminModel(model=db.admin_model_row(entry.id))
