"""Accounts and tokens: endpoints 1–5."""
from flask import current_app, request

from app.api.contract import ACCOUNT, body, caller, other_responses, rate_limit, response
from app.api.idempotency import serialise
from app.api.pipeline import OperationBlueprint
from app.errors import EmailTaken, InvalidToken, LoginLocked, Unauthorized, UsernameTaken
from app.extensions import db, tokens
from app.schemas import Balance, LoginRequest, Profile, RefreshRequest, RegisterRequest, TokenPair, User
from app.security import ACCESS, REFRESH, dummy_password_hash, hash_password, verify_password

bp = OperationBlueprint("auth", __name__, url_prefix="/auth")
TAKEN = {"email": EmailTaken, "username": UsernameTaken}
# The refresh token also rides in a cookie no script can read, sent only back
# to these endpoints, so a browser page need not keep it anywhere.
REFRESH_COOKIE = "qm_refresh"
REFRESH_COOKIE_PATH = "/api/v1/auth"
# Beside it, a cookie carrying no secret that a page's script may read: it says
# a session may be restored, so a signed-out page asks nothing it would be refused.
SIGNED_IN_COOKIE = "qm_signed_in"


def auth_rate_limit():
    return current_app.config["RATE_LIMIT_AUTH"]


def _token_pair(user, generation):
    access, _, _ = tokens.issue(user["id"], ACCESS, generation)
    refresh, jti, expires_at = tokens.issue(user["id"], REFRESH, generation)
    db.store_refresh_token(jti, user["id"], generation, expires_at)
    return access, refresh


def _pair_response(access, refresh, user):
    """The pair as JSON, with the refresh token in its cookie too."""
    pair = TokenPair(
        access_token=access,
        refresh_token=refresh,
        expires_in=current_app.config["ACCESS_TOKEN_TTL"],
        user=User.model_validate(user),
    )
    answer = current_app.json.response(serialise(pair))
    _set_refresh_cookie(answer, refresh, current_app.config["REFRESH_TOKEN_TTL"])
    return answer


def _set_refresh_cookie(answer, value, max_age):
    answer.set_cookie(REFRESH_COOKIE, value, max_age=max_age, path=REFRESH_COOKIE_PATH, secure=request.is_secure,
                      httponly=True, samesite="Strict")
    answer.set_cookie(SIGNED_IN_COOKIE, "1" if value else "", max_age=max_age, path="/", secure=request.is_secure,
                      samesite="Strict")


@bp.post("/register")
@rate_limit(auth_rate_limit)
@response(User, 201)
@other_responses(409)
@body(RegisterRequest)
def register(account):
    """Create an account"""
    password_hash = hash_password(account.password, current_app.config["PASSWORD_ITERATIONS"])
    taken, user = db.create_user(account.email, account.username, password_hash)
    if taken:
        raise TAKEN[taken](details={"field": taken})
    return User.model_validate(user), {"Location": "/api/v1/auth/me"}


@bp.post("/login")
@rate_limit(auth_rate_limit)
@response(TokenPair)
@other_responses(401)
@body(LoginRequest)
def login(credentials):
    """Log in: an access and a refresh token"""
    config = current_app.config
    iterations = config["PASSWORD_ITERATIONS"]
    # Counted before the password is checked: parallel guesses cannot all pass
    # a lock check that none of them has counted yet.
    attempt = db.login_attempt(credentials.email, config["LOGIN_LOCKOUT_THRESHOLD"], config["LOGIN_LOCKOUT_SECONDS"])
    if attempt["refused"]:
        raise LoginLocked(headers={"Retry-After": str(attempt["retry_after"])})
    user = attempt if attempt["id"] else None
    # An unknown email costs one full PBKDF2 too, so timing reveals nothing.
    stored = user["password_hash"] if user else dummy_password_hash(iterations)
    matches, stored_iterations = verify_password(credentials.password, stored)
    if not (user and matches):
        raise Unauthorized("Invalid email or password.")  # the attempt stays counted
    db.clear_login_failures(credentials.email)
    if stored_iterations < iterations:
        db.replace_password_hash(user["id"], stored, hash_password(credentials.password, iterations))
    access, refresh = _token_pair(user, user["token_generation"])
    return _pair_response(access, refresh, user)


@bp.post("/refresh")
@rate_limit(auth_rate_limit)
@response(TokenPair)
@other_responses(401)
@body(RefreshRequest)
def refresh(presented):
    """Trade a refresh token for a new pair (it works once): the body's, else the qm_refresh cookie's"""
    presented_token = presented.refresh_token or request.cookies.get(REFRESH_COOKIE)
    if not presented_token:
        raise Unauthorized()
    claims = tokens.decode(presented_token, REFRESH)
    user_id, generation = claims["sub"], claims["gen"]
    new_refresh, new_jti, expires_at = tokens.issue(user_id, REFRESH, generation)
    outcome = db.spend_refresh_token(claims["jti"], user_id, new_jti, generation, expires_at)
    if outcome == "reused":
        # A spent refresh token came back: it may be stolen, so end every session.
        db.revoke_tokens(user_id)
    if outcome != "ok":
        raise InvalidToken()
    access, _, _ = tokens.issue(user_id, ACCESS, generation)
    return _pair_response(access, new_refresh, db.profile(user_id))


@bp.post("/logout")
@response(None, 204)
@caller(ACCOUNT)
def logout(caller):
    """End every token issued so far, and clear the qm_refresh cookie"""
    db.revoke_tokens(caller.user_id)
    answer = current_app.response_class(status=204)
    _set_refresh_cookie(answer, "", 0)
    return answer


@bp.get("/me")
@response(Profile)
@caller(ACCOUNT)
def me(caller):
    """Your profile and balance"""
    row = db.profile(caller.user_id)
    return Profile(**User.model_validate(row).model_dump(), balance=Balance.from_row(row))
