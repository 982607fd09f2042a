"""Access keys from the account's side: create (the key shown once), list,
revoke, validation, and authentication by key: what it opens (an operation
open to ACCOUNT_OR_KEY), what it never opens (the account API), its own rate
limit, and that the key never reaches a log, an audit row or an error."""
import base64
import hashlib
import logging
import re
from datetime import datetime, timedelta, timezone

import pytest
from flask import current_app

from app import close_app, create_app
from app.api import access_keys
from app.api.callers import access_key_subject
from app.api.contract import ACCOUNT_OR_KEY, caller, rate_limit
from app.api.pipeline import serve
from app.observability import JSONFormatter
from database.vocab import SPEND_LIMIT_PERIODS
from tests.operations import test_secrets_in_logs
from tests.operations.test_secrets_in_logs import assert_no_secrets
from tests.operations.test_vocabulary import allowed_words, check_of
from tests.support import assert_error, bearer, user, user_id_of

ACCESS_KEYS = "/api/v1/access-keys"
WHOAMI = "/test/whoami"
KEY_FORMAT = re.compile(r"^qm-[A-Za-z0-9_-]{43}$")
server_log = test_secrets_in_logs.server_log  # the fixture: what the PostgreSQL server logs from now on
PUBLIC_FIELDS = {"id", "name", "last4", "allowed_models", "spend_limit", "spend_limit_period", "spent",
                 "expires_at", "created_at", "last_used_at"}


