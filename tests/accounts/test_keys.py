"""The key vault (SPEC §10, endpoints 6–8): encrypted, bound, rotated, never shown."""
import base64
import logging
import os
import uuid

import pytest

from app import close_app, create_app
from app.observability import JSONFormatter
from database.vault import Vault, VaultError
from app.alerts import deliver_due
from tests.stubs import WebhookReceiver, verify_signature
from tests.support import assert_error, bearer, login, new_session, raise_alert, register, send, user_id_of
from tests.support import user as registered_user

KEYS = "/api/v1/keys"
OPENAI_KEY = "sk-proj-Abc123_secretVALUE-0000wxyz"
ANTHROPIC_KEY = "sk-ant-api03-Zyx987_otherSECRET-9999abcd"
MODELS = {"openai": "openai/gpt-4o-mini", "anthropic": "anthropic/claude-3-5-haiku-20241022"}


@pytest.fixture
def settings(stubbed_settings):
    """Chat calls reach the provider stubs, which show the key each call used."""
    return stubbed_settings


@pytest.fixture
def bob(client):
    register(client, email="bob@example.com", username="bob")
    return login(client, email="bob@example.com")["access_token"]


def add_key(client, token, api_key=OPENAI_KEY, provider="openai", **extra):
    return client.post(KEYS, json={"provider": provider, "api_key": api_key, **extra}, headers=bearer(token))


def keys_setting(*entries):
    return ",".join(f"{kid}:{base64.b64encode(key).decode()}" for kid, key in entries)


# ------------------------------------------------------------------ the API

def test_a_stored_key_shows_only_its_last_four(client, token, database):
    response = add_key(client, token, label="work")
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"id", "provider", "label", "last4", "created_at", "last_used_at"}
    assert body["provider"] == "openai" and body["label"] == "work" and body["last4"] == "wxyz"
    assert body["last_used_at"] is None
    assert response.headers["Location"] == f"/api/v1/keys/{body['id']}"
    listed = client.get(KEYS, headers=bearer(token)).get_json()
    assert listed == {"keys": [body], "next_cursor": None}
    stored = database.query("SELECT encrypted_key, encryption_kid, length(nonce) FROM api_keys")[0]
    assert OPENAI_KEY.encode() not in bytes(stored[0])
    assert stored[1:] == ("test1", 12)


def test_several_keys_per_provider_but_never_the_same_key_twice(client, token, database):
    assert add_key(client, token).status_code == 201
    assert add_key(client, token, OPENAI_KEY + "2").status_code == 201
    assert_error(add_key(client, token, label="again"), 409, "duplicate_key")
    assert_error(add_key(client, token, provider="anthropic"), 409, "duplicate_key")
    assert database.query("SELECT count(*) FROM api_keys") == [(2,)]


def test_duplicates_are_checked_per_user(client, token, bob):
    assert add_key(client, token).status_code == 201
    assert add_key(client, bob).status_code == 201, "another user's key must not be revealed"


def test_keys_are_private(client, token, bob, database):
    key_id = add_key(client, token).get_json()["id"]
    assert client.get(KEYS, headers=bearer(bob)).get_json()["keys"] == []
    assert_error(client.delete(f"{KEYS}/{key_id}", headers=bearer(bob)), 404, "not_found")
    assert database.query("SELECT count(*) FROM api_keys") == [(1,)]


def test_deleting_a_key_destroys_its_ciphertext(client, token, database):
    key_id = add_key(client, token).get_json()["id"]
    response = client.delete(f"{KEYS}/{key_id}", headers=bearer(token))
    assert response.status_code == 204 and response.get_data() == b""
    assert database.query("SELECT count(*) FROM api_keys") == [(0,)]
    assert_error(client.delete(f"{KEYS}/{key_id}", headers=bearer(token)), 404, "not_found")


@pytest.mark.parametrize("key_id", ["not-a-uuid", "1", "%00", "' OR 1=1 --", str(uuid.uuid4())])
def test_unknown_key_ids_are_not_found(client, token, key_id):
    assert_error(client.delete(f"{KEYS}/{key_id}", headers=bearer(token)), 404, "not_found")


