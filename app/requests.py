"""Reading request bodies: JSON only, parsed strictly, validated by a pydantic model."""
import json
from decimal import Decimal

from flask import request
from pydantic import ValidationError

from app.errors import InvalidJSON, UnsupportedMediaType, ValidationFailed


def _refuse_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _field_errors(error):
    """pydantic's errors as {"field.path": "message"}."""
    fields = {}
    for item in error.errors(include_url=False, include_input=False):
        path = ".".join(str(part) for part in item["loc"]) or "body"
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "value_error":
            message = str(item["ctx"]["error"])
        else:
            message = item["msg"]
        fields.setdefault(path, message)
    return fields


def query_choice(name, allowed):
    """`?name=` when it is one of `allowed` (None when absent), else a 400."""
    value = request.args.get(name)
    if value is not None and value not in allowed:
        raise ValidationFailed(details={name: f"must be one of {', '.join(allowed)}"})
    return value


def json_body(model):
    """The request body validated against `model`, or a 4xx APIError.

    Bodies must be JSON objects sent as application/json; numbers with a fraction
    parse as Decimal (never float) and NaN/Infinity are refused as invalid JSON."""
    data = request.get_data(cache=True)
    if not request.is_json:
        if data:
            raise UnsupportedMediaType()
        raise ValidationFailed("A JSON object body is required.", {"body": "required"})
    if not data.strip():
        raise ValidationFailed("A JSON object body is required.", {"body": "required"})
    try:
        payload = json.loads(data, parse_float=Decimal, parse_constant=_refuse_constant)
        # "\ud800" parses, but is no text: nothing downstream could encode it.
        json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8")
    except (ValueError, RecursionError):
        raise InvalidJSON() from None
    if not isinstance(payload, dict):
        raise ValidationFailed("The request body must be a JSON object.", {"body": "must be a JSON object"})
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise ValidationFailed(details=_field_errors(exc)) from None
