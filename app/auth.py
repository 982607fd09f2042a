"""Accounts and tokens: endpoints 1–5."""
import functools

from flask import Blueprint, current_app, g, request

from app.errors import APIError, Conflict, InvalidToken, Unauthorized
from app.extensions import db, limiter
from app.openapi import documented
from app.requests import json_body
from app.schemas import Balance, LoginRequest, Profile, RefreshRequest, RegisterRequest, TokenPair, User
from app.security import ACCESS, REFRESH, dummy_password_hash, hash_password, verify_password

bp = Blueprint("auth", __name__, url_prefix="/auth")


class LoginLocked(APIError):
    status = 429
    code = "rate_limited"
    message = "Too many failed logins for this email; try again later."


def tokens():
    return current_app.extensions["tokens"]


def auth_rate_limit():
    return current_app.config["RATE_LIMIT_AUTH"]


def access_claims():
    """The claims of the request's bearer access token, checked once per request."""
    if "access_claims" not in g:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if not token:
            raise Unauthorized()
        if scheme.lower() != "bearer":
            raise InvalidToken()
        g.access_claims = tokens().decode(token.strip(), ACCESS)
    return g.access_claims


def token_subject():
    """The rate-limit key of a request bearing a valid token: its user, so a
    user's limit holds across addresses; else the client address."""
    try:
        return f"user:{access_claims()['sub']}"
    except APIError:
        return "addr:" + (request.remote_addr or "unknown")


def authenticate(view):
    """Admits a request bearing a well-signed access token and sets g.user_id,
    leaving the view to confirm (`confirm_token`) in its first database round
    trip that the token was not revoked. Use require_auth unless a hot path
    reads the token generation together with what it needs anyway."""
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        claims = access_claims()
        g.user_id, g.token_generation, g.token_confirmed = claims["sub"], claims["gen"], False
        return view(*args, **kwargs)
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


def _token_pair(user, generation):
    issuer = tokens()
    access, _, _ = issuer.issue(user["id"], ACCESS, generation)
    refresh, jti, expires_at = issuer.issue(user["id"], REFRESH, generation)
    db.store_refresh_token(jti, user["id"], generation, expires_at)
    return access, refresh


def _pair_response(access, refresh, user):
    return TokenPair(
        access_token=access,
        refresh_token=refresh,
        expires_in=current_app.config["ACCESS_TOKEN_TTL"],
        user=User.model_validate(user),
    ).model_dump(mode="json")


@bp.post("/register")
@limiter.limit(auth_rate_limit)
@documented("Create an account", {201: User}, request=RegisterRequest, errors=[409], auth=False, rate_limited=True)
def register():
    body = json_body(RegisterRequest)
    password_hash = hash_password(body.password, current_app.config["PASSWORD_ITERATIONS"])
    taken, user = db.create_user(body.email, body.username, password_hash)
    if taken:
        raise Conflict(f"That {taken} is already registered.", {"field": taken}, code=f"{taken}_taken")
    return User.model_validate(user).model_dump(mode="json"), 201, {"Location": "/api/v1/auth/me"}


@bp.post("/login")
@limiter.limit(auth_rate_limit)
@documented("Log in: an access and a refresh token", {200: TokenPair}, request=LoginRequest, errors=[401],
            auth=False, rate_limited=True)
def login():
    body = json_body(LoginRequest)
    config = current_app.config
    iterations = config["PASSWORD_ITERATIONS"]
    # Counted before the password is checked: parallel guesses cannot all pass
    # a lock check that none of them has counted yet.
    attempt = db.login_attempt(body.email, config["LOGIN_LOCKOUT_THRESHOLD"], config["LOGIN_LOCKOUT_SECONDS"])
    if attempt["refused"]:
        raise LoginLocked(headers={"Retry-After": str(attempt["retry_after"])})
    user = attempt if attempt["id"] else None
    # An unknown email costs one full PBKDF2 too, so timing reveals nothing.
    stored = user["password_hash"] if user else dummy_password_hash(iterations)
    matches, stored_iterations = verify_password(body.password, stored)
    if not (user and matches):
        raise Unauthorized("Invalid email or password.")  # the attempt stays counted
    db.clear_login_failures(body.email)
    if stored_iterations < iterations:
        db.replace_password_hash(user["id"], stored, hash_password(body.password, iterations))
    access, refresh = _token_pair(user, user["token_generation"])
    return _pair_response(access, refresh, user)


@bp.post("/refresh")
@limiter.limit(auth_rate_limit)
@documented("Trade a refresh token for a new pair (it works once)", {200: TokenPair}, request=RefreshRequest,
            errors=[401], auth=False, rate_limited=True)
def refresh():
    body = json_body(RefreshRequest)
    issuer = tokens()
    claims = issuer.decode(body.refresh_token, REFRESH)
    user_id, generation = claims["sub"], claims["gen"]
    new_refresh, new_jti, expires_at = issuer.issue(user_id, REFRESH, generation)
    outcome = db.spend_refresh_token(claims["jti"], user_id, new_jti, generation, expires_at)
    if outcome == "reused":
        # A spent refresh token came back: it may be stolen, so end every session.
        db.revoke_tokens(user_id)
    if outcome != "ok":
        raise InvalidToken()
    access, _, _ = issuer.issue(user_id, ACCESS, generation)
    return _pair_response(access, new_refresh, db.profile(user_id))


@bp.post("/logout")
@documented("End every token issued so far", {204: None})
@require_auth
def logout():
    db.revoke_tokens(g.user_id)
    return "", 204


@bp.get("/me")
@documented("Your profile and balance", {200: Profile})
@require_auth
def me():
    row = db.profile(g.user_id)
    return Profile(**User.model_validate(row).model_dump(), balance=Balance.from_row(row)).model_dump(mode="json")