BAD_BODIES = {
    "google provider": {"provider": "google", "api_key": OPENAI_KEY},
    "local provider": {"provider": "local", "api_key": OPENAI_KEY},
    "provider case": {"provider": "OpenAI", "api_key": OPENAI_KEY},
    "missing key": {"provider": "openai"},
    "missing provider": {"api_key": OPENAI_KEY},
    "short key": {"provider": "openai", "api_key": "sk-short"},
    "long key": {"provider": "openai", "api_key": "sk-" + "a" * 254},
    "space in key": {"provider": "openai", "api_key": "sk-proj-abc def ghi jkl mno"},
    "NUL in key": {"provider": "openai", "api_key": "sk-proj-abcdefghijkl\x00mno"},
    "quote in key": {"provider": "openai", "api_key": "sk-proj-abcdefgh'; DROP TABLE api_keys;--"},
    "number key": {"provider": "openai", "api_key": 12345678901234567890},
    "null key": {"provider": "openai", "api_key": None},
    "empty label": {"provider": "openai", "api_key": OPENAI_KEY, "label": ""},
    "long label": {"provider": "openai", "api_key": OPENAI_KEY, "label": "x" * 101},
    "NUL label": {"provider": "openai", "api_key": OPENAI_KEY, "label": "a\x00b"},
    "user_id field": {"provider": "openai", "api_key": OPENAI_KEY, "user_id": str(uuid.uuid4())},
    "last4 field": {"provider": "openai", "api_key": OPENAI_KEY, "last4": "0000"},
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_keys_are_refused_without_echoing_them(client, token, database, body):
    response = client.post(KEYS, json=body, headers=bearer(token))
    assert_error(response, 400, "validation_error")
    if isinstance(body.get("api_key"), str):
        assert body["api_key"] not in response.get_data(as_text=True)
    assert database.query("SELECT count(*) FROM api_keys") == [(0,)]


def test_keys_need_a_token(client):
    assert_error(client.get(KEYS), 401, "unauthorized")
    assert_error(client.post(KEYS, json={"provider": "openai", "api_key": OPENAI_KEY}), 401, "unauthorized")


# ------------------------------------------------------- using a stored key
# Through the path chat takes: the provider stub sees the key billing sent.

def key_sent(client, token, provider, stub):
    """The key the provider received with one chat message to one of its models."""
    response = send(client, token, new_session(client, token, MODELS[provider]))
    assert response.status_code == 201, response.get_json()
    headers = stub.requests[-1]["headers"]
    return headers["Authorization"].removeprefix("Bearer ") if provider == "openai" else headers["x-api-key"]


def fund(client, token):
    assert client.post("/api/v1/balance/funds", json={"amount": "10"}, headers=bearer(token)).status_code == 201


def assert_key_unusable(response, stub):
    error = assert_error(response, 500, "internal_error")
    assert "stored key" in error["message"]
    assert stub.requests == [], "nothing went to the provider"


def test_the_newest_key_is_given_and_its_use_recorded(client, token, openai_stub, anthropic_stub):
    fund(client, token)
    add_key(client, token, OPENAI_KEY)
    add_key(client, token, OPENAI_KEY + "new")
    add_key(client, token, ANTHROPIC_KEY, provider="anthropic")
    assert key_sent(client, token, "openai", openai_stub) == OPENAI_KEY + "new"
    assert key_sent(client, token, "anthropic", anthropic_stub) == ANTHROPIC_KEY
    used = {row["last4"]: row["last_used_at"] for row in client.get(KEYS, headers=bearer(token)).get_json()["keys"]}
    assert used["wxyz"] is None and used["znew"] is not None and used["abcd"] is not None


def test_a_key_serves_only_its_provider(client, token, anthropic_stub):
    fund(client, token)
    add_key(client, token)
    refused = client.post("/api/v1/chat/sessions", json={"model_id": MODELS["anthropic"]}, headers=bearer(token))
    assert assert_error(refused, 422, "missing_api_key")["details"]["provider"] == "anthropic"
    assert anthropic_stub.requests == []


def test_a_tampered_ciphertext_fails_cleanly(client, token, database, openai_stub):
    fund(client, token)
    add_key(client, token)
    database.query("UPDATE api_keys SET encrypted_key = set_byte(encrypted_key, 0, get_byte(encrypted_key, 0) # 1)")
    response = send(client, token, new_session(client, token, MODELS["openai"]))
    assert_key_unusable(response, openai_stub)
    assert OPENAI_KEY not in response.get_data(as_text=True)


def test_a_ciphertext_copied_to_another_user_does_not_decrypt(client, token, bob, database, openai_stub):
    fund(client, bob)
    add_key(client, token)
    add_key(client, bob, OPENAI_KEY + "bob")
    database.query("""
        UPDATE api_keys AS theirs
           SET encrypted_key = mine.encrypted_key, nonce = mine.nonce
          FROM api_keys AS mine
         WHERE mine.user_id = %(ada)s AND theirs.user_id = %(bob)s
    """, {"ada": user_id_of(database), "bob": user_id_of(database, "bob@example.com")})
    assert_key_unusable(send(client, bob, new_session(client, bob, MODELS["openai"])), openai_stub)


def test_a_ciphertext_moved_to_another_provider_does_not_decrypt(client, token, database, anthropic_stub):
    fund(client, token)
    add_key(client, token)
    database.query("UPDATE api_keys SET provider = 'anthropic'")
    assert_key_unusable(send(client, token, new_session(client, token, MODELS["anthropic"])), anthropic_stub)


def test_a_missing_encryption_key_fails_cleanly(client, token, settings, openai_stub, caplog):
    fund(client, token)
    add_key(client, token)
    other = create_app({**settings, "ENCRYPTION_KEYS": keys_setting(("other", os.urandom(32)))})
    other_client = other.test_client()
    assert_key_unusable(send(other_client, token, new_session(other_client, token, MODELS["openai"])), openai_stub)
    assert "'test1' is not in ENCRYPTION_KEYS" in caplog.text
    close_app(other)


def test_the_vault_round_trips_and_binds():
    vault = Vault([("a", os.urandom(32))], "f" * 40)
    sealed = vault.encrypt(OPENAI_KEY, "user-1", "openai")
    assert vault.decrypt(*sealed, "user-1", "openai") == OPENAI_KEY
    for user, provider in [("user-2", "openai"), ("user-1", "anthropic")]:
        with pytest.raises(VaultError):
            vault.decrypt(*sealed, user, provider)
    assert vault.encrypt(OPENAI_KEY, "user-1", "openai")[1] != sealed[1], "a fresh nonce every time"
    assert vault.fingerprint(OPENAI_KEY) == vault.fingerprint(OPENAI_KEY) != vault.fingerprint(ANTHROPIC_KEY)
    assert Vault([("a", os.urandom(32))], "g" * 40).fingerprint(OPENAI_KEY) != vault.fingerprint(OPENAI_KEY)


# ----------------------------------------------------------------- rotation

def test_rotation_moves_every_key_to_the_newest(settings, database, openai_stub, anthropic_stub):
    old, new = ("old", os.urandom(32)), ("new", os.urandom(32))
    before = create_app({**settings, "ENCRYPTION_KEYS": keys_setting(old)})
    client = before.test_client()
    register(client)
    token = login(client)["access_token"]
    add_key(client, token, OPENAI_KEY)
    add_key(client, token, ANTHROPIC_KEY, provider="anthropic")

    both = create_app({**settings, "ENCRYPTION_KEYS": keys_setting(new, old)})
    add_key(both.test_client(), token, OPENAI_KEY + "new")
    result = both.test_cli_runner().invoke(args=["keys", "rotate"])
    assert result.exit_code == 0, result.output
    assert "re-encrypted 2 keys under 'new'; 1 were already under it" in result.output
    assert database.query("SELECT DISTINCT encryption_kid FROM api_keys") == [("new",)]
    assert both.test_cli_runner().invoke(args=["keys", "rotate"]).output.startswith("re-encrypted 0 keys")

    after = create_app({**settings, "ENCRYPTION_KEYS": keys_setting(new)})
    fund(after.test_client(), token)
    assert key_sent(after.test_client(), token, "openai", openai_stub) == OPENAI_KEY + "new"
    assert key_sent(after.test_client(), token, "anthropic", anthropic_stub) == ANTHROPIC_KEY
    for app in (before, both, after):
        close_app(app)


def test_rotation_reseals_webhook_secrets_and_deliveries_still_sign_with_the_original(settings, database):
    old, new = ("old", os.urandom(32)), ("new", os.urandom(32))
    local = {**settings, "WEBHOOK_ALLOW_HTTP": True, "WEBHOOK_ALLOW_PRIVATE": True,
             "MIGRATE_DATABASE_URL": database.owner_url}
    receiver = WebhookReceiver()
    before = create_app({**local, "ENCRYPTION_KEYS": keys_setting(old)})
    client = before.test_client()
    token = registered_user(client)
    created = client.post("/api/v1/webhooks", json={"url": f"{receiver.url}/hook"}, headers=bearer(token))
    secret = created.get_json()["secret"]

    both = create_app({**local, "ENCRYPTION_KEYS": keys_setting(new, old)})
    result = both.test_cli_runner().invoke(args=["keys", "rotate"])
    assert result.exit_code == 0, result.output
    assert "re-encrypted 1 webhook secrets under 'new'; 0 were already under it" in result.output
    assert database.query("SELECT DISTINCT encryption_kid FROM webhooks") == [("new",)]
    again = both.test_cli_runner().invoke(args=["keys", "rotate"]).output
    assert "re-encrypted 0 webhook secrets under 'new'; 1 were already under it" in again
    assert secret not in result.output + again

    after = create_app({**local, "ENCRYPTION_KEYS": keys_setting(new)})  # the old key is gone
    assert raise_alert(database, user_id_of(database))
    with after.app_context():
        assert deliver_due(after.config) == 1
    [request] = receiver.received
    verify_signature(secret, request)
    receiver.stop()
    for app in (before, both, after):
        close_app(app)


def test_rotation_needs_the_owner_to_reseal_webhook_secrets(client, token, settings, database):
    client.post("/api/v1/webhooks", json={"url": "https://93.184.216.34/hook"}, headers=bearer(token))
    # MIGRATE_DATABASE_URL unset: the owner's login falls back to the service's, which may not rewrite secrets.
    both = create_app({**settings, "ENCRYPTION_KEYS": keys_setting(("new", os.urandom(32)), ("test1", b"k" * 32))})
    result = both.test_cli_runner().invoke(args=["keys", "rotate"])
    assert result.exit_code != 0
    assert "MIGRATE_DATABASE_URL must name the owner" in result.output
    assert database.query("SELECT encryption_kid FROM webhooks") == [("test1",)]
    close_app(both)


def test_rotation_reports_keys_it_cannot_decrypt(app, client, token, database, settings):
    add_key(client, token)
    client.post("/api/v1/webhooks", json={"url": "https://93.184.216.34/hook"}, headers=bearer(token))
    database.query("UPDATE api_keys SET encryption_kid = 'gone'")
    database.query("UPDATE webhooks SET encryption_kid = 'gone'")
    result = app.test_cli_runner().invoke(args=["keys", "rotate"])
    assert result.exit_code != 0
    assert "1 keys could not be decrypted" in result.output
    assert "1 webhook secrets could not be decrypted" in result.output
    assert OPENAI_KEY not in result.output


# ------------------------------------------------------------- no leaks

def test_the_plaintext_appears_in_no_log_audit_row_or_response(app, client, token, database, caplog, openai_stub):
    caplog.set_level(logging.DEBUG)
    fund(client, token)
    responses = [add_key(client, token, label="leak check"), client.get(KEYS, headers=bearer(token))]
    assert key_sent(client, token, "openai", openai_stub) == OPENAI_KEY
    responses.append(add_key(client, token))  # the duplicate's 409
    key_id = responses[0].get_json()["id"]
    responses.append(client.delete(f"{KEYS}/{key_id}", headers=bearer(token)))

    formatter = JSONFormatter()
    with app.test_request_context():
        logged = "\n".join(record.getMessage() + formatter.format(record) for record in caplog.records)
    assert caplog.records, "the requests were logged"
    audit = database.query("SELECT old_row::text, new_row::text FROM audit_log WHERE table_name = 'api_keys'")
    assert {row[0] is None for row in audit} == {True, False}, "insert, update and delete are audited"
    audit_text = "\n".join(str(row) for row in audit)
    assert "encrypted_key" not in audit_text and "key_fingerprint" not in audit_text and "nonce" not in audit_text
    for secret in (OPENAI_KEY, OPENAI_KEY[3:-4]):
        assert secret not in logged
        assert secret not in audit_text
        for response in responses:
            assert secret not in response.get_data(as_text=True)
