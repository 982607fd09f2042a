"""Hardening (SPEC §6, §7, §10): rate limits and the per-email login lockout,
trusted proxies, CORS, security headers, the API's description and /docs, and
the least privilege of the service's own database login."""
import base64
import hashlib
import re
import time
from contextlib import closing
from html.parser import HTMLParser

import psycopg2
import pytest
from psycopg2 import errors

from app import MAX_BODY_BYTES, close_app, create_app
from tests.support import PASSWORD, bearer, login, register

API = "/api/v1"
LOGIN, REGISTER, REFRESH = f"{API}/auth/login", f"{API}/auth/register", f"{API}/auth/refresh"
ORIGIN = "https://app.example"
LIMITED = {"RATELIMIT_ENABLED": True, "RATE_LIMIT_AUTH": "3 per minute", "RATE_LIMIT_CHAT": "2 per minute"}
LOCKOUT = {"LOGIN_LOCKOUT_THRESHOLD": 3, "LOGIN_LOCKOUT_SECONDS": 60}
ANY_SESSION = "00000000-0000-4000-8000-000000000001"
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}


# ----------------------------------------------------------------- helpers

@pytest.fixture
def make_app(settings):
    """Apps on the test database with settings of their own, closed afterwards."""
    apps = []

    def make(**overrides):
        apps.append(create_app({**settings, **overrides}))
        return apps[-1]
    yield make
    for app in apps:
        close_app(app)


def client_at(app, address):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def assert_error(response, status, code):
    body = response.get_json()
    assert response.status_code == status, body
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    return body["error"]


def retry_after(response):
    """The Retry-After header as whole seconds, which it must be."""
    value = response.headers.get("Retry-After", "")
    assert value.isdigit() and int(value) > 0, f"Retry-After {value!r}"
    return int(value)


def assert_rate_limited(response):
    assert_error(response, 429, "rate_limited")
    return retry_after(response)


def try_login(client, email="ada@example.com", password=PASSWORD, **kwargs):
    return client.post(LOGIN, json={"email": email, "password": password}, **kwargs)


def fail_logins(client, email="ada@example.com", times=LOCKOUT["LOGIN_LOCKOUT_THRESHOLD"], **kwargs):
    for _ in range(times):
        assert_error(try_login(client, email, "wrong password", **kwargs), 401, "unauthorized")


def chat_user(client, name):
    """A funded user with a local/echo session: (headers, messages URL)."""
    register(client, email=f"{name}@example.com", username=name)
    headers = bearer(login(client, f"{name}@example.com")["access_token"])
    assert client.post(f"{API}/balance/funds", json={"amount": "5"}, headers=headers).status_code == 201
    session = client.post(f"{API}/chat/sessions", json={"model_id": "local/echo"}, headers=headers).get_json()
    return headers, f"{API}/chat/sessions/{session['id']}/messages"


def say(client, user):
    headers, url = user
    return client.post(url, json={"content": "hello"}, headers=headers)


def lockout_row(database, email):
    """(failures, locked now) from the email's login_attempts row, or None."""
    rows = database.query("SELECT failures, coalesce(locked_until > now(), false) FROM login_attempts "
                          "WHERE email = %s", (email,))
    return rows[0] if rows else None


# ----------------------------------------------------------------- rate limits

AUTH_CALLS = {
    "login": lambda client, n: try_login(client, f"nobody{n}@example.com", "wrong password"),
    "register": lambda client, n: client.post(REGISTER, json={"email": f"user{n}@example.com",
                                                              "username": f"user{n}", "password": PASSWORD}),
    "refresh": lambda client, n: client.post(REFRESH, json={"refresh_token": f"not-a-token-{n}"}),
}


