"""`Idempotency-Key` for endpoints that move money (SPEC §5).

The first request with a key claims a record (in progress), runs, and stores its
2xx answer in the same transaction as its effect (`respond`). A retry with the
same body replays that answer; another body is 422; a duplicate that arrives
while the first runs is 409. An error answer is not kept. No lock is held while
the request runs: the record itself says who is running, and until when it may:
an in-progress record is taken over by a retry (its process died) only after
the deadline of the provider call it guards plus HOLD_GRACE_SECONDS, the time
its settle may take, so a retry never runs beside a call still under way."""
import functools
import hashlib
import json
import re
from decimal import Decimal

from flask import current_app, g, request

from app.auth import confirm_token_now
from app.errors import APIError, Conflict, ValidationFailed
from app.extensions import db

HEADER = "Idempotency-Key"
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")
# The guarded request's provider call starts moments after the claim (once the
# body is parsed) and ends PROVIDER_TIMEOUT after it starts; this covers the
# moments between, generously.
CALL_START_MARGIN_SECONDS = 5


class IdempotencyKeyReused(APIError):
    status = 422
    code = "idempotency_key_reused"
    message = "This Idempotency-Key was used with a different request."


def _canonical_number(value):
    """One spelling per number (12.5, 12.50 and 1.25e1 alike), kept apart from
    the string "12.5" by a prefix no valid body can hold."""
    return "\x00number:" + format(value.normalize(), "f")


def request_fingerprint():
    """Method, path and the body as canonical JSON: keys sorted, no spaces, each
    number in one spelling (raw bytes when the body does not parse)."""
    raw = request.get_data(cache=True)
    try:
        parsed = json.loads(raw, parse_float=Decimal, parse_int=Decimal)
        body = json.dumps(parsed, sort_keys=True, separators=(",", ":"), default=_canonical_number)
    except (ValueError, RecursionError):
        body = raw.hex()
    return hashlib.sha256(f"{request.method}\n{request.path}\n{body}".encode()).hexdigest()


def idempotent(view):
    """Honours an Idempotency-Key header on a view that answers through `respond`."""
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        if not KEY_PATTERN.match(key):
            raise ValidationFailed(details={HEADER: "must be 1 to 255 visible ASCII characters"})
        confirm_token_now()  # before the record is written
        stale_after = _stale_after(current_app.config)
        outcome, record = db.claim_idempotency_key(g.user_id, key, request_fingerprint(), stale_after)
        if outcome == "mismatch":
            raise IdempotencyKeyReused()
        if outcome == "in_progress":
            raise Conflict("A request with this Idempotency-Key is still running.", code="idempotency_in_progress")
        if outcome == "done":
            return _json_response(record["response_body"], record["response_status"], {"Idempotent-Replayed": "true"})
        g.idempotency_key = key
        try:
            response = view(*args, **kwargs)
        except BaseException:
            db.release_idempotency_key(g.user_id, key)
            raise
        if not g.pop("idempotency_completed", False):
            db.release_idempotency_key(g.user_id, key)
        return response
    return wrapper


def _stale_after(config):
    """Seconds after its claim that an in-progress record may be taken over."""
    return config["PROVIDER_TIMEOUT"] + CALL_START_MARGIN_SECONDS + config["HOLD_GRACE_SECONDS"]


def respond(body, status, tx, headers=None):
    """The JSON response for `body`. Under an Idempotency-Key the answer is stored
    in `tx`, the transaction holding the request's effect, so both commit together."""
    text = current_app.json.dumps(body)
    key = g.get("idempotency_key")
    if key is not None:
        db.complete_idempotency_key(g.user_id, key, status, text, tx=tx)
        g.idempotency_completed = True
    return _json_response(text, status, headers)


def _json_response(text, status, headers=None):
    return current_app.response_class(text + "\n", status=status, mimetype="application/json", headers=headers)
