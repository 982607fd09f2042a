"""Passwords (PBKDF2-HMAC-SHA256) and tokens (JWT HS256)."""
import base64
import functools
import hashlib
import hmac
import os
import secrets
import threading
import uuid
from datetime import datetime, timedelta, timezone

import jwt
from gevent import monkey

from app.errors import InvalidToken, TokenExpired

HASH_SCHEME = "pbkdf2_sha256"
SALT_BYTES = 16
HASH_BYTES = 32
ACCESS = "access"
REFRESH = "refresh"
REQUIRED_CLAIMS = ["exp", "iat", "jti", "type", "iss", "aud", "sub", "gen"]
# How much nicer than the worker the threads that hash are (19 at most, the
# nicest): the worker's other requests come first.
HASHING_NICENESS = 10


def _b64(raw):
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text):
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _derive(password, salt, iterations):
    """PBKDF2, through which every password hash goes: never on gevent's event
    loop, where a hash (0.2 s at 600,000 iterations) would stall every request
    and stream of the worker. hashlib releases the GIL while it hashes, so a
    native thread runs it beside the loop; elsewhere (Flask's test client, the
    `flask` CLI) it runs in the caller."""
    args = ("sha256", password.encode("utf-8"), salt, iterations, HASH_BYTES)
    if not monkey.is_module_patched("threading"):
        return hashlib.pbkdf2_hmac(*args)
    return _hashing_threads(os.getpid()).apply(_pbkdf2_in_the_background, args)


def _pbkdf2_in_the_background(*args):
    """On a hashing thread, at a lower priority than the event loop's thread
    (on Linux a nice value is a thread's own): with every core hashing, the
    loop still gets a core when it has a request to answer."""
    worker = os.getpriority(os.PRIO_PROCESS, os.getpid())  # the main thread's, the loop's
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, worker + HASHING_NICENESS))
    return hashlib.pbkdf2_hmac(*args)


@functools.cache
def _hashing_threads(pid):
    """This process's native threads for hashing, made at its first hash (keyed
    by pid: a pool made before gunicorn forks is not a worker's). One thread per
    core at most: twenty logins at once are then as many busy threads as cores,
    not twenty that starve PostgreSQL, and the rest wait their turn. A pool of
    its own, so hashes never queue the hub's threadpool (DNS lookups) behind them."""
    from gevent.threadpool import ThreadPool  # the native pool; threading's, once patched, makes greenlets
    return ThreadPool(maxsize=os.cpu_count() or 1)


def hash_password(password, iterations):
    salt = secrets.token_bytes(SALT_BYTES)
    return f"{HASH_SCHEME}${iterations}${_b64(salt)}${_b64(_derive(password, salt, iterations))}"


def dummy_password_hash(iterations):
    """A well-formed hash no password matches: verifying against it costs one
    full PBKDF2, so an unknown email takes as long as a wrong password."""
    return f"{HASH_SCHEME}${iterations}${_b64(secrets.token_bytes(SALT_BYTES))}${_b64(bytes(HASH_BYTES))}"


def verify_password(password, stored):
    """(matches, iterations the stored hash was made with)."""
    try:
        scheme, iterations, salt, expected = stored.split("$")
        iterations = int(iterations)
        salt, expected = _unb64(salt), _unb64(expected)
    except ValueError:
        return False, 0
    if scheme != HASH_SCHEME:
        return False, iterations
    return hmac.compare_digest(_derive(password, salt, iterations), expected), iterations


class TokenIssuer:
    """Signs and checks the service's JWTs with settings from the app config."""

    def __init__(self, config):
        self.key = config["SECRET_KEY"]
        self.issuer = config["JWT_ISSUER"]
        self.audience = config["JWT_AUDIENCE"]
        self.ttl = {ACCESS: config["ACCESS_TOKEN_TTL"], REFRESH: config["REFRESH_TOKEN_TTL"]}

    def issue(self, user_id, token_type, generation):
        """(token, jti, expires_at)."""
        now = datetime.now(timezone.utc)
        jti = str(uuid.uuid4())
        expires_at = now + timedelta(seconds=self.ttl[token_type])
        claims = {
            "sub": str(user_id),
            "type": token_type,
            "gen": generation,
            "jti": jti,
            "iat": now,
            "exp": expires_at,
            "iss": self.issuer,
            "aud": self.audience,
        }
        return jwt.encode(claims, self.key, algorithm="HS256"), jti, expires_at

    def decode(self, token, expected_type):
        """The claims of a valid token of the expected type, else InvalidToken or
        TokenExpired. Only HS256 is accepted, whatever the header says."""
        try:
            claims = jwt.decode(
                token, self.key,
                algorithms=["HS256"],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired() from None
        except jwt.InvalidTokenError:
            raise InvalidToken() from None
        if claims["type"] != expected_type or not isinstance(claims["gen"], int):
            raise InvalidToken()
        try:
            claims["sub"] = uuid.UUID(claims["sub"])
            uuid.UUID(claims["jti"])
        except (ValueError, TypeError, AttributeError):
            raise InvalidToken() from None
        return claims