def create(client, token, **fields):
    response = client.post(ACCESS_KEYS, json={"name": "ci", **fields}, headers=bearer(token))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def listed(client, token, **params):
    response = client.get(ACCESS_KEYS, query_string=params, headers=bearer(token))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def in_an_hour():
    return (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()


def whoami(caller):
    """What an operation open to ACCOUNT_OR_KEY sees of its caller."""
    key = caller.access_key
    return {"user_id": str(caller.user_id), "access_key": None if key is None else str(key["id"]),
            "allowed_models": None if key is None else key["allowed_models"]}


@pytest.fixture
def caller_app(settings):
    """The app with a route that admits access keys and access tokens."""
    app = create_app(settings)
    app.add_url_rule(WHOAMI, view_func=serve(caller(ACCOUNT_OR_KEY)(whoami)), endpoint="whoami")
    yield app
    close_app(app)


# ----------------------------------------------------------------- create, list, revoke

def test_a_new_key_is_shown_once_and_only_its_hash_is_stored(client, token, database):
    response = client.post(ACCESS_KEYS, json={"name": "ci", "allowed_models": ["local/echo", "local/echo"],
                                              "spend_limit": "5.5", "spend_limit_period": "month",
                                              "expires_at": "2099-01-31T12:00:00+02:00"}, headers=bearer(token))
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert response.headers["Location"] == f"{ACCESS_KEYS}/{body['id']}"
    assert set(body) == PUBLIC_FIELDS | {"key"}
    assert KEY_FORMAT.match(body["key"])
    assert len(base64.urlsafe_b64decode(body["key"][3:] + "=")) == 32
    assert body["last4"] == body["key"][-4:]
    assert (body["name"], body["allowed_models"], body["spend_limit"], body["spend_limit_period"], body["spent"]) \
        == ("ci", ["local/echo"], "5.50", "month", "0.00")
    assert datetime.fromisoformat(body["expires_at"]) == datetime(2099, 1, 31, 10, tzinfo=timezone.utc)
    assert body["last_used_at"] is None

    assert [bytes(row[0]) for row in database.query("SELECT key_hash FROM access_keys")] == [
        hashlib.sha256(body["key"].encode()).digest()]
    rows = database.query("SELECT t::text FROM access_keys t")[0][0]
    assert body["key"] not in rows and body["key"][3:] not in rows
    assert [set(key) for key in listed(client, token)["access_keys"]] == [PUBLIC_FIELDS]


def test_two_keys_are_never_the_same(client, token):
    assert create(client, token)["key"] != create(client, token)["key"]


def test_keys_are_listed_newest_first_in_pages(client, token):
    made = [create(client, token, name=f"key {n}")["id"] for n in range(5)]
    first = listed(client, token, limit=2)
    second = listed(client, token, limit=2, cursor=first["next_cursor"])
    third = listed(client, token, limit=2, cursor=second["next_cursor"])
    seen = [key["id"] for page in (first, second, third) for key in page["access_keys"]]
    assert seen == made[::-1]
    assert third["next_cursor"] is None


def test_a_revoked_key_leaves_the_list_but_keeps_its_row(client, token, database):
    kept, revoked = create(client, token, name="kept"), create(client, token, name="revoked")
    response = client.delete(f"{ACCESS_KEYS}/{revoked['id']}", headers=bearer(token))
    assert response.status_code == 204 and response.data == b""
    assert [key["id"] for key in listed(client, token)["access_keys"]] == [kept["id"]]
    assert database.query("SELECT count(*) FROM access_keys WHERE revoked_at IS NOT NULL") == [(1,)]
    assert_error(client.delete(f"{ACCESS_KEYS}/{revoked['id']}", headers=bearer(token)), 404, "not_found")


@pytest.mark.parametrize("key_id", ["not-a-uuid", "00000000-0000-4000-8000-000000000001"])
def test_revoking_an_unknown_key_is_404(client, token, key_id):
    assert_error(client.delete(f"{ACCESS_KEYS}/{key_id}", headers=bearer(token)), 404, "not_found")


def test_nobody_sees_or_revokes_another_users_keys(client, token):
    theirs = create(client, token)
    other = user(client, "bob")
    assert listed(client, other)["access_keys"] == []
    assert_error(client.delete(f"{ACCESS_KEYS}/{theirs['id']}", headers=bearer(other)), 404, "not_found")
    assert [key["id"] for key in listed(client, token)["access_keys"]] == [theirs["id"]]


def test_an_account_holds_a_bounded_number_of_live_keys(client, token, monkeypatch):
    monkeypatch.setattr(access_keys, "MAX_ACCESS_KEYS_PER_USER", 2)
    first, _ = create(client, token), create(client, token)
    assert_error(client.post(ACCESS_KEYS, json={"name": "third"}, headers=bearer(token)), 409, "key_limit_reached")
    client.delete(f"{ACCESS_KEYS}/{first['id']}", headers=bearer(token))
    create(client, token, name="third")


# ----------------------------------------------------------------- validation

@pytest.mark.parametrize("fields, field", [
    ({"name": ""}, "name"),
    ({"name": "x" * 101}, "name"),
    ({"name": "nul\x00"}, "name"),
    ({"name": None}, "name"),
    ({"allowed_models": []}, "allowed_models"),
    ({"allowed_models": "local/echo"}, "allowed_models"),
    ({"allowed_models": ["no such model"]}, "allowed_models.0"),
    ({"allowed_models": ["local/echo", "nope/missing"]}, "allowed_models"),
    ({"spend_limit": "0", "spend_limit_period": "day"}, "spend_limit"),
    ({"spend_limit": "-1", "spend_limit_period": "day"}, "spend_limit"),
    ({"spend_limit": "lots", "spend_limit_period": "day"}, "spend_limit"),
    ({"spend_limit": "0.00000000001", "spend_limit_period": "day"}, "spend_limit"),
    ({"spend_limit": "10000000000", "spend_limit_period": "day"}, "spend_limit"),
    ({"spend_limit": "5"}, "spend_limit_period"),
    ({"spend_limit_period": "day"}, "spend_limit"),
    ({"spend_limit": "5", "spend_limit_period": "week"}, "spend_limit_period"),
    ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ({"expires_at": "2099-01-01T00:00:00"}, "expires_at"),
    ({"expires_at": "next tuesday"}, "expires_at"),
    ({"expires_at": 4102444800}, "expires_at"),
    ({"key": "qm-chosen-by-me"}, "key"),
])
def test_bad_fields_are_named(client, token, database, fields, field):
    error = assert_error(client.post(ACCESS_KEYS, json={"name": "ci", **fields}, headers=bearer(token)),
                         400, "validation_error")
    assert field in error["details"], error
    assert database.query("SELECT count(*) FROM access_keys") == [(0,)]


def test_an_unknown_model_is_named_in_the_error(client, token):
    error = assert_error(client.post(ACCESS_KEYS, json={"name": "ci", "allowed_models": ["nope/missing"]},
                                     headers=bearer(token)), 400, "validation_error")
    assert "nope/missing" in error["details"]["allowed_models"]


def test_the_periods_agree_with_the_check(database):
    assert allowed_words(check_of(database, "access_keys", "spend_limit_period")) == set(SPEND_LIMIT_PERIODS)


# ----------------------------------------------------------------- authentication by key

def test_a_key_opens_a_caller_route_by_bearer_or_x_api_key(caller_app, database):
    client = caller_app.test_client()
    token = user(client)
    key = create(client, token, allowed_models=["local/echo"])
    expected = {"user_id": str(user_id_of(database)), "access_key": key["id"], "allowed_models": ["local/echo"]}
    assert client.get(WHOAMI, headers=bearer(key["key"])).get_json() == expected
    assert client.get(WHOAMI, headers={"x-api-key": key["key"]}).get_json() == expected
    assert listed(client, token)["access_keys"][0]["last_used_at"] is not None


def test_an_access_token_opens_a_caller_route_too(caller_app, database):
    client = caller_app.test_client()
    token = user(client)
    assert client.get(WHOAMI, headers=bearer(token)).get_json() == {
        "user_id": str(user_id_of(database)), "access_key": None, "allowed_models": None}
    assert client.get(WHOAMI, headers={"x-api-key": token}).status_code == 200
    client.post("/api/v1/auth/logout", headers=bearer(token))
    assert_error(client.get(WHOAMI, headers=bearer(token)), 401, "invalid_token")


@pytest.mark.parametrize("headers, code", [
    ({}, "unauthorized"),
    (bearer("qm-" + "A" * 43), "invalid_token"),
    ({"x-api-key": "qm-" + "A" * 43}, "invalid_token"),
    ({"Authorization": "Basic qm-abc"}, "invalid_token"),
    (bearer("qm-"), "invalid_token"),
])
def test_no_key_or_an_unknown_one_is_401(caller_app, headers, code):
    assert_error(caller_app.test_client().get(WHOAMI, headers=headers), 401, code)


def test_revocation_is_immediate(caller_app):
    client = caller_app.test_client()
    token = user(client)
    key = create(client, token)
    assert client.get(WHOAMI, headers=bearer(key["key"])).status_code == 200
    client.delete(f"{ACCESS_KEYS}/{key['id']}", headers=bearer(token))
    assert_error(client.get(WHOAMI, headers=bearer(key["key"])), 401, "invalid_token")


def test_an_expired_key_is_refused(caller_app, database):
    client = caller_app.test_client()
    token = user(client)
    key = create(client, token, expires_at=in_an_hour())
    assert client.get(WHOAMI, headers=bearer(key["key"])).status_code == 200
    database.query("UPDATE access_keys SET expires_at = now() - interval '1 second'")
    assert_error(client.get(WHOAMI, headers=bearer(key["key"])), 401, "invalid_token")
    assert [entry["id"] for entry in listed(client, token)["access_keys"]] == [key["id"]]


def test_a_deactivated_users_key_is_refused(caller_app, database):
    client = caller_app.test_client()
    key = create(client, user(client))
    database.query("UPDATE users SET is_active = false")
    assert_error(client.get(WHOAMI, headers=bearer(key["key"])), 401, "invalid_token")


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/v1/auth/me"),
    ("GET", "/api/v1/balance"),
    ("GET", ACCESS_KEYS),
    ("POST", ACCESS_KEYS),
    ("GET", "/api/v1/keys"),
    ("GET", "/api/v1/chat/sessions"),
    ("GET", "/api/v1/activity"),
])
def test_the_account_api_refuses_access_keys(client, token, method, path):
    key = create(client, token)["key"]
    for headers in (bearer(key), {"x-api-key": key}):
        response = client.open(path, method=method, json={"name": "escalated"}, headers=headers)
        assert response.status_code == 401, response.get_json()
        assert key not in response.get_data(as_text=True)


