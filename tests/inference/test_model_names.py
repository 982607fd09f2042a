"""Model names as clients write them on the inference API: a full id, an alias
from the catalog (claude-opus-4) or a bare provider name (gpt-4.1, echo) that
one active model has. The call is held, billed and answered as the full id it
resolves to, and the access key's allowed_models are checked against that id.
A name that resolves to no model, or to more than one, is each format's 404,
before anything is held. /v1/models shows each model's features, input
modalities and aliases."""
import json

from decimal import Decimal

import pytest

from app.errors import UnknownModel
from app.extensions import db
from tests.support import HOUSE_ANTHROPIC, ROOT, add_models, bearer, readme_ledger_query, user

CATALOG = {entry["id"]: entry for entry in json.loads((ROOT / "catalog.json").read_text())["models"]}
ECHO = "local/echo"
OPUS = "anthropic/claude-opus-4-20250514"
FORMATS = {
    "openai": ("/v1/chat/completions", {}),
    "anthropic": ("/v1/messages", {"max_tokens": 20}),
}


@pytest.fixture
def settings(stubbed_settings):
    return {**stubbed_settings, "ANTHROPIC_API_KEY": HOUSE_ANTHROPIC}


@pytest.fixture
def token(client):
    return user(client, funds="5")


def call(client, credential, model, wire_format="openai"):
    path, extra = FORMATS[wire_format]
    return client.post(path, headers=bearer(credential),
                       json={"model": model, "messages": [{"role": "user", "content": "Hi"}], **extra})


def ledger(database):
    """Every hold and release: (type, model id, metadata's model id)."""
    return database.query("SELECT type, model_id, metadata->>'model_id' FROM transactions "
                          "WHERE type <> 'deposit' ORDER BY id")


def new_key(client, token, **fields):
    response = client.post("/api/v1/access-keys", json={"name": "program", **fields}, headers=bearer(token))
    assert response.status_code == 201, response.get_json()
    return response.get_json()["key"]


def assert_not_found(response, wire_format, name):
    """Each format's 404, whose message names nothing but what the client sent."""
    assert response.status_code == 404, response.get_data(as_text=True)
    message = f"{UnknownModel.message} (model: {name})"
    if wire_format == "openai":
        assert response.get_json() == {"error": {"message": message, "type": "not_found_error",
                                                 "code": "model_not_found", "param": None}}
    else:
        assert response.get_json() == {"type": "error", "error": {"type": "not_found_error", "message": message}}


def assert_billed_as(database, model_id):
    assert ledger(database) == [("hold", model_id, model_id), ("release", model_id, None)]
    assert database.query(readme_ledger_query()) == []


# ------------------------------------------------------------- names that resolve

@pytest.mark.parametrize("wire_format", FORMATS)
def test_a_bare_name_is_held_billed_and_answered_as_the_full_id(client, token, database, wire_format):
    response = call(client, token, "echo", wire_format)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["model"] == ECHO
    assert_billed_as(database, ECHO)


@pytest.mark.parametrize("wire_format", FORMATS)
def test_a_catalog_alias_is_held_billed_and_answered_as_the_full_id(client, token, database, stubs, wire_format):
    assert "claude-opus-4" in CATALOG[OPUS]["aliases"]
    response = call(client, token, "claude-opus-4", wire_format)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["model"] == OPUS
    assert [sent["body"]["model"] for sent in stubs[1].requests] == ["claude-opus-4-20250514"]
    assert_billed_as(database, OPUS)


def test_the_providers_own_name_of_a_dated_model_resolves(client, token, database, stubs):
    response = call(client, token, "claude-opus-4-20250514", "anthropic")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["model"] == OPUS
    assert_billed_as(database, OPUS)


def test_an_alias_added_by_a_catalog_load_resolves(client, token, database):
    add_models(database.owner_url, {**CATALOG[ECHO], "aliases": ["echo-latest"]})
    response = call(client, token, "echo-latest")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["model"] == ECHO
    assert_billed_as(database, ECHO)


# ------------------------------------------------------------- names that do not

TWIN = {**CATALOG[ECHO], "id": "openai/echo", "provider": "openai", "name": "Echo of another provider"}


@pytest.mark.parametrize("wire_format", FORMATS)
@pytest.mark.parametrize("name", ["claude-sonnet-4-5", "gpt-5", "anthropic/echo", "ECHO", "local/"])
def test_an_unknown_name_is_the_formats_404_and_holds_nothing(client, token, database, wire_format, name):
    assert_not_found(call(client, token, name, wire_format), wire_format, name)
    assert ledger(database) == []


