"""Passwords (PBKDF2-HMAC-SHA256) and tokens (JWT HS256)."""
import base64
import hashlib
import hmac
import secrets
import uuid
from datetime import datetime, timedelta, timezone

import jwt

from app.errors import InvalidToken, TokenExpired

HASH_SCHEME = "pbkdf2_sha256"
SALT_BYTES = 16
HASH_BYTES = 32
ACCESS = "access"
REFRESH = "refresh"
REQUIRED_CLAIMS = ["exp", "iat", "jti", "type", "iss", "aud", "sub", "gen"]


def _b64(raw):
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text):
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _derive(password, salt, iterations):
    return hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations, HASH_BYTES)


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
