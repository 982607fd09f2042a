"""Accounts and tokens (SPEC §6 endpoints 1–5, §7 errors, §10 security)."""
import base64
import hashlib
import json
import re
import threading
import time
import types
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor

import httpx
import jwt
import pytest

from app import close_app, create_app
from app import security as security_module
from app.api.contract import ACCOUNT, caller
from app.api.pipeline import serve
from app.config import SETTINGS, load_config
from app.extensions import db
from tests.support import PASSWORD, TEST_ITERATIONS, assert_error, bearer, login, register

API = "/api/v1/auth"
ISSUER = "q-marketplace"
AUDIENCE = "q-marketplace-api"
OTHER_KEY = "another-signing-key-that-is-not-the-service-key"
HASH_FORM = re.compile(r"^pbkdf2_sha256\$(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$")


# ----------------------------------------------------------------- helpers

def post(client, endpoint, body=None, **kwargs):
    if body is not None:
        kwargs["json"] = body
    return client.post(f"{API}/{endpoint}", **kwargs)


def me(client, token):
    return client.get(f"{API}/me", headers=bearer(token))


def refresh(client, token):
    return post(client, "refresh", {"refresh_token": token})


def stored_user(database, email="ada@example.com"):
    rows = database.query(
        "SELECT id, email, username, password_hash, token_generation FROM users WHERE email = %s", (email,))
    assert len(rows) == 1
    return rows[0]


def stored_hash(database, email="ada@example.com"):
    return stored_user(database, email)[3]


def account_state(database):
    """Everything an auth request may change, for before/after comparisons."""
    return (database.query("SELECT id, email, username, password_hash, token_generation FROM users ORDER BY id"),
            database.query("SELECT jti, used_at, replaced_by FROM refresh_tokens ORDER BY jti"))


def user_count(database):
    return database.query("SELECT count(*) FROM users")[0][0]


def unb64(text):
    return base64.b64decode(text + "=" * (-len(text) % 4))


def claims_of(token):
    return jwt.decode(token, options={"verify_signature": False})


def sign(claims, key, algorithm="HS256"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        return jwt.encode(claims, key, algorithm=algorithm)


@pytest.fixture
def ada(client):
    """A registered, logged-in user: the login response plus the register one."""
    user = register(client)
    return {**login(client), "registered": user}


@pytest.fixture
def stronger_app(settings):
    """A second app on the same database whose PASSWORD_ITERATIONS has grown."""
    app2 = create_app({**settings, "PASSWORD_ITERATIONS": 2 * TEST_ITERATIONS})
    yield app2
    with app2.app_context():
        db.close()


@pytest.fixture
def pbkdf2_calls(monkeypatch):
    """The iteration counts of every PBKDF2 app.security runs."""
    calls = []

    def counting(name, password, salt, iterations, *args, **kwargs):
        calls.append(iterations)
        return hashlib.pbkdf2_hmac(name, password, salt, iterations, *args, **kwargs)

    monkeypatch.setattr(security_module, "hashlib", types.SimpleNamespace(pbkdf2_hmac=counting))
    return calls


# ---------------------------------------------------------------- register

def test_register_returns_the_user_without_any_password(client, database):
    response = post(client, "register", {"email": "ada@example.com", "username": "ada", "password": PASSWORD})
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"id", "email", "username", "created_at"}
    assert (body["email"], body["username"]) == ("ada@example.com", "ada")
    uuid.UUID(body["id"])
    text = response.get_data(as_text=True)
    assert "password" not in text and PASSWORD not in text and stored_hash(database) not in text


def test_register_stores_the_email_lowercased(client, database):
    body = register(client, email="Ada.Lovelace@Example.COM")
    assert body["email"] == "ada.lovelace@example.com"
    assert stored_user(database, "ada.lovelace@example.com")[1] == "ada.lovelace@example.com"


