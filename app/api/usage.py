"""What the user spent, per day and model, summed from the ledger's charges."""
from flask import request
from pydantic import ValidationError

from app.api.bodies import validation_details
from app.api.contract import ACCOUNT, caller, query, response
from app.api.openapi import query_enum, query_parameter
from app.api.pipeline import OperationBlueprint
from app.errors import ValidationFailed
from app.extensions import db
from app.schemas import UsageQuery, UsageReport, UsageRow
from app.schemas.usage import DEFAULT_USAGE_DAYS, GROUPINGS, MAX_USAGE_DAYS

bp = OperationBlueprint("usage", __name__, url_prefix="/usage")


def _day_parameter(name, description):
    return query_parameter(name, {"type": "string", "format": "date"}, description)


@bp.get("")
@response(UsageReport)
@query(_day_parameter("from", f"The first UTC day counted (default: {DEFAULT_USAGE_DAYS - 1} days before `to`); "
                              f"at most {MAX_USAGE_DAYS} days are counted, both ends included."),
       _day_parameter("to", "The last UTC day counted, included (default: today)."),
       query_enum("group_by", GROUPINGS, "Rows per day, per model, or per day and model (the default)."))
@caller(ACCOUNT)
def show_usage(caller):
    """Your charges per day and model"""
    asked = request.args.to_dict()
    try:
        wanted = UsageQuery.model_validate(asked)
    except ValidationError as exc:
        raise ValidationFailed(details=validation_details(exc, asked)) from None
    rows = db.charges(caller.user_id, wanted.first_day, wanted.last_day, wanted.by_day, wanted.by_model)
    return UsageReport(usage=[UsageRow.from_row(row) for row in rows])
