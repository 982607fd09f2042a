"""Who is calling: the request's credential resolved into a Caller (`authenticate`),
and whose rate-limit counter the request counts against (`token_subject`,
`access_key_subject`), read from the credential without the database."""
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from uuid import UUID

from flask import request

from app.api.contract import ACCOUNT_OR_KEY, ADMIN
from app.errors import AdminRequired, APIError, InvalidAccessKey, InvalidToken, Unauthorized
from app.extensions import db, tokens
from app.security import ACCESS

ACCESS_KEY_PREFIX = "qm-"
# last_used_at is stamped at most this often by authentication (settles stamp it too).
ACCESS_KEY_TOUCH_SECONDS = 60


@dataclass(frozen=True)
class Caller:
    """Who a request is from: the user, and the access key (its row) when it
    came with one rather than the account's own token."""
    user_id: UUID
    access_key: dict | None = None

    @property
    def access_key_id(self):
        return self.access_key and self.access_key["id"]


def authenticate(callers):
    """The request's Caller, for an operation open to `callers` (ACCOUNT,
    ACCOUNT_OR_KEY or ADMIN): an access token still live (not revoked by a
    logout, its user active), or a live access key. A missing, unknown, revoked
    or expired credential is a 401; a key is never logged or echoed."""
    credential = _credential(bearer_only=callers != ACCOUNT_OR_KEY)
    if callers == ADMIN:
        return _admin(credential)
    if callers == ACCOUNT_OR_KEY and credential.startswith(ACCESS_KEY_PREFIX):
        key = db.live_access_key(access_key_hash(credential))
        if key is None:
            raise InvalidAccessKey()
        user_id = key.pop("user_id")
        _touch(key)
        return Caller(user_id, key)
    claims = tokens.decode(credential, ACCESS)
    generation = db.token_generation(claims["sub"])
    if generation is None or generation != claims["gen"]:
        raise InvalidToken()  # issued before the user's last logout, or the user is gone or deactivated
    return Caller(claims["sub"])


def _admin(credential):
    """The Caller of an admin operation: a live access token whose user is an
    admin now, read from the database at every request (a token carries no
    role, so a revoke acts on the next request). An access key never opens
    one: like the rest of the account API, it answers one with 401."""
    claims = tokens.decode(credential, ACCESS)
    standing = db.admin_standing(claims["sub"])
    if standing is None or standing["token_generation"] != claims["gen"]:
        raise InvalidToken()
    if not standing["is_admin"]:
        raise AdminRequired()
    return Caller(claims["sub"])


def _credential(bearer_only):
    """The bearer token, else (unless `bearer_only`) an `x-api-key` header, as
    Anthropic's clients send it; 401 without either."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if token:
        if scheme.lower() != "bearer":
            raise InvalidToken()
        return token.strip()
    api_key = "" if bearer_only else request.headers.get("x-api-key", "").strip()
    if not api_key:
        raise Unauthorized()
    return api_key


def access_key_hash(key):
    """What is stored of an access key: its SHA-256 (it is 32 random bytes, so
    no salt or slow hash is needed)."""
    return hashlib.sha256(key.encode()).digest()


def _touch(key):
    last_used = key["last_used_at"]
    if last_used is None or datetime.now(timezone.utc) - last_used > timedelta(seconds=ACCESS_KEY_TOUCH_SECONDS):
        db.touch_access_key(key["id"])


def token_subject():
    """The rate-limit key of a request bearing a valid token: its user, so a
    user's limit holds across addresses; else the client address."""
    try:
        return f"user:{tokens.decode(_credential(bearer_only=True), ACCESS)['sub']}"
    except APIError:  # no valid token: counted by address, and refused by authentication
        return "addr:" + (request.remote_addr or "unknown")


def access_key_subject():
    """The rate-limit key of an inference call: its access key (by hash, so the
    counter store never holds the key), else what token_subject says."""
    try:
        credential = _credential(bearer_only=False)
    except APIError:
        credential = ""
    if credential.startswith(ACCESS_KEY_PREFIX):
        return "access-key:" + access_key_hash(credential).hex()
    return token_subject()