@pytest.mark.parametrize("endpoint", AUTH_CALLS)
def test_auth_endpoints_are_limited_per_client_address(make_app, endpoint):
    app, call = make_app(**LIMITED), AUTH_CALLS[endpoint]
    first, second = client_at(app, "10.0.0.1"), client_at(app, "10.0.0.2")
    assert all(call(first, n).status_code != 429 for n in range(3))
    assert_rate_limited(call(first, 3))
    assert call(second, 4).status_code != 429


def test_chat_messages_are_limited_per_user_across_addresses(make_app):
    app = make_app(**{**LIMITED, "RATE_LIMIT_AUTH": "100 per minute"})
    home, work = client_at(app, "10.0.0.1"), client_at(app, "10.0.0.2")
    ada, bob = chat_user(home, "ada"), chat_user(home, "bob")
    assert [say(home, ada).status_code for _ in range(2)] == [201, 201]
    assert_rate_limited(say(work, ada))        # the same user from another address
    assert say(home, bob).status_code == 201   # another user from the same address


def test_a_forged_forwarded_for_is_ignored_without_trusted_proxies(make_app):
    client = client_at(make_app(**LIMITED, TRUSTED_PROXIES=0), "10.0.0.1")
    for n in range(3):
        fail_logins(client, times=1, headers={"X-Forwarded-For": f"203.0.113.{n}"})
    assert_rate_limited(try_login(client, headers={"X-Forwarded-For": "203.0.113.99"}))


def test_behind_one_trusted_proxy_the_forwarded_address_is_the_client(make_app):
    proxy = client_at(make_app(**LIMITED, TRUSTED_PROXIES=1), "10.0.0.1")
    fail_logins(proxy, times=3, headers={"X-Forwarded-For": "203.0.113.7"})
    assert_rate_limited(try_login(proxy, headers={"X-Forwarded-For": "203.0.113.7"}))
    # What the client prepends is not trusted: the proxy's own entry is the last one.
    assert_rate_limited(try_login(proxy, headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}))
    fail_logins(proxy, times=1, headers={"X-Forwarded-For": "203.0.113.8"})


# ----------------------------------------------------------------- login lockout (PostgreSQL)

@pytest.fixture
def lockout_app(make_app):
    """flask-limiter off (RATELIMIT_ENABLED False): only the lockout counts."""
    app = make_app(**LOCKOUT)
    register(app.test_client())
    return app


def test_failed_logins_lock_the_email_even_for_the_right_password(lockout_app, database):
    attacker, owner = client_at(lockout_app, "10.0.0.1"), client_at(lockout_app, "10.0.0.2")
    fail_logins(attacker, times=2)
    assert lockout_row(database, "ada@example.com") == (2, False)
    fail_logins(attacker, times=1)
    assert lockout_row(database, "ada@example.com")[1] is True
    for email in ("ada@example.com", "ADA@Example.com"):
        assert assert_rate_limited(try_login(owner, email)) <= LOCKOUT["LOGIN_LOCKOUT_SECONDS"]


def test_an_email_without_account_locks_alike_so_a_lockout_reveals_nothing(lockout_app, database):
    client = lockout_app.test_client()
    fail_logins(client, "ada@example.com")
    fail_logins(client, "ghost@example.com")
    known, unknown = try_login(client, "ada@example.com"), try_login(client, "ghost@example.com")
    assert_rate_limited(known)
    assert_rate_limited(unknown)
    assert known.get_json() == unknown.get_json()
    assert lockout_row(database, "ghost@example.com")[1] is True


def test_a_lockout_leaves_other_emails_alone(lockout_app):
    client = lockout_app.test_client()
    register(client, email="bob@example.com", username="bob")
    fail_logins(client, "ada@example.com")
    assert try_login(client, "bob@example.com").status_code == 200


def test_a_success_before_the_threshold_clears_the_count(lockout_app, database):
    client = lockout_app.test_client()
    fail_logins(client, times=2)
    assert try_login(client).status_code == 200
    assert lockout_row(database, "ada@example.com") is None
    fail_logins(client, times=2)
    assert try_login(client).status_code == 200