@pytest.mark.parametrize("wire_format", FORMATS)
def test_a_bare_name_two_active_models_share_is_refused(client, token, database, wire_format):
    add_models(database.owner_url, TWIN)
    assert_not_found(call(client, token, "echo", wire_format), wire_format, "echo")
    assert ledger(database) == []
    # Each still answers to its full id.
    response = call(client, token, ECHO, wire_format)
    assert response.status_code == 200 and response.get_json()["model"] == ECHO
    assert_billed_as(database, ECHO)


def test_a_bare_name_counts_only_active_models(client, token, database):
    add_models(database.owner_url, {**TWIN, "active": False})
    response = call(client, token, "echo")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["model"] == ECHO


def test_an_inactive_model_is_unknown_by_any_name(client, token, database):
    add_models(database.owner_url, {**CATALOG[ECHO], "aliases": ["echo-latest"], "active": False})
    for name in (ECHO, "echo-latest", "echo"):
        assert_not_found(call(client, token, name), "openai", name)
    assert ledger(database) == []


# ------------------------------------------------------------- the access key's models

@pytest.mark.parametrize("wire_format", FORMATS)
def test_a_keys_allowed_models_are_checked_against_the_resolved_id(client, token, database, wire_format):
    add_models(database.owner_url, {**CATALOG[ECHO], "aliases": ["echo-latest"]})
    narrow = new_key(client, token, allowed_models=[ECHO])
    for name in (ECHO, "echo", "echo-latest"):
        response = call(client, narrow, name, wire_format)
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["model"] == ECHO
    holds = database.query("SELECT count(*) FROM transactions WHERE type = 'hold'")[0][0]
    for name in ("local/reverse", "reverse"):
        response = call(client, narrow, name, wire_format)
        assert response.status_code == 403, response.get_json()
        error = response.get_json()["error"]
        assert error["type"] == "permission_error"
        if wire_format == "openai":
            assert error["code"] == "model_not_allowed"
    assert database.query("SELECT count(*) FROM transactions WHERE type = 'hold'")[0][0] == holds
    assert database.query(readme_ledger_query()) == []


def test_a_key_and_a_token_without_limits_reach_every_model(client, token):
    wide = new_key(client, token)
    for credential in (wide, token):
        response = call(client, credential, "reverse")
        assert response.status_code == 200 and response.get_json()["model"] == "local/reverse"


def test_an_unknown_name_is_404_even_for_a_narrow_key(client, token, database):
    narrow = new_key(client, token, allowed_models=[ECHO])
    assert_not_found(call(client, narrow, "nope"), "openai", "nope")
    assert ledger(database) == []


# ------------------------------------------------------------- /v1/models

def test_the_model_list_shows_features_modalities_and_aliases(client, token):
    response = client.get("/v1/models", headers=bearer(token))
    assert response.status_code == 200
    listed = {model["id"]: model for model in response.get_json()["data"]}
    assert set(listed) == set(CATALOG)
    for model_id, entry in CATALOG.items():
        shown = listed[model_id]
        assert (shown["features"], shown["input_modalities"], shown["aliases"]) == (
            entry.get("features", []), entry.get("input_modalities", ["text"]), entry.get("aliases", []))
    assert listed[ECHO]["features"] == [] and listed[ECHO]["input_modalities"] == ["text"]
    assert listed["openai/gpt-4o"]["features"] == ["tools", "structured_output", "images", "caching"]
    assert listed["openai/gpt-4o"]["input_modalities"] == ["text", "image"]
    assert listed["openai/o3-mini"]["features"] == ["tools", "structured_output", "caching", "reasoning"]
    assert listed["openai/o3-mini"]["input_modalities"] == ["text"]
    assert listed[OPUS]["aliases"] == ["claude-opus-4", "claude-opus-4-0"]


def test_the_call_context_carries_features_and_modalities(app, token, database):
    user_id = database.query("SELECT id FROM users")[0][0]
    with app.app_context():
        context = db.model_call_context(user_id, "claude-opus-4", None, 1024)
    assert context["model_id"] == OPUS
    assert context["features"] == ["tools", "structured_output", "images", "caching", "reasoning"]
    assert context["input_modalities"] == ["text", "image"]
    assert (context["cache_read_price_per_mtok"], context["cache_write_price_per_mtok"],
            context["cache_write_1h_price_per_mtok"]) == (Decimal("1.5"), Decimal("18.75"), Decimal("30"))