@pytest.mark.parametrize("email, username, code", [
    ("ADA@Example.com", "grace", "email_taken"),
    ("grace@example.com", "ADA", "username_taken"),
])
def test_register_refuses_a_taken_email_or_username_in_any_case(client, database, email, username, code):
    register(client, email="ada@example.com", username="ada")
    before = account_state(database)
    response = post(client, "register", {"email": email, "username": username, "password": PASSWORD})
    assert_error(response, 409, code)
    assert account_state(database) == before


def test_register_stores_a_pbkdf2_hash_with_the_configured_iterations(client, database):
    register(client)
    match = HASH_FORM.match(stored_hash(database))
    assert match, stored_hash(database)
    iterations, salt, digest = int(match[1]), unb64(match[2]), unb64(match[3])
    assert iterations == TEST_ITERATIONS
    assert len(salt) == 16
    assert digest == hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), salt, iterations, 32)


def test_each_registration_gets_its_own_salt(client, database):
    register(client, email="ada@example.com", username="ada")
    register(client, email="grace@example.com", username="grace")
    salts = {HASH_FORM.match(row[0])[2] for row in database.query("SELECT password_hash FROM users")}
    assert len(salts) == 2


# -------------------------------------------------------------- bad inputs

LIVE_REFRESH_TOKEN = "<ada's live refresh token>"
# Valid bodies: each would succeed if the request were let through, so a
# validation failure is the only thing keeping the database unchanged.
VALID = {
    "register": {"email": "grace@example.com", "username": "grace", "password": PASSWORD},
    "login": {"email": "ada@example.com", "password": PASSWORD},
    "refresh": {"refresh_token": LIVE_REFRESH_TOKEN},
}
WRONG_TYPES = {"number": 42, "null": None, "list": ["x"], "bool": True, "object": {"x": "y"}}
EXTRA_FIELDS = {"balance": "1000000.00", "role": "admin", "is_admin": True}
INVALID_EMAILS = ["", "plainaddress", "@example.com", "ada@", "ada@example", "ada lovelace@example.com",
                  "ada@@example.com", "ada@exa mple.com"]
INVALID_USERNAMES = ["", "ab", "ada lovelace", "x" * 33, "ada!", "ada\x00x"]


def _field_cases():
    for endpoint, valid in VALID.items():
        for field, value in valid.items():
            if endpoint != "refresh":  # without its token, refresh uses the cookie's (test_refresh_cookie.py)
                yield pytest.param(endpoint, {k: v for k, v in valid.items() if k != field}, field,
                                   id=f"{endpoint}-{field}-missing")
            for kind, wrong in WRONG_TYPES.items():
                yield pytest.param(endpoint, {**valid, field: wrong}, field, id=f"{endpoint}-{field}-{kind}")
            yield pytest.param(endpoint, {**valid, field: value[:3] + "\x00" + value[3:]}, field,
                               id=f"{endpoint}-{field}-nul")
            yield pytest.param(endpoint, {**valid, field: "x" * 10_000}, field, id=f"{endpoint}-{field}-huge")
        for extra, value in EXTRA_FIELDS.items():
            yield pytest.param(endpoint, {**valid, extra: value}, extra, id=f"{endpoint}-extra-{extra}")
    yield pytest.param("register", {**VALID["register"], "password": "x" * 7}, "password", id="register-password-7")
    for endpoint in ("register", "login"):
        yield pytest.param(endpoint, {**VALID[endpoint], "password": "x" * 257}, "password",
                           id=f"{endpoint}-password-257")
        for email in INVALID_EMAILS:
            yield pytest.param(endpoint, {**VALID[endpoint], "email": email}, "email",
                               id=f"{endpoint}-email-{email!r}")
    for username in INVALID_USERNAMES:
        yield pytest.param("register", {**VALID["register"], "username": username}, "username",
                           id=f"register-username-{username!r}")
    for endpoint in VALID:
        for kind, body in {"array": [VALID[endpoint]], "string": "ada", "number": 7, "null": None,
                           "true": True}.items():
            yield pytest.param(endpoint, body, "body", id=f"{endpoint}-body-{kind}")


def _with_live_token(body, token):
    if not isinstance(body, dict):
        return body
    return {key: token if value == LIVE_REFRESH_TOKEN else value for key, value in body.items()}


