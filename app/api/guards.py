"""What a request must pass before its view: the bearer token (`require_auth`,
`authenticate`) or an access key (`authenticate_caller`), the rate limit
(`rate_limited`) and the unknown-query guard. Idempotency-Key: idempotency.py."""
import functools
import hashlib
import math
import time
import uuid
from datetime import datetime, timedelta, timezone

from flask import current_app, g, request

from app.api.contract import operation
from app.errors import (InvalidAccessKey, InvalidToken, ModelNotAllowed, NotFound, RateLimited, Unauthorized,
                        ValidationFailed, error_response)
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


def over_rate_limit(error):
    """The 429 of a request over a rate limit (flask-limiter's RateLimitExceeded),
    with Retry-After: the whole seconds until the breached limit's window resets.
    Only this answer carries it (flask-limiter's headers are off): a client's SDK
    waits out a Retry-After on any status, a 5xx included."""
    breached = limiter.current_limit
    seconds = math.ceil(breached.reset_at - time.time()) if breached is not None else 1
    return error_response(RateLimited.code, RateLimited.message, RateLimited.status,
                          headers={"Retry-After": str(max(seconds, 1))})


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
    declared = getattr(view, "openapi", None)
    if declared is None or declared.open_query or not request.args:
        return
    unknown = sorted(set(request.args) - {parameter["name"] for parameter in declared.query})
    if unknown:
        raise ValidationFailed(details={name: "unknown query parameter" for name in unknown})
