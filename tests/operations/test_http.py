"""SPEC §7 over the whole app: request ids, security headers, JSON errors for
every failure, body limits, readiness, and what the logs may never hold."""
import json
import logging
import re
import shutil
import tempfile
import uuid

import pytest
import testing.postgresql

from app import MAX_BODY_BYTES, create_app
from app.extensions import db
from app.observability import JSONFormatter
from devtools.cluster import testing_postgresql_options as pg_options
from tests.support import PASSWORD, assert_error, bearer, login, register, settings_for

REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"
ME = "/api/v1/auth/me"
JSON = "application/json"
FRESH_ID = re.compile(r"^[0-9a-f]{32}$")
SECRET_FAILURE = "secret-sql SELECT password_hash FROM users"


def explode():
    raise RuntimeError(SECRET_FAILURE)


@pytest.fixture
def app(app):
    """The suite's app plus a route that fails unexpectedly (added before any request)."""
    app.add_url_rule("/boom", "boom", explode)
    return app


def new_user():
    name = uuid.uuid4().hex[:12]
    return {"email": f"{name}@example.com", "username": name, "password": PASSWORD}


# status: (method, path, request keyword arguments)
EVERY_STATUS = {
    200: ("GET", "/healthz", {}),
    201: ("POST", REGISTER, {"json": None}),  # a fresh user, made per request
    400: ("POST", REGISTER, {"data": "{", "content_type": JSON}),
    401: ("GET", ME, {}),
    404: ("GET", "/no/such/route", {}),
    405: ("DELETE", "/healthz", {}),
    413: ("POST", REGISTER, {"data": b"x" * (MAX_BODY_BYTES + 1), "content_type": JSON}),
    415: ("POST", REGISTER, {"data": "hello", "content_type": "text/plain"}),
    500: ("GET", "/boom", {}),
}


def send(client, status, headers=None):
    method, path, kwargs = EVERY_STATUS[status]
    if "json" in kwargs:
        kwargs = {"json": new_user()}
    return client.open(path, method=method, headers=headers or {}, **kwargs)


@pytest.mark.parametrize("status", sorted(EVERY_STATUS))
def test_every_response_is_json_with_request_id_and_nosniff(client, status):
    response = send(client, status, {"X-Request-ID": "abc-123"})
    assert response.status_code == status
    assert response.mimetype == JSON
    assert response.headers["X-Request-ID"] == "abc-123"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("status", [200, 404, 500])
@pytest.mark.parametrize("sent", [None, "", "<script>alert(1)</script>", "x" * 200, "a b", "id;rm -rf", "idé"])
def test_missing_or_hostile_request_id_is_replaced(client, status, sent):
    response = send(client, status, {} if sent is None else {"X-Request-ID": sent})
    assert response.status_code == status
    assert FRESH_ID.match(response.headers["X-Request-ID"])


def test_fresh_request_ids_differ(client):
    ids = {client.get("/healthz").headers["X-Request-ID"] for _ in range(3)}
    assert len(ids) == 3


@pytest.mark.parametrize("path", ["/no/such/route", "/api/v1/nothing-here", "/api/v1/auth/"])
def test_unknown_route_is_json_404(client, path):
    assert_error(client.get(path), 404, "not_found")


@pytest.mark.parametrize("method, path, allowed", [
    ("GET", LOGIN, "POST"),
    ("PUT", REGISTER, "POST"),
    ("DELETE", "/healthz", "GET"),
    ("POST", "/readyz", "GET"),
])
def test_wrong_method_is_json_405_with_allow(client, method, path, allowed):
    response = client.open(path, method=method)
    assert_error(response, 405, "method_not_allowed")
    assert allowed in [item.strip() for item in response.headers["Allow"].split(",")]


def test_body_over_one_mebibyte_is_413(client):
    response = client.post(REGISTER, data=b" " * (MAX_BODY_BYTES + 1), content_type=JSON)
    assert_error(response, 413, "payload_too_large")