@pytest.mark.parametrize("endpoint, body, field", list(_field_cases()))
def test_invalid_fields_are_refused_and_change_nothing(client, database, ada, endpoint, body, field):
    before = account_state(database)
    response = post(client, endpoint, data=json.dumps(_with_live_token(body, ada["refresh_token"])),
                    content_type="application/json")
    error = assert_error(response, 400, "validation_error")
    assert isinstance(error["details"], dict) and field in error["details"], error
    assert account_state(database) == before


def test_a_valid_body_sent_the_same_way_succeeds(client, database, ada):
    """The control for the cases above: their valid bodies really are accepted."""
    for endpoint, status in (("register", 201), ("login", 200), ("refresh", 200)):
        body = _with_live_token(VALID[endpoint], ada["refresh_token"])
        response = post(client, endpoint, data=json.dumps(body), content_type="application/json")
        assert response.status_code == status, (endpoint, response.get_json())


@pytest.mark.parametrize("endpoint", VALID)
@pytest.mark.parametrize("raw", ['{"email":', "NaN", '{"a": NaN}', '{"a": Infinity}', "-Infinity",
                                 "{'email': 'a'}", '{"email": "a",}', "[1, 2"])
def test_malformed_json_is_invalid_json(client, database, ada, endpoint, raw):
    before = account_state(database)
    assert_error(post(client, endpoint, data=raw, content_type="application/json"), 400, "invalid_json")
    assert account_state(database) == before


@pytest.mark.parametrize("endpoint", VALID)
@pytest.mark.parametrize("kind", ["text/plain", "form"])
def test_non_json_content_type_is_unsupported_media_type(client, database, ada, endpoint, kind):
    body = _with_live_token(VALID[endpoint], ada["refresh_token"])
    before = account_state(database)
    if kind == "form":
        response = post(client, endpoint, data=body)
    else:
        response = post(client, endpoint, data=json.dumps(body), content_type="text/plain")
    assert_error(response, 415, "unsupported_media_type")
    assert account_state(database) == before


@pytest.mark.parametrize("endpoint", VALID)
def test_empty_json_body_is_a_validation_error(client, database, ada, endpoint):
    before = account_state(database)
    error = assert_error(post(client, endpoint, data=b"", content_type="application/json"), 400,
                         "validation_error")
    assert "body" in error["details"]
    assert account_state(database) == before


# ------------------------------------------------------------------- login

def test_login_returns_a_token_pair_and_the_user(client, settings):
    user = register(client)
    response = post(client, "login", {"email": "ada@example.com", "password": PASSWORD})
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in", "user"}
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 900)
    assert body["user"] == user
    assert "password" not in response.get_data(as_text=True)
    for token, kind in ((body["access_token"], "access"), (body["refresh_token"], "refresh")):
        claims = jwt.decode(token, settings["SECRET_KEY"], algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER)
        assert (claims["type"], claims["sub"]) == (kind, user["id"])


def test_login_email_is_case_insensitive(client):
    register(client, email="ada@example.com")
    assert login(client, email="  ADA@Example.Com ")["user"]["email"] == "ada@example.com"


def test_wrong_password_and_unknown_email_look_identical(client, database):
    register(client)
    before = account_state(database)
    wrong_password = post(client, "login", {"email": "ada@example.com", "password": "not the password"})
    unknown_email = post(client, "login", {"email": "nobody@example.com", "password": "not the password"})
    assert_error(wrong_password, 401, "unauthorized")
    assert (unknown_email.status_code, unknown_email.get_json()) == (401, wrong_password.get_json())
    assert account_state(database) == before


@pytest.mark.parametrize("email, password", [
    ("nobody@example.com", PASSWORD),
    ("ada@example.com", "not the password"),
])
def test_a_failed_login_runs_exactly_one_full_pbkdf2(client, pbkdf2_calls, email, password):
    register(client)
    pbkdf2_calls.clear()
    assert_error(post(client, "login", {"email": email, "password": password}), 401, "unauthorized")
    assert pbkdf2_calls == [TEST_ITERATIONS]