@pytest.mark.parametrize("expire", ["moved-into-the-past", "one-second-lock"])
def test_the_right_password_works_again_once_the_lock_expires(make_app, database, expire):
    app = make_app(**{**LOCKOUT, **({"LOGIN_LOCKOUT_SECONDS": 1} if expire == "one-second-lock" else {})})
    client = app.test_client()
    register(client)
    fail_logins(client)
    assert_rate_limited(try_login(client))
    if expire == "one-second-lock":
        time.sleep(1.2)
    else:
        database.query("UPDATE login_attempts SET locked_until = now() - interval '1 second'")
    assert try_login(client).status_code == 200


# ----------------------------------------------------------------- CORS

PREFLIGHT = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "Authorization, Idempotency-Key"}
MONEY_PATHS = [f"{API}/balance/funds", f"{API}/chat/sessions/{ANY_SESSION}/messages"]


def header_set(response, name):
    return {item.strip().lower() for item in response.headers.get(name, "").split(",") if item.strip()}


@pytest.mark.parametrize("path", MONEY_PATHS)
def test_a_preflight_from_an_allowed_origin_is_answered(make_app, path):
    response = make_app(CORS_ORIGINS=ORIGIN).test_client().options(path, headers=PREFLIGHT)
    assert 200 <= response.status_code < 300
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert {"authorization", "idempotency-key"} <= header_set(response, "Access-Control-Allow-Headers")
    assert "post" in header_set(response, "Access-Control-Allow-Methods")


@pytest.mark.parametrize("path, status", [("/healthz", 200), (f"{API}/auth/me", 401), (f"{API}/nowhere", 404)])
def test_actual_responses_expose_the_service_headers(make_app, path, status):
    response = make_app(CORS_ORIGINS=ORIGIN).test_client().get(path, headers={"Origin": ORIGIN})
    assert response.status_code == status
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert {"x-request-id", "retry-after", "idempotent-replayed"} <= header_set(
        response, "Access-Control-Expose-Headers")


@pytest.mark.parametrize("cors_origins, origin", [
    (ORIGIN, "https://evil.example"),
    (ORIGIN, "https://app.example.evil.example"),
    (ORIGIN, "http://app.example"),
    (ORIGIN, "null"),
    ("", ORIGIN),
])
def test_other_origins_are_not_allowed(make_app, cors_origins, origin):
    client = make_app(CORS_ORIGINS=cors_origins).test_client()
    for response in (client.options(MONEY_PATHS[0], headers={**PREFLIGHT, "Origin": origin}),
                     client.get("/healthz", headers={"Origin": origin})):
        assert "Access-Control-Allow-Origin" not in response.headers


# ----------------------------------------------------------------- security headers

@pytest.fixture
def ada(client):
    register(client)
    return login(client)


# name: (request, expected status)
RESPONSES = {
    "healthz": (lambda c, t: c.get("/healthz"), 200),
    "openapi": (lambda c, t: c.get("/openapi.json"), 200),
    "login": (lambda c, t: try_login(c), 200),
    "login refused": (lambda c, t: try_login(c, password="wrong password"), 401),
    "refresh": (lambda c, t: c.post(REFRESH, json={"refresh_token": t["refresh_token"]}), 200),
    "me": (lambda c, t: c.get(f"{API}/auth/me", headers=bearer(t["access_token"])), 200),
    "keys": (lambda c, t: c.get(f"{API}/keys", headers=bearer(t["access_token"])), 200),
    "keys without token": (lambda c, t: c.get(f"{API}/keys"), 401),
    "unknown route": (lambda c, t: c.get("/nowhere"), 404),
    "wrong method": (lambda c, t: c.delete(LOGIN), 405),
    "invalid json": (lambda c, t: c.post(LOGIN, data="{", content_type="application/json"), 400),
    "not json": (lambda c, t: c.post(LOGIN, data="a=1", content_type="text/plain"), 415),
    "too large": (lambda c, t: c.post(LOGIN, data=b" " * (MAX_BODY_BYTES + 1), content_type="application/json"),
                  413),
}


