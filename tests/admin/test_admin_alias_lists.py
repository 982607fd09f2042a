"""Operators and alias lists: made, replaced and removed through the admin
API, checked as a catalog file's are, each audited with its reason; a bad
one is refused naming the field and changes nothing."""
import pytest

from tests.support import admin, assert_error, bearer, user

LISTS = "/api/v1/admin/alias-lists"


def _call(client, token, model):
    return client.post("/v1/chat/completions", headers=bearer(token),
                       json={"model": model, "messages": [{"role": "user", "content": "Hi there"}]})


def _state(database):
    return (database.query("SELECT alias, models FROM alias_lists ORDER BY alias"),
            database.query("SELECT action, reason, details FROM admin_actions WHERE admin_id IS NOT NULL ORDER BY id"))


def test_an_alias_list_is_made_replaced_and_removed_each_audited(app, client, database):
    root = admin(app, client)
    ada = user(client, "ada", funds="5.00")
    made = client.post(LISTS, json={"alias": "house-mix", "models": ["local/echo", "local/reverse"],
                                     "reason": "a default"}, headers=bearer(root))
    assert made.status_code == 201, made.get_json()
    assert (made.get_json()["alias"], made.get_json()["models"]) == ("house-mix", ["local/echo", "local/reverse"])
    assert _call(client, ada, "house-mix").get_json()["model"] == "local/echo"  # its first model serves it
    again = client.post(LISTS, json={"alias": "house-mix", "models": ["local/reverse"], "reason": "r"},
                        headers=bearer(root))
    assert_error(again, 409, "alias_list_exists")
    replaced = client.patch(f"{LISTS}/house-mix", json={"models": ["local/reverse"], "reason": "reverse first"},
                            headers=bearer(root))
    assert replaced.status_code == 200, replaced.get_json()
    assert _call(client, ada, "house-mix").get_json()["model"] == "local/reverse"
    assert [entry["alias"] for entry in client.get(LISTS, headers=bearer(root)).get_json()["alias_lists"]] == [
        "house-mix"]
    dropped = client.delete(f"{LISTS}/house-mix", json={"reason": "not wanted"}, headers=bearer(root))
    assert dropped.status_code == 204
    called = _call(client, ada, "house-mix")
    assert called.status_code == 404 and called.get_json()["error"]["code"] == "model_not_found"
    lists, actions = _state(database)
    assert lists == []
    assert actions == [
        ("add_alias_list", "a default", {"alias": "house-mix", "before": None,
                                         "after": ["local/echo", "local/reverse"]}),
        ("change_alias_list", "reverse first", {"alias": "house-mix", "before": ["local/echo", "local/reverse"],
                                             "after": ["local/reverse"]}),
        ("drop_alias_list", "not wanted", {"alias": "house-mix", "before": ["local/reverse"]})]


@pytest.mark.parametrize(("alias", "body", "field"), [
    ("mix", {"models": ["local/nothing"], "reason": "r"}, "models"),  # no such model
    ("echo", {"models": ["local/reverse"], "reason": "r"}, "alias"),  # local/echo's name
    ("bad name!", {"models": ["local/echo"], "reason": "r"}, "alias"),
    ("mix", {"models": ["local/echo"] * 2, "reason": "r"}, "models"),  # twice
    ("mix", {"models": [f"local/m{n}" for n in range(7)], "reason": "r"}, "models"),  # more than a call may name
    ("mix", {"models": [], "reason": "r"}, "models"),
    ("mix", {"models": ["local/echo"]}, "reason"),
    ("mix", {"models": ["local/echo"], "reason": "  "}, "reason"),
])
def test_a_bad_alias_list_is_refused_naming_the_field_and_changes_nothing(app, client, database, alias, body, field):
    root = admin(app, client)
    before = _state(database)
    refused = client.post(LISTS, json={"alias": alias, **body}, headers=bearer(root))
    assert_error(refused, 400, "validation_error")
    assert field in refused.get_json()["error"]["details"], refused.get_json()
    assert _state(database) == before


def test_only_an_admin_writes_alias_lists_and_only_a_list_is_removed(app, client, database):
    root = admin(app, client)
    ada = user(client, "ada")
    assert_error(client.post(LISTS, json={"alias": "mix", "models": ["local/echo"], "reason": "r"},
                             headers=bearer(ada)), 403, "admin_required")
    assert_error(client.patch(f"{LISTS}/mix", json={"models": ["local/echo"], "reason": "r"}, headers=bearer(root)),
                 404, "not_found")
    assert_error(client.get(LISTS, headers=bearer(ada)), 403, "admin_required")
    assert_error(client.delete(f"{LISTS}/mix", json={"reason": "r"}, headers=bearer(root)), 404, "not_found")
    assert _state(database) == ([], [])
