"""Operators and the catalog: add, change, disable and enable a model, each
checked as a catalog file is and audited with its reason."""
import pytest

from tests.support import admin, assert_error, bearer, new_session, send, user

MODELS = "/api/v1/admin/models"
NEW_MODEL = {"id": "local/parrot", "provider": "local", "name": "Local Parrot", "context_window": 4096,
             "max_output_tokens": 256, "input_price_per_mtok": "0.01", "output_price_per_mtok": "0.02",
             "prices_as_of": "2026-11-01", "capabilities": ["cheap"]}


def _actions(database):
    return database.query("SELECT action, target_model, reason FROM admin_actions WHERE admin_id IS NOT NULL "
                          "ORDER BY id")


def _listed(client, token):
    return {model["id"] for model in client.get("/v1/models", headers=bearer(token)).get_json()["data"]}


def test_a_disabled_model_leaves_the_catalog_and_new_calls_then_comes_back(app, client, database):
    root = admin(app, client)
    ada = user(client, "ada", funds="5.00")
    session = new_session(client, ada, "local/echo")
    disabled = client.post(f"{MODELS}/local/echo/disable", json={"reason": "provider outage"}, headers=bearer(root))
    assert disabled.status_code == 200, disabled.get_json()
    assert disabled.get_json()["model"]["active"] is False
    assert "local/echo" not in _listed(client, ada)
    assert client.get("/api/v1/models/local/echo").status_code == 404
    called = client.post("/v1/chat/completions", headers=bearer(ada),
                         json={"model": "local/echo", "messages": [{"role": "user", "content": "Hi"}]})
    assert called.status_code == 404 and called.get_json()["error"]["code"] == "model_not_found"
    assert_error(send(client, ada, session), 409, "model_unavailable")
    # History keeps it.
    assert client.get(f"/api/v1/chat/sessions/{session}", headers=bearer(ada)).get_json()["model_id"] == "local/echo"
    enabled = client.post(f"{MODELS}/local/echo/enable", json={"reason": "outage over"}, headers=bearer(root))
    assert enabled.status_code == 200 and "local/echo" in _listed(client, ada)
    assert send(client, ada, session).status_code == 201
    assert _actions(database) == [("disable_model", "local/echo", "provider outage"),
                                  ("enable_model", "local/echo", "outage over")]


def test_an_added_model_is_served_and_a_change_is_checked_whole(app, client, database):
    root = admin(app, client)
    ada = user(client, "ada", funds="5.00")
    added = client.post(MODELS, json={"model": NEW_MODEL, "reason": "new offline model"}, headers=bearer(root))
    assert added.status_code == 201, added.get_json()
    assert added.get_json()["model"]["input_price_per_mtok"] == "0.0100000000"
    assert "local/parrot" in _listed(client, ada)
    again = client.post(MODELS, json={"model": NEW_MODEL, "reason": "twice"}, headers=bearer(root))
    assert_error(again, 409, "model_exists")
    changed = client.patch(f"{MODELS}/local/parrot", json={"changes": {"description": "Says it back."},
                                                           "reason": "describe it"}, headers=bearer(root))
    assert changed.status_code == 200, changed.get_json()
    assert client.get("/api/v1/models/local/parrot").get_json()["description"] == "Says it back."
    (before, after), = database.query("SELECT details->'before'->>'description', details->'after'->>'description'"
                                      " FROM admin_actions WHERE action = 'change_model'")
    assert (before, after) == ("", "Says it back.")
    assert _actions(database) == [("add_model", "local/parrot", "new offline model"),
                                  ("change_model", "local/parrot", "describe it")]


@pytest.mark.parametrize("changes, field", [
    ({"input_price_per_mtok": "-1"}, "changes.input_price_per_mtok"),
    ({"output_price_per_mtok": "0.00000000001"}, "changes.output_price_per_mtok"),
    ({"output_price_per_mtok": True}, "changes.output_price_per_mtok"),
    ({"max_output_tokens": 100000}, "changes"),
    ({"colour": "red"}, "changes.colour"),
    ({"id": "local/other"}, "changes.id"),
    ({"aliases": ["reverse"]}, "changes.aliases"),
    ({"deployments": [{"provider": "nowhere", "model": "x"}]}, "changes.deployments.0.provider"),
])
def test_a_bad_change_is_refused_naming_the_field_and_changes_nothing(app, client, database, changes, field):
    root = admin(app, client)
    before = database.query("SELECT * FROM models ORDER BY id")
    refused = client.patch(f"{MODELS}/local/echo", json={"changes": changes, "reason": "try"}, headers=bearer(root))
    details = assert_error(refused, 400, "validation_error")["details"]
    assert any(name.startswith(field) for name in details), details
    assert database.query("SELECT * FROM models ORDER BY id") == before
    assert _actions(database) == []


def test_an_unknown_model_and_a_missing_reason_are_refused(app, client, database):
    root = admin(app, client)
    assert_error(client.post(f"{MODELS}/local/nothing/disable", json={"reason": "x"}, headers=bearer(root)),
                 404, "not_found")
    assert_error(client.patch(f"{MODELS}/local/nothing", json={"changes": {"name": "x"}, "reason": "x"},
                              headers=bearer(root)), 404, "not_found")
    refused = client.post(f"{MODELS}/local/echo/disable", json={}, headers=bearer(root))
    assert "reason" in assert_error(refused, 400, "validation_error")["details"]
    ada = user(client, "ada")
    assert_error(client.post(f"{MODELS}/local/echo/disable", json={"reason": "x"}, headers=bearer(ada)),
                 403, "admin_required")
    assert database.query("SELECT bool_and(is_active) FROM models") == [(True,)]
    assert _actions(database) == []