@pytest.mark.parametrize("name", RESPONSES)
def test_every_json_response_carries_the_security_headers(client, ada, name):
    send, status = RESPONSES[name]
    response = send(client, ada)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    for header, value in {**SECURITY_HEADERS, "Cache-Control": "no-store"}.items():
        assert response.headers.get(header) == value, header
    assert "default-src 'none'" in response.headers.get("Content-Security-Policy", "")
    assert response.headers.get("X-Request-ID")


# ----------------------------------------------------------------- the API's description

class Assets(HTMLParser):
    """Every src and href of an HTML page."""

    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def test_docs_page_uses_only_local_assets(client):
    response = client.get("/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    for header, value in SECURITY_HEADERS.items():
        assert response.headers.get(header) == value, header
    html = response.get_data(as_text=True)
    page = Assets()
    page.feed(html)
    assert any(url.endswith(".js") for url in page.urls) and any(url.endswith(".css") for url in page.urls)
    assert not [url for url in page.urls if "//" in url]
    assert "http://" not in html and "https://" not in html
    for url in page.urls:
        with client.get(url) as asset:
            assert asset.status_code == 200, url


def test_docs_page_has_a_strict_content_security_policy(client):
    """No inline script runs but the page's own, named by its hash; nothing from another site."""
    response = client.get("/docs")
    text = response.headers["Content-Security-Policy"]
    policy = dict(directive.strip().split(" ", 1) for directive in text.split(";"))
    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert not [word for word in ("unsafe", "*", "//", "data:") if word in text.replace("img-src 'self' data:", "")]
    inline = re.findall(r"<script>(.*?)</script>", response.get_data(as_text=True), re.S)
    assert inline
    assert set(policy["script-src"].split()) == {"'self'"} | {
        f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'" for script in inline}


def test_docs_reads_the_same_document(client):
    assert client.get("/docs/openapi.json").get_json() == client.get("/openapi.json").get_json()


SPEC_ENDPOINTS = [
    ("post", "/api/v1/auth/register"), ("post", "/api/v1/auth/login"), ("post", "/api/v1/auth/refresh"),
    ("post", "/api/v1/auth/logout"), ("get", "/api/v1/auth/me"),
    ("post", "/api/v1/keys"), ("get", "/api/v1/keys"), ("delete", "/api/v1/keys/{key_id}"),
    ("get", "/api/v1/balance"), ("post", "/api/v1/balance/funds"), ("get", "/api/v1/balance/transactions"),
    ("post", "/api/v1/chat/sessions"), ("get", "/api/v1/chat/sessions"),
    ("get", "/api/v1/chat/sessions/{session_id}"), ("post", "/api/v1/chat/sessions/{session_id}/messages"),
    ("delete", "/api/v1/chat/sessions/{session_id}"),
    ("get", "/api/v1/models"), ("get", "/api/v1/models/{provider}/{name}"),
    ("put", "/api/v1/models/{provider}/{name}/rating"), ("post", "/api/v1/models/recommend"),
    ("get", "/api/v1/preferences"), ("put", "/api/v1/preferences"), ("get", "/api/v1/activity"),
]
PUBLIC = {("post", "/api/v1/auth/register"), ("post", "/api/v1/auth/login"), ("post", "/api/v1/auth/refresh"),
          ("get", "/api/v1/models"), ("get", "/api/v1/models/{provider}/{name}")}
IDEMPOTENT = [("post", "/api/v1/balance/funds"), ("post", "/api/v1/chat/sessions/{session_id}/messages")]


@pytest.fixture
def document(client):
    return client.get("/openapi.json").get_json()


def test_openapi_documents_every_spec_endpoint(document):
    assert document["openapi"] == "3.1.0"
    assert len(set(SPEC_ENDPOINTS)) == 23
    assert [f"{m} {p}" for m, p in SPEC_ENDPOINTS if m not in document["paths"].get(p, {})] == []


def test_openapi_declares_the_bearer_scheme_on_every_private_endpoint(document):
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    for method, path in SPEC_ENDPOINTS:
        wanted = [] if (method, path) in PUBLIC else [{"bearer": []}]
        assert document["paths"][path][method]["security"] == wanted, f"{method} {path}"


@pytest.mark.parametrize("method, path", IDEMPOTENT)
def test_openapi_declares_the_idempotency_key_header(document, method, path):
    headers = [p for p in document["paths"][path][method]["parameters"] if p["in"] == "header"]
    assert [p["name"] for p in headers] == ["Idempotency-Key"]


# The error shape of each part of the API, by path prefix (the longest wins): the
# service's own, or that of the provider format the inference API speaks there.
ERROR_SCHEMAS = {"/": "Error", "/v1/": "OpenAIError", "/v1/messages": "AnthropicError"}


def error_schema_of(path):
    return ERROR_SCHEMAS[max((prefix for prefix in ERROR_SCHEMAS if path.startswith(prefix)), key=len)]


def test_every_documented_error_response_is_the_error_schema(document):
    wrong = [f"{method.upper()} {path} {status}"
             for path, item in document["paths"].items() for method, operation in item.items()
             for status, response in operation["responses"].items()
             if int(status) >= 400 and response.get("content", {}).get("application/json", {}).get("schema")
             != {"$ref": f"#/components/schemas/{error_schema_of(path)}"}]
    assert wrong == []
    assert {error_schema_of(path) for path in document["paths"]} == set(ERROR_SCHEMAS.values())


def conforms(schema, value):
    """Whether `value` has exactly the properties `schema` lists, its required
    ones among them, each of the listed type or constant (the subset of JSON
    Schema the error components use)."""
    if "const" in schema:
        return value == schema["const"]
    kinds = [schema["type"]] if isinstance(schema["type"], str) else schema["type"]
    python = {"object": dict, "string": str, "null": type(None)}
    if not any(isinstance(value, python[kind]) for kind in kinds):
        return False
    if isinstance(value, dict) and "properties" in schema:
        return set(schema["required"]) <= set(value) == set(schema["properties"]) and all(
            conforms(schema["properties"][name], item) for name, item in value.items())
    return True


# schema: a request whose body has a wrong type, sent with and without a token:
# a validation error (naming a field) and a 401 (naming none).
SENT_ERRORS = {
    "Error": lambda c, h: c.post(f"{API}/chat/sessions", json={"model_id": 5}, headers=h),
    "OpenAIError": lambda c, h: c.post("/v1/chat/completions", json={"model": 5}, headers=h),
    "AnthropicError": lambda c, h: c.post("/v1/messages", json={"model": 5}, headers=h),
}


@pytest.mark.parametrize("schema", SENT_ERRORS)
def test_each_error_component_is_what_the_service_sends(client, ada, document, schema):
    component = document["components"]["schemas"][schema]
    for headers, status in ((bearer(ada["access_token"]), 400), ({}, 401)):
        response = SENT_ERRORS[schema](client, headers)
        assert response.status_code == status, response.get_json()
        assert conforms(component, response.get_json()), response.get_json()
    assert set(document["components"]["schemas"]["Error"]["properties"]["error"]["required"]) == {
        "code", "message", "details"}


# ----------------------------------------------------------------- validation messages

# A message's content is a string or a list of parts: pydantic tells which member
# of that union each error came from, in words made of the validators' code.
INFERENCE_BODIES = {
    "/v1/chat/completions": {"model": "local/echo"},
    "/v1/messages": {"model": "local/echo", "max_tokens": 20},
}
BAD_CONTENT = {"NUL": ("a\u0000b", "must not contain NUL characters"),
               "number": (5, "must be a string or a list")}
INTERNALS = ("function", "partial", "validator", " at 0x", "list[", "str]")


def error_text(body):
    """(the message, the field named: OpenAI's format only) of an error in either format."""
    return body["error"]["message"], body["error"].get("param")


@pytest.mark.parametrize("path", INFERENCE_BODIES)
@pytest.mark.parametrize("bad", BAD_CONTENT)
def test_a_bad_content_is_named_by_its_field_in_the_services_words(client, ada, path, bad):
    content, problem = BAD_CONTENT[bad]
    body = {**INFERENCE_BODIES[path], "messages": [{"role": "user", "content": content}]}
    response = client.post(path, json=body, headers=bearer(ada["access_token"]))
    assert response.status_code == 400, response.get_json()
    message, param = error_text(response.get_json())
    assert message.endswith(f"(messages.0.content: {problem})"), message
    if path == "/v1/chat/completions":
        assert param == "messages.0.content"
    assert not [word for word in INTERNALS if word in response.get_data(as_text=True)]


def test_no_union_member_reaches_a_field_path():
    """Any union: of models (pydantic names each by its class), of a string and a list."""
    from typing import Annotated, Literal

    from pydantic import BaseModel, Field, ValidationError

    from app.api.bodies import validation_details

    class Cat(BaseModel):
        kind: Literal["cat"]
        lives: int

    class Dog(BaseModel):
        kind: Literal["dog"]
        good: bool

    class Pets(BaseModel):
        pets: list[Cat | Dog]
        name: Annotated[str, Field(max_length=3)] | list[str]

    data = {"pets": [{"kind": "cat", "lives": "nine"}, 5, {"kind": "dog"}], "name": "Rex the dog"}
    with pytest.raises(ValidationError) as raised:
        Pets.model_validate(data)
    assert validation_details(raised.value, data) == {
        "pets.0.lives": "must be an integer",  # as a Cat; as a Dog:
        "pets.0.kind": "must be one of dog",
        "pets.0.good": "is required",
        "pets.1": "must be an object",
        "pets.2.kind": "must be one of cat",
        "pets.2.lives": "is required",
        "pets.2.good": "is required",
        "name": "must be at most 3 characters",
    }


# ----------------------------------------------------------------- least privilege

REFUSED_TO_THE_SERVICE = {
    "create table": "CREATE TABLE intruder (id integer)",
    "create function": "CREATE FUNCTION intruder() RETURNS integer LANGUAGE sql AS 'SELECT 1'",
    "alter table": "ALTER TABLE users ADD COLUMN is_admin boolean",
    "drop table": "DROP TABLE transactions",
    "truncate ledger": "TRUNCATE transactions",
    "update ledger": "UPDATE transactions SET amount = 0",
    "delete ledger": "DELETE FROM transactions",
    "insert ledger": "INSERT INTO transactions (user_id, type, amount, available_after) "
                     "VALUES (gen_random_uuid(), 'deposit', 1, 1)",
    "update balance": "UPDATE user_balance SET total_balance = 1000000",
    "update audit": "UPDATE audit_log SET operation = 'DELETE'",
    "delete audit": "DELETE FROM audit_log",
    "read audit": "SELECT * FROM audit_log",
    "insert model": "INSERT INTO models (id, provider, name, context_window, max_output_tokens, "
                    "input_price_per_mtok, output_price_per_mtok, prices_as_of) "
                    "VALUES ('local/free', 'local', 'Free', 1, 1, 0, 0, '2026-01-01')",
    "update model prices": "UPDATE models SET input_price_per_mtok = 0",
}


@pytest.mark.parametrize("statement", REFUSED_TO_THE_SERVICE.values(), ids=REFUSED_TO_THE_SERVICE)
def test_the_service_login_has_least_privilege(database, statement):
    with closing(psycopg2.connect(database.app_url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM transactions")  # it is the service's working login
        with pytest.raises(errors.InsufficientPrivilege):
            cur.execute(statement)