def test_body_just_under_the_limit_is_read_and_validated(client):
    body = {**new_user(), "password": ""}
    body["password"] = "p" * (MAX_BODY_BYTES - len(json.dumps(body)) - 1)
    data = json.dumps(body).encode()
    assert len(data) == MAX_BODY_BYTES - 1
    error = assert_error(client.post(REGISTER, data=data, content_type=JSON), 400, "validation_error")
    assert "password" in error["details"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_non_json_content_type_is_415(client, content_type):
    response = client.post(REGISTER, data=json.dumps(new_user()), content_type=content_type)
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize("data", ['{"email": ', "{'email': 'a@b.co'}", "NaN", '{"n": Infinity}', "\x00"])
def test_malformed_json_is_invalid_json(client, data):
    assert_error(client.post(LOGIN, data=data, content_type=JSON), 400, "invalid_json")


@pytest.mark.parametrize("data", ["[]", '["a@b.co", "pw"]', "42", '"text"', "null", "true"])
def test_json_that_is_not_an_object_is_validation_error(client, data):
    assert_error(client.post(LOGIN, data=data, content_type=JSON), 400, "validation_error")


def test_unexpected_exception_is_generic_500(client):
    response = client.get("/boom")
    error = assert_error(response, 500, "internal_error")
    text = response.get_data(as_text=True)
    for leak in ("secret-sql", "SELECT", "password_hash", "RuntimeError", "Traceback", 'File "'):
        assert leak not in text
    assert error["details"] == {}


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_with_database_up(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


def test_readyz_and_requests_answer_503_when_database_stops():
    base_dir = tempfile.mkdtemp(prefix="qmarket-test-down-", dir="/tmp")
    server = testing.postgresql.Postgresql(**pg_options(base_dir))
    # Its only login is the superuser, which production refuses to serve as.
    app = create_app(settings_for(server.url(), APP_ENV="development"))
    client = app.test_client()
    try:
        assert client.get("/readyz").status_code == 200
        server.stop()
        for _ in range(2):  # the pooled connection dies first, then new connections fail
            response = client.get("/readyz")
            assert_error(response, 503, "database_unavailable")
            assert FRESH_ID.match(response.headers["X-Request-ID"])
        response = client.post(LOGIN, json={"email": "ada@example.com", "password": PASSWORD})
        assert_error(response, 503, "database_unavailable")
        assert FRESH_ID.match(response.headers["X-Request-ID"])
    finally:
        with app.app_context():
            db.close()
        server.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


class Capture(logging.Handler):
    """Formats each record as it is emitted (inside the request), like production."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(JSONFormatter())
        self.entries = []

    def emit(self, record):
        self.entries.append((record, self.format(record)))


@pytest.fixture
def captured_logs():
    root = logging.getLogger()
    handler, level = Capture(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler.entries
    root.removeHandler(handler)
    root.setLevel(level)


def test_logs_never_hold_passwords_or_tokens_and_carry_request_ids(client, captured_logs):
    user = new_user()
    register(client, user["email"], user["username"], user["password"])
    tokens = login(client, user["email"], user["password"])
    wrong = "wrong-password-" + uuid.uuid4().hex
    failed = client.post(LOGIN, json={"email": user["email"], "password": wrong},
                         headers={"X-Request-ID": "failed-login-1"})
    assert failed.status_code == 401
    me = client.get(ME, headers={**bearer(tokens["access_token"]), "X-Request-ID": "me-1"})
    assert me.status_code == 200
    renewed = client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert renewed.status_code == 200

    secrets = [user["password"], wrong, tokens["access_token"], tokens["refresh_token"],
               renewed.get_json()["access_token"], renewed.get_json()["refresh_token"]]
    assert captured_logs
    for record, line in captured_logs:
        for secret in secrets:
            assert secret not in record.getMessage()
            assert secret not in line
            assert secret not in JSONFormatter().format(record)

    access = [json.loads(line) for record, line in captured_logs if record.name == "qmarket.access"]
    by_request = {entry["request_id"]: entry for entry in access}
    assert by_request["failed-login-1"]["status"] == 401
    assert by_request["me-1"]["path"] == ME
    assert len(access) == len(by_request) == 5  # one access record per request, each with its own id
    assert sum(bool(FRESH_ID.match(request_id)) for request_id in by_request) == 3
