"""What every request answers to besides its operation's own steps: the 429 of
the rate limit (`over_rate_limit`), ids from the path (`uuid_from_path`) and the
unknown-query guard (`refuse_unknown_query_parameters`)."""
import math
import time
import uuid

from flask import current_app, request

from app import metrics
from app.errors import NotFound, RateLimited, ValidationFailed, error_response
from app.extensions import limiter


def over_rate_limit(error):
    """The 429 of a request over a rate limit (flask-limiter's RateLimitExceeded),
    with Retry-After: the whole seconds until the breached limit's window resets.
    Only this answer carries it (flask-limiter's headers are off): a client's SDK
    waits out a Retry-After on any status, a 5xx included."""
    metrics.refused("rate_limited")
    breached = limiter.current_limit
    seconds = math.ceil(breached.reset_at - time.time()) if breached is not None else 1
    return error_response(RateLimited.code, RateLimited.message, RateLimited.status,
                          headers={"Retry-After": str(max(seconds, 1))})


# ----------------------------------------------------------------- the path

def uuid_from_path(text):
    """An id from the URL; anything that is not a UUID is simply not found."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise NotFound() from None


# ----------------------------------------------------------------- the query string

def refuse_unknown_query_parameters():
    """Before each request: a query parameter the operation does not declare is
    a 400, as an unknown body field is (a misspelt ?limt= must not pass unseen).
    No NUL byte, which no id or parameter may hold, goes further either."""
    if "\x00" in request.path:
        raise NotFound()
    if any("\x00" in value for value in request.args.values()):
        raise ValidationFailed(details={"query": "must not contain NUL characters"})
    view = current_app.view_functions.get(request.endpoint)
    declared = getattr(view, "operation", None)
    if declared is None or declared.open_query or not request.args:
        return
    unknown = sorted(set(request.args) - {parameter["name"] for parameter in declared.query})
    if unknown:
        raise ValidationFailed(details={name: "unknown query parameter" for name in unknown})
