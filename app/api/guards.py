"""What a request must pass before, or around, its view: the bearer token
(`require_auth`, `authenticate`), an access key or token (`authenticate_caller`),
the rate limit (`rate_limited`), an `Idempotency-Key` (`idempotent`, `respond`)
and the unknown-query guard.

Idempotency (SPEC §5): the first request with a key claims a record (in
progress), runs, and stores its 2xx answer in the same transaction as its effect
(`respond`). A retry with the same body replays that answer; another body is
422; a duplicate that arrives while the first runs is 409. An error answer is
not kept. No lock is held while the request runs: the record itself says who is
running, and until when it may: an in-progress record is taken over by a retry
(its process died) only after the deadline of the provider call it guards plus
HOLD_GRACE_SECONDS, the time its settle may take, so a retry never runs beside
a call still under way."""
import functools
import hashlib
import json
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from flask import current_app, g, request

from app.api.contract import operation, serialise
from app.errors import (IdempotencyInProgress, IdempotencyKeyReused, InvalidAccessKey, InvalidToken,
                        ModelNotAllowed, NotFound, Unauthorized, ValidationFailed)
from app.extensions import db, limiter, tokens
from app.security import ACCESS

# ----------------------------------------------------------------- the bearer token

def access_claims():
    """The claims of the request's bearer access token, checked once per request."""
    if "access_claims" not in g:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if not token:
            raise Unauthorized()
        if scheme.lower() != "bearer":
            raise InvalidToken()
        g.access_claims = tokens.decode(token.strip(), ACCESS)
    return g.access_claims


def token_subject():
    """The rate-limit key of a request bearing a valid token: its user, so a
    user's limit holds across addresses; else the client address."""
    try:
        return f"user:{access_claims()['sub']}"
    except Unauthorized:
        return "addr:" + (request.remote_addr or "unknown")


class TokenLeftUnconfirmed(RuntimeError):
    """A view under `authenticate` answered without confirming its token."""


def authenticate(view):
    """Admits a request bearing a well-signed access token and sets g.user_id
    and g.token_generation, leaving the view to confirm (`confirm_token`), from
    its first database round trip, that the token was not revoked. A view that
    answers without confirming fails (500): there is no half-authenticated
    answer. Use require_auth unless a hot path reads the account's token
    generation together with what it needs anyway."""
    operation(view).auth = True

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        claims = access_claims()
        g.user_id, g.token_generation, g.token_confirmed = claims["sub"], claims["gen"], False
        answer = view(*args, **kwargs)
        if not g.token_confirmed:
            raise TokenLeftUnconfirmed(f"{request.endpoint} answered without confirming its token")
        return answer
    return wrapper


def confirm_token(current_generation):
    """Refuses a token issued before the user's last logout (or a deactivated user)."""
    if current_generation is None or current_generation != g.token_generation:
        raise InvalidToken()
    g.token_confirmed = True


def confirm_token_now():
    if not g.token_confirmed:
        confirm_token(db.token_generation(g.user_id))


def require_auth(view):
    """Admits a request bearing a live access token; sets g.user_id."""
    @functools.wraps(view)
    def confirmed(*args, **kwargs):
        confirm_token_now()
        return view(*args, **kwargs)
    return authenticate(confirmed)


def rate_limited(limit, key_func=None):
    """flask-limiter's limit, declared in the contract (429 with Retry-After)."""
    def decorate(view):
        operation(view).rate_limited = True
        return limiter.limit(limit, key_func=key_func)(view)
    return decorate


# ----------------------------------------------------------------- the access key

ACCESS_KEY_PREFIX = "qm-"
# last_used_at is stamped at most this often by authentication (settles stamp it too).
ACCESS_KEY_TOUCH_SECONDS = 60


def access_key_hash(key):
    """What is stored of an access key: its SHA-256 (it is 32 random bytes, so
    no salt or slow hash is needed)."""
    return hashlib.sha256(key.encode()).digest()


def caller_credential():
    """The request's credential: the bearer token, else an `x-api-key` header
    (Anthropic's clients send that); 401 without either."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if token:
        if scheme.lower() != "bearer":
            raise InvalidToken()
        return token.strip()
    api_key = request.headers.get("x-api-key", "").strip()
    if not api_key:
        raise Unauthorized()
    return api_key


def authenticate_caller(view):
    """Admits a request bearing a live access key (`qm-…`), as a bearer token
    or in `x-api-key`, and sets g.user_id and g.access_key (its row); or a live
    access token, as require_auth does, with g.access_key None. An unknown,
    revoked or expired key is a 401; the key is never logged or echoed."""
    operation(view).auth = True

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        credential = caller_credential()
        if credential.startswith(ACCESS_KEY_PREFIX):
            key = db.live_access_key(access_key_hash(credential))
            if key is None:
                raise InvalidAccessKey()
            g.user_id, g.access_key, g.token_confirmed = key.pop("user_id"), key, True
            _touch(key)
        else:
            claims = tokens.decode(credential, ACCESS)
            g.access_claims, g.access_key = claims, None
            g.user_id, g.token_generation, g.token_confirmed = claims["sub"], claims["gen"], False
            confirm_token_now()
        return view(*args, **kwargs)
    return wrapper


def _touch(key):
    last_used = key["last_used_at"]
    if last_used is None or datetime.now(timezone.utc) - last_used > timedelta(seconds=ACCESS_KEY_TOUCH_SECONDS):
        db.touch_access_key(key["id"])


def access_key_subject():
    """The rate-limit key of an inference call: its access key (by hash, so the
    counter store never holds the key), else what token_subject says."""
    try:
        credential = caller_credential()
    except Unauthorized:
        credential = ""
    if credential.startswith(ACCESS_KEY_PREFIX):
        return "access-key:" + access_key_hash(credential).hex()
    return token_subject()


def require_model_allowed(model_id):
    """403 when the request's access key may not use `model_id`."""
    key = g.get("access_key")
    if key is not None and key["allowed_models"] is not None and model_id not in key["allowed_models"]:
        raise ModelNotAllowed()


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
    declared = getattr(view, "openapi", None)
    if declared is None or declared.open_query or not request.args:
        return
    unknown = sorted(set(request.args) - {parameter["name"] for parameter in declared.query})
    if unknown:
        raise ValidationFailed(details={name: "unknown query parameter" for name in unknown})


# ----------------------------------------------------------------- Idempotency-Key

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


def idempotent(view):
    """Honours an Idempotency-Key header on a view that answers through `respond`."""
    operation(view).idempotent = True

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
            raise IdempotencyInProgress()
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


def respond(answer, status, tx, headers=None):
    """The JSON response for `answer` (a response model). Under an
    Idempotency-Key the answer is stored in `tx`, the transaction holding the
    request's effect, so both commit together."""
    text = current_app.json.dumps(serialise(answer))
    key = g.get("idempotency_key")
    if key is not None:
        db.complete_idempotency_key(g.user_id, key, status, text, tx=tx)
        g.idempotency_completed = True
    return _json_response(text, status, headers)


def _json_response(text, status, headers=None):
    return current_app.response_class(text + "\n", status=status, mimetype="application/json", headers=headers)