def test_a_successful_login_at_current_iterations_runs_one_pbkdf2(client, pbkdf2_calls):
    register(client)
    assert pbkdf2_calls == [TEST_ITERATIONS]
    pbkdf2_calls.clear()
    login(client)
    assert pbkdf2_calls == [TEST_ITERATIONS]


# ------------------------------------------------------------------ rehash

def test_login_rehashes_when_iterations_have_grown(client, database, stronger_app):
    register(client)
    old_hash = stored_hash(database)
    login(stronger_app.test_client())
    new_hash = stored_hash(database)
    assert HASH_FORM.match(new_hash)[1] == str(2 * TEST_ITERATIONS)
    assert HASH_FORM.match(new_hash)[2] != HASH_FORM.match(old_hash)[2]
    login(stronger_app.test_client())
    login(client)
    assert stored_hash(database) == new_hash  # never downgraded by the weaker app


def test_a_failed_login_does_not_rehash(client, database, stronger_app):
    register(client)
    old_hash = stored_hash(database)
    response = post(stronger_app.test_client(), "login", {"email": "ada@example.com", "password": "wrong password"})
    assert_error(response, 401, "unauthorized")
    assert stored_hash(database) == old_hash


def test_default_password_iterations_is_600000(settings, monkeypatch):
    monkeypatch.delenv("PASSWORD_ITERATIONS", raising=False)
    assert SETTINGS["PASSWORD_ITERATIONS"][0] == "600000"
    overrides = {key: value for key, value in settings.items() if key != "PASSWORD_ITERATIONS"}
    assert load_config(overrides)["PASSWORD_ITERATIONS"] == 600000


# ---------------------------------------------------------- token tampering

def _b64url_json(part):
    return base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")


def _by_hand_none(claims, key):
    return f"{_b64url_json({'alg': 'none', 'typ': 'JWT'})}.{_b64url_json(claims)}."


def _payload_swapped(claims, key):
    """The service's own signature over other claims (another user's id)."""
    header, _, signature = sign(claims, key).split(".")
    forged = sign({**claims, "sub": str(uuid.uuid4())}, OTHER_KEY).split(".")[1]
    return f"{header}.{forged}.{signature}"


TAMPERINGS = {
    "alg-none": lambda c, key: jwt.encode(c, None, algorithm="none"),
    "alg-none-by-hand": _by_hand_none,
    "wrong-key": lambda c, key: sign(c, OTHER_KEY),
    "hs512": lambda c, key: sign(c, key, "HS512"),
    "hs384": lambda c, key: sign(c, key, "HS384"),
    "signature-stripped": lambda c, key: sign(c, key).rsplit(".", 1)[0] + ".",
    "payload-swapped": _payload_swapped,
    "wrong-audience": lambda c, key: sign({**c, "aud": "someone-else"}, key),
    "wrong-issuer": lambda c, key: sign({**c, "iss": "someone-else"}, key),
    "gen-not-integer": lambda c, key: sign({**c, "gen": str(c["gen"])}, key),
    "sub-not-uuid": lambda c, key: sign({**c, "sub": "1"}, key),
    "unknown-user": lambda c, key: sign({**c, "sub": str(uuid.uuid4())}, key),
    **{f"missing-{claim}": (lambda claim: lambda c, key: sign({k: v for k, v in c.items() if k != claim}, key))(claim)
       for claim in ("sub", "type", "gen", "jti", "iat", "exp", "iss", "aud")},
}


def _expired(claims, key):
    now = int(time.time())
    return sign({**claims, "iat": now - 3600, "exp": now - 60}, key)


def _present(client, where, token):
    return me(client, token) if where == "me" else refresh(client, token)


def _base_claims(ada, where):
    return claims_of(ada["access_token"] if where == "me" else ada["refresh_token"])


@pytest.mark.parametrize("where", ["me", "refresh"])
def test_a_token_re_signed_unchanged_is_accepted(client, settings, ada, where):
    """The control for the tamperings: forging with the service's key works."""
    token = sign(_base_claims(ada, where), settings["SECRET_KEY"])
    assert _present(client, where, token).status_code == 200


