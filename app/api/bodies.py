"""Request bodies and query values as the views receive them: a JSON object
body parsed strictly and validated by the operation's pydantic model (`json_body`),
a query parameter from a fixed set (`query_choice`), and each validation error
told in the service's own words (`validation_details`)."""
import json
import re
from decimal import Decimal

from flask import current_app, request
from pydantic import ValidationError

from app.errors import InvalidJSON, UnsupportedMediaType, ValidationFailed
from app.schemas import PATTERN_MESSAGES


# pydantic's error types whose message needs nothing from the error's context.
PLAIN_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "is not a field of this request",
    "string_type": "must be a string",
    "string_unicode": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "decimal_type": "must be a decimal number",
    "decimal_parsing": "must be a decimal number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "uuid_type": "must be a UUID",
    "uuid_parsing": "must be a UUID",
}
BOUND_MESSAGES = {
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
}


def _number(value):
    """2.0 reads as 2."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _count(number, noun):
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _length_message(item):
    ctx = item["ctx"]
    noun = "character" if isinstance(item.get("input"), str) else "item"
    if "min_length" in ctx:
        if ctx["min_length"] == 1:
            return "must not be empty"
        return f"must be at least {_count(ctx['min_length'], noun)}"
    return f"must be at most {_count(ctx['max_length'], noun)}"


def _message(item):
    """One pydantic error in the service's own words: what the value must be."""
    kind, ctx = item["type"], item.get("ctx", {})
    if kind in PLAIN_MESSAGES:
        return PLAIN_MESSAGES[kind]
    if kind in ("string_too_short", "string_too_long", "too_short", "too_long"):
        return _length_message(item)
    if kind in ("value_error", "assertion_error"):
        return str(ctx["error"])
    if kind in ("literal_error", "enum"):
        choices = re.findall(r"'([^']*)'", ctx["expected"]) or [ctx["expected"]]
        return "must be one of " + ", ".join(choices)
    if kind == "string_pattern_mismatch":
        return PATTERN_MESSAGES.get(ctx["pattern"], "is not in the expected form")
    if kind in BOUND_MESSAGES:
        return BOUND_MESSAGES[kind].format(**{name: _number(value) for name, value in ctx.items()})
    return "is not valid"


def validation_details(error, data):
    """A pydantic ValidationError of `data` as {"field.path": "message"}, the
    first message of each field. A path names only the fields and indexes of
    `data`: pydantic also puts in it, for a value that no member of a union
    took, the member each error came from (its type as text, internal names
    and memory addresses included), which never reaches a client. Of those
    errors, the members that do not take the value's type are left out when
    another one does (a string with a NUL: "must not contain NUL characters");
    when none does, they are named together ("must be a string or a list")."""
    located = [_located(item, data) for item in error.errors(include_url=False)]
    taken = {union for _, union, mismatch, _ in located if union is not None and not mismatch}
    fields, mismatches = {}, set()
    for path, union, mismatch, message in located:
        if mismatch and union in taken:
            continue
        if path not in fields:
            fields[path] = message
            if mismatch:
                mismatches.add(path)
        elif mismatch and path in mismatches:
            fields[path] = _either(fields[path], message)
    return fields


def _located(item, data):
    """(path, union, mismatch, message) of one pydantic error in `data`: the
    error's location without the union members pydantic adds (parts that are
    no field or index of `data`; a required field that is missing is the one
    part found nowhere that stays), the path of the innermost union it came
    through (None: none), and whether it says that the value is not of that
    union member's type."""
    loc, parts, value, union = item["loc"], [], data, None
    for index, part in enumerate(loc):
        if isinstance(value, dict) and isinstance(part, str) and part in value and not _is_tag(loc, index, value):
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            value = value[part]
        elif not (item["type"] == "missing" and index == len(loc) - 1):
            union = tuple(parts)
            continue
        parts.append(part)
    mismatch = union == tuple(parts) and item["type"].endswith("_type")
    return ".".join(str(part) for part in parts) or "body", union, mismatch, _message(item)


def _is_tag(loc, index, value):
    """Whether loc[index], a key of the object `value`, is rather the tag of a
    discriminated union that pydantic put there (a block {"type": "text",
    "text": …} is tagged "text"): a scalar has no fields, so when the next part
    is a key of `value` itself, the error is about `value`'s field."""
    following = loc[index + 1] if index + 1 < len(loc) else None
    return (following is not None and not isinstance(value[loc[index]], (dict, list))
            and isinstance(following, str) and following in value)


def _either(first, second):
    """"must be a string" and "must be a list" as "must be a string or a list"."""
    prefix = "must be "
    if first.startswith(prefix) and second.startswith(prefix) and second[len(prefix):] not in first:
        return f"{first} or {second[len(prefix):]}"
    return first


def _refuse_constant(name):
    raise ValueError(f"{name} is not valid JSON")


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
        raise ValidationFailed("A JSON object body is required.", {"body": "is required"})
    if not data.strip():
        raise ValidationFailed("A JSON object body is required.", {"body": "is required"})
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
        raise ValidationFailed(details=validation_details(exc, payload)) from None


def configured_provider(field, name, takes_keys=False):
    """`name` when it is a configured provider (one that takes a user's key,
    with `takes_keys`); else the 400 naming `field` that lists them."""
    names = [provider.name for provider in current_app.config["PROVIDERS"].values()
             if provider.remote or not takes_keys]
    if name not in names:
        raise ValidationFailed(details={field: f"must be one of {', '.join(names)}"})
    return name