def test_a_key_may_be_held_to_its_models(client, database):
    """allowed_models holds full ids; a call naming a model bare is checked as
    the id it resolves to, before anything is held."""
    def call(credential, model):
        return client.post("/v1/chat/completions", headers=bearer(credential),
                           json={"model": model, "messages": [{"role": "user", "content": "Hi"}]})

    token = user(client, funds="1")
    narrow = create(client, token, allowed_models=["local/echo"])["key"]
    wide = create(client, token)["key"]
    for model in ("local/echo", "echo"):
        response = call(narrow, model)
        assert response.status_code == 200 and response.get_json()["model"] == "local/echo"
    holds = database.query("SELECT count(*) FROM transactions WHERE type = 'hold'")
    for model in ("local/reverse", "reverse"):
        refused = call(narrow, model)
        assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "model_not_allowed"
    assert database.query("SELECT count(*) FROM transactions WHERE type = 'hold'") == holds
    for credential in (wide, token):
        response = call(credential, "reverse")
        assert response.status_code == 200 and response.get_json()["model"] == "local/reverse"


def test_each_key_has_its_own_rate_limit(settings):
    app = create_app({**settings, "RATELIMIT_ENABLED": True, "RATE_LIMIT_ACCESS_KEY": "3 per minute"})
    @rate_limit(lambda: current_app.config["RATE_LIMIT_ACCESS_KEY"], key=access_key_subject)
    @caller(ACCOUNT_OR_KEY)
    def limited(caller):
        return whoami(caller)

    app.add_url_rule("/test/limited", endpoint="limited", view_func=serve(limited))
    try:
        client = app.test_client()
        token = user(client)
        first, second = create(client, token)["key"], create(client, token)["key"]
        assert [client.get("/test/limited", headers=bearer(first)).status_code for _ in range(3)] == [200] * 3
        limited_answer = client.get("/test/limited", headers={"x-api-key": first})
        assert_error(limited_answer, 429, "rate_limited")
        assert limited_answer.headers["Retry-After"].isdigit()
        assert client.get("/test/limited", headers=bearer(second)).status_code == 200
        assert client.get("/test/limited", headers=bearer(token)).status_code == 200
    finally:
        close_app(app)