@pytest.mark.parametrize("where", ["me", "refresh"])
@pytest.mark.parametrize("tamper", list(TAMPERINGS.values()), ids=list(TAMPERINGS))
def test_tampered_tokens_are_invalid(client, database, settings, ada, where, tamper):
    before = account_state(database)
    token = tamper(_base_claims(ada, where), settings["SECRET_KEY"])
    assert_error(_present(client, where, token), 401, "invalid_token")
    assert account_state(database) == before


@pytest.mark.parametrize("where", ["me", "refresh"])
def test_expired_tokens_are_token_expired(client, database, settings, ada, where):
    before = account_state(database)
    token = _expired(_base_claims(ada, where), settings["SECRET_KEY"])
    assert_error(_present(client, where, token), 401, "token_expired")
    assert account_state(database) == before


def test_an_access_token_is_not_a_refresh_token(client, database, ada):
    before = account_state(database)
    assert_error(refresh(client, ada["access_token"]), 401, "invalid_token")
    assert account_state(database) == before


def test_a_refresh_token_is_not_an_access_token(client, ada):
    assert_error(me(client, ada["refresh_token"]), 401, "invalid_token")
    assert_error(post(client, "logout", headers=bearer(ada["refresh_token"])), 401, "invalid_token")


@pytest.mark.parametrize("where", ["me", "refresh"])
@pytest.mark.parametrize("garbage", ["garbage", "a.b.c", "...", "eyJhbGciOiJIUzI1NiJ9", "\u00e9\u00e8.\u00e0.x"])
def test_garbage_tokens_are_invalid(client, ada, where, garbage):
    assert_error(_present(client, where, garbage), 401, "invalid_token")


@pytest.mark.parametrize("scheme", ["Basic", "Token", "JWT"])
def test_a_non_bearer_scheme_is_refused(client, ada, scheme):
    response = client.get(f"{API}/me", headers={"Authorization": f"{scheme} {ada['access_token']}"})
    assert_error(response, 401, "invalid_token")


@pytest.mark.parametrize("headers", [{}, {"Authorization": ""}, {"Authorization": "Bearer"}],
                         ids=["no-header", "empty", "bearer-without-token"])
def test_a_missing_token_is_unauthorized(client, ada, headers):
    assert_error(client.get(f"{API}/me", headers=headers), 401, "unauthorized")
    assert_error(post(client, "logout", headers=headers), 401, "unauthorized")


# ----------------------------------------------------------------- refresh

def test_refresh_rotates_the_pair(client, database, ada):
    response = refresh(client, ada["refresh_token"])
    assert response.status_code == 200
    pair = response.get_json()
    assert pair["refresh_token"] != ada["refresh_token"]
    assert (pair["token_type"], pair["expires_in"], pair["user"]) == ("Bearer", 900, ada["user"])
    assert me(client, pair["access_token"]).status_code == 200
    old_jti, new_jti = claims_of(ada["refresh_token"])["jti"], claims_of(pair["refresh_token"])["jti"]
    used_at, replaced_by = database.query(
        "SELECT used_at, replaced_by FROM refresh_tokens WHERE jti = %s", (old_jti,))[0]
    assert used_at is not None and str(replaced_by) == new_jti
    assert refresh(client, pair["refresh_token"]).status_code == 200


def test_reusing_a_spent_refresh_token_revokes_every_token(client, database, ada):
    pair = refresh(client, ada["refresh_token"]).get_json()
    assert_error(refresh(client, ada["refresh_token"]), 401, "invalid_token")
    assert_error(refresh(client, pair["refresh_token"]), 401, "invalid_token")
    assert_error(me(client, pair["access_token"]), 401, "invalid_token")
    assert_error(me(client, ada["access_token"]), 401, "invalid_token")
    assert stored_user(database)[4] == 1
    assert me(client, login(client)["access_token"]).status_code == 200


