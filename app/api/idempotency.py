"""`Idempotency-Key` for endpoints that move money (SPEC §5).

The first request with a key claims a record (in progress), runs, and stores its
2xx answer in the same transaction as its effect (`respond`). A retry with the
same body replays that answer; another body is 422; a duplicate that arrives
while the first runs is 409. An error answer is not kept. A record is its
caller's: the user and, on the inference API, the access key (a user's own
bearer token is a caller of its own); another caller sending the same key and
body runs afresh, through its own checks, and is never shown the first answer. No lock is held while
the request runs: the record itself says who is running, and until when it may:
an in-progress record is taken over by a retry (its process died) only after
the deadline of the provider call it guards plus HOLD_GRACE_SECONDS, the time
its settle may take, so a retry never runs beside a call still under way. A
streamed answer completes its record when the stream settles (`defer_idempotency`)."""
import functools
import hashlib
import json
import re
from dataclasses import dataclass
from decimal import Decimal

from flask import current_app, g, request

from app.api.contract import accepts_event_stream, operation, serialise
from app.api.guards import confirm_token_now
from app.errors import IdempotencyInProgress, IdempotencyKeyReused, ValidationFailed
from app.extensions import db

HEADER = "Idempotency-Key"
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")
# The guarded request's provider call starts moments after the claim (once the
# body is parsed) and ends PROVIDER_TIMEOUT after it starts; this covers the
# moments between, generously.
CALL_START_MARGIN_SECONDS = 5


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


def idempotent(view=None, *, replay=None, atomic=False):
    """Honours an Idempotency-Key header on a view that answers through
    `respond` (or, streaming, through `defer_idempotency`).
    `replay(stored_body_text)`, when given, may answer a retry in another form
    than the stored JSON (a stream asked for again); None keeps the JSON.
    `atomic`: the view makes no call to another service, so it claims the
    record itself (`claim_within`) in the transaction of its effect: one
    commit, and a duplicate waits for that commit and replays the answer."""
    if view is None:
        return lambda inner: idempotent(inner, replay=replay, atomic=atomic)
    operation(view).idempotent = True

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        if not KEY_PATTERN.match(key):
            raise ValidationFailed(details={HEADER: "must be 1 to 255 visible ASCII characters"})
        confirm_token_now()  # before the record is written
        g.idempotency_key = key = _callers_key(key)
        if atomic:
            return view(*args, **kwargs)
        replayed = _claim(key, replay)
        if replayed is not None:
            return replayed
        try:
            response = view(*args, **kwargs)
        except BaseException:
            db.release_idempotency_key(g.user_id, key)
            raise
        if not g.get("idempotency_deferred") and not g.pop("idempotency_completed", False):
            db.release_idempotency_key(g.user_id, key)
        return response
    return wrapper


def claim_within(tx):
    """For an `atomic` view: claims the request's record in `tx`, the
    transaction of its effect. The stored answer's response when the request
    was already answered; None when the view is to run (or has no key)."""
    key = g.get("idempotency_key")
    return None if key is None else _claim(key, None, tx)


def _claim(key, replay, tx=None):
    """Claims the record; the replayed answer of a request already answered, or
    None when this one is to run. 422 for another request under the key, 409
    while it runs."""
    outcome, record = db.claim_idempotency_key(g.user_id, key, request_fingerprint(),
                                               _stale_after(current_app.config), tx=tx)
    if outcome == "mismatch":
        raise IdempotencyKeyReused()
    if outcome == "in_progress":
        raise IdempotencyInProgress()
    if outcome != "done":
        return None
    replayed = replay and replay(record["response_body"])
    if replayed is not None:
        replayed.headers["Idempotent-Replayed"] = "true"
        return replayed
    return _json_response(record["response_body"], record["response_status"], {"Idempotent-Replayed": "true"})


def _callers_key(key):
    """The record's key: the client's key as it is for the user's own token, and
    prefixed by the access key's id for an access key, so that each key's records
    are its own. Records stay one per (user, key) row: a release before this one
    reads and writes the same table unchanged."""
    access_key = g.get("access_key")
    return f"{access_key['id']}/{key}" if access_key else key


@dataclass(frozen=True)
class PendingRecord:
    """The Idempotency-Key record of a streamed answer, completed with the
    stream's settle or released, after the view has returned."""
    user_id: object
    key: str

    def complete(self, answer, status, tx):
        db.complete_idempotency_key(self.user_id, self.key, status, _answer_text(answer), tx=tx)

    def release(self):
        db.release_idempotency_key(self.user_id, self.key)


def defer_idempotency():
    """The request's record (None without an Idempotency-Key), left for the
    stream to complete or release: the view returns before the answer is known."""
    key = g.get("idempotency_key")
    if key is None:
        return None
    g.idempotency_deferred = True
    return PendingRecord(g.user_id, key)


def _stale_after(config):
    """Seconds after its claim that an in-progress record may be taken over:
    the longest its call may run (a stream's STREAM_TIMEOUT when it asks for
    one), the moments before the call starts, and the settle's grace."""
    call = config["STREAM_TIMEOUT"] if _asks_for_stream() else config["PROVIDER_TIMEOUT"]
    return call + CALL_START_MARGIN_SECONDS + config["HOLD_GRACE_SECONDS"]


def _asks_for_stream():
    """Whether the request asks for a streamed answer, read before its body is validated."""
    if accepts_event_stream():
        return True
    try:
        body = json.loads(request.get_data(cache=True))
    except (ValueError, RecursionError):
        return False
    return isinstance(body, dict) and body.get("stream") is True


def respond(answer, status, tx, headers=None):
    """The JSON response for `answer` (a response model). Under an
    Idempotency-Key the answer is stored in `tx`, the transaction holding the
    request's effect, so both commit together."""
    return _json_response(record_answer(answer, status, tx), status, headers)


def record_answer(answer, status, tx):
    """`answer` as JSON text, stored in `tx` under the request's Idempotency-Key if it has one."""
    text = _answer_text(answer)
    key = g.get("idempotency_key")
    if key is not None:
        db.complete_idempotency_key(g.user_id, key, status, text, tx=tx)
        g.idempotency_completed = True
    return text


def json_answer(answer, status):
    """The JSON response for `answer` (a response model), stored elsewhere if at all."""
    return _json_response(_answer_text(answer), status)


def _answer_text(answer):
    """`answer` (a response model) as the JSON text it is answered and stored as."""
    return current_app.json.dumps(serialise(answer))


def _json_response(text, status, headers=None):
    return current_app.response_class(text + "\n", status=status, mimetype="application/json", headers=headers)