# ----------------------------------------------------------------- the key stays secret

def test_the_key_reaches_no_log_audit_row_or_error(caller_app, database, server_log, caplog):
    caplog.set_level(logging.DEBUG)
    client = caller_app.test_client()
    token = user(client)
    key = create(client, token, name="secret keeper")
    client.get(WHOAMI, headers=bearer(key["key"]))
    client.delete(f"{ACCESS_KEYS}/{key['id']}", headers=bearer(token))
    refused = client.get(WHOAMI, headers=bearer(key["key"]))
    assert_error(refused, 401, "invalid_token")
    unknown = "qm-" + "Z" * 43
    assert unknown not in client.get(WHOAMI, headers={"x-api-key": unknown}).get_data(as_text=True)
    assert key["key"] not in refused.get_data(as_text=True)

    key_hash = hashlib.sha256(key["key"].encode()).hexdigest()
    secrets = [key["key"], key["key"][3:], unknown, key_hash]
    audit = database.query("SELECT table_name, operation, old_row::text, new_row::text FROM audit_log "
                           "WHERE table_name = 'access_keys' ORDER BY id")
    assert [(table, operation) for table, operation, _, _ in audit] == [
        ("access_keys", "INSERT"), ("access_keys", "UPDATE")]
    assert all("key_hash" not in (row or "") for _, _, *rows in audit for row in rows)
    assert_no_secrets(repr(audit), secrets, "the audit log")
    formatter = JSONFormatter()
    with caller_app.test_request_context():
        app_log = caplog.text + "\n".join(formatter.format(record) for record in caplog.records)
    assert_no_secrets(app_log, secrets, "the app's log")
    assert_no_secrets(server_log(), secrets, "the PostgreSQL server's log")