def test_refresh_on_one_device_keeps_other_devices_logged_in(client):
    register(client)
    device_a, device_b = login(client), login(client)
    assert refresh(client, device_a["refresh_token"]).status_code == 200
    assert me(client, device_b["access_token"]).status_code == 200
    assert refresh(client, device_b["refresh_token"]).status_code == 200


# ------------------------------------------------------------------ logout

def test_logout_revokes_every_earlier_token(client, database, ada):
    other_device = login(client)
    response = post(client, "logout", headers=bearer(ada["access_token"]))
    assert response.status_code == 204
    assert response.get_data() == b""
    for tokens in (ada, other_device):
        assert_error(me(client, tokens["access_token"]), 401, "invalid_token")
        assert_error(refresh(client, tokens["refresh_token"]), 401, "invalid_token")
    assert_error(post(client, "logout", headers=bearer(ada["access_token"])), 401, "invalid_token")
    assert stored_user(database)[4] == 1
    fresh = login(client)
    assert me(client, fresh["access_token"]).status_code == 200
    assert refresh(client, fresh["refresh_token"]).status_code == 200


def test_no_view_open_to_accounts_runs_for_a_revoked_token(settings):
    """The pipeline confirms the token against revocation before the view: a
    view cannot forget to, and never runs for a token a logout ended."""
    calls = []

    @caller(ACCOUNT)
    def counted(caller):
        calls.append(caller.user_id)
        return {"served": True}

    app = create_app(settings)
    app.add_url_rule("/counted", view_func=serve(counted), endpoint="counted")
    client = app.test_client()
    register(client)
    try:
        old = login(client)["access_token"]
        assert client.get("/counted", headers=bearer(old)).get_json() == {"served": True}
        assert post(client, "logout", headers=bearer(old)).status_code == 204
        refused = client.get("/counted", headers=bearer(old))
    finally:
        close_app(app)
    assert_error(refused, 401, "invalid_token")
    assert len(calls) == 1


# ---------------------------------------------------------------------- me

def test_me_returns_the_profile_with_a_zero_balance(client, ada):
    response = me(client, ada["access_token"])
    assert response.status_code == 200
    body = response.get_json()
    assert {key: body[key] for key in ("id", "email", "username", "created_at")} == ada["registered"]
    assert body["balance"] == {"total_balance": "0.00", "spent_balance": "0.00", "held_balance": "0.00",
                               "available_balance": "0.00", "currency": "USD"}
    assert set(body) == {"id", "email", "username", "created_at", "is_admin", "balance"}


# ------------------------------------------------------------------- audit

def test_audit_log_never_holds_the_password_hash(client, database, stronger_app):
    register(client)
    old_hash = stored_hash(database)
    login(stronger_app.test_client())
    new_hash = stored_hash(database)
    assert new_hash != old_hash
    rows = database.query("SELECT operation, old_row, new_row FROM audit_log WHERE table_name = 'users'")
    assert {row[0] for row in rows} >= {"INSERT", "UPDATE"}
    for _, old_row, new_row in rows:
        for row in (old_row, new_row):
            assert row is None or "password_hash" not in row
    everything = "\n".join(row[0] for row in database.query("SELECT a::text FROM audit_log a"))
    for secret in (old_hash, new_hash, *old_hash.split("$")[2:], *new_hash.split("$")[2:]):
        assert secret not in everything


# ------------------------------------------------------------- concurrency

def test_simultaneous_registrations_of_one_email_create_one_user(live_server, database):
    parallel = 8
    start = threading.Barrier(parallel)

    def attempt(number):
        start.wait()
        return httpx.post(f"{live_server.url}{API}/register", timeout=30, json={
            "email": "race@example.com", "username": f"racer{number}", "password": PASSWORD})

    with ThreadPoolExecutor(parallel) as pool:
        responses = list(pool.map(attempt, range(parallel)))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] + [409] * (parallel - 1), [r.text for r in responses]
    assert all(r.json()["error"]["code"] == "email_taken" for r in responses if r.status_code == 409)
    assert database.query("SELECT count(*) FROM users WHERE email = 'race@example.com'")[0][0] == 1
    assert user_count(database) == 1
