"""Operators and users: search, a user's file, credit and debit, disable and enable."""
import pytest

from tests.support import (admin, assert_error, bearer, readme_ledger_query, send, user, user_id_of)

USERS = "/api/v1/admin/users"


def _id(database, name):
    return str(user_id_of(database, f"{name}@example.com"))


def _actions(database):
    return database.query("SELECT action, target_user_id::text, reason FROM admin_actions"
                          " WHERE admin_id IS NOT NULL ORDER BY id")


def test_search_by_email_or_username_newest_first_in_pages(app, client, database):
    root = admin(app, client)
    for name in ("amy", "ann", "bob", "anna"):
        user(client, name)
    first = client.get(f"{USERS}?q=AN&limit=1", headers=bearer(root)).get_json()
    assert [found["username"] for found in first["users"]] == ["anna"]
    second = client.get(f"{USERS}?q=AN&limit=1&cursor={first['next_cursor']}", headers=bearer(root)).get_json()
    assert [found["username"] for found in second["users"]] == ["ann"] and second["next_cursor"] is None
    everyone = client.get(USERS, headers=bearer(root)).get_json()["users"]
    assert [found["username"] for found in everyone] == ["anna", "bob", "ann", "amy", "root"]
    assert [found["is_admin"] for found in everyone] == [False] * 4 + [True]
    # Wildcards are matched as themselves.
    assert client.get(f"{USERS}?q=%25", headers=bearer(root)).get_json()["users"] == []


def test_a_users_file_shows_balance_ledger_keys_and_calls_never_a_secret(app, client, database):
    root = admin(app, client)
    ada = user(client, "ada", funds="10.00")
    made = client.post("/api/v1/access-keys", json={"name": "ci"}, headers=bearer(ada)).get_json()
    assert send(client, ada).status_code == 201
    found = client.get(f"{USERS}/{_id(database, 'ada')}", headers=bearer(root))
    assert found.status_code == 200, found.get_json()
    body = found.get_json()
    assert body["user"]["email"] == "ada@example.com"
    assert [entry["type"] for entry in body["transactions"]] == ["release", "hold", "deposit"]
    assert body["balance"]["total_balance"] == "10.00"
    assert [key["name"] for key in body["access_keys"]] == ["ci"]
    assert made["key"] not in found.get_data(as_text=True) and "key_hash" not in body["access_keys"][0]
    (call,) = body["calls"]
    assert call["model_id"] == "local/echo" and call["open"] is False and call["charged"] is not None
    assert_error(client.get(f"{USERS}/00000000-0000-0000-0000-000000000000", headers=bearer(root)), 404, "not_found")


def test_a_credit_is_a_deposit_with_its_reason_and_audit_row_once_per_key(app, client, database):
    root = admin(app, client)
    ada = user(client, "ada")
    headers = {**bearer(root), "Idempotency-Key": "refund-ticket-41"}
    url = f"{USERS}/{_id(database, 'ada')}/credit"
    first = client.post(url, json={"amount": "1.2345", "reason": "ticket 41: bad answer"}, headers=headers)
    assert first.status_code == 201, first.get_json()
    again = client.post(url, json={"amount": "1.2345", "reason": "ticket 41: bad answer"}, headers=headers)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert first.get_json()["transaction"]["type"] == "deposit"
    assert client.get("/api/v1/balance", headers=bearer(ada)).get_json()["available_balance"] == "1.2345"
    assert _actions(database) == [("credit", _id(database, "ada"), "ticket 41: bad answer")]
    assert database.query("SELECT acting_user_id::text FROM audit_log WHERE table_name = 'transactions'") == [
        (_id(database, "root"),)]
    assert database.query(readme_ledger_query()) == []


def test_a_credit_above_max_topup_is_the_owners(app, client, database):
    root = admin(app, client)
    user(client, "ada")
    refused = client.post(f"{USERS}/{_id(database, 'ada')}/credit", json={"amount": "1000000", "reason": "x"},
                          headers=bearer(root))
    assert "amount" in assert_error(refused, 400, "validation_error")["details"]
    assert database.query("SELECT count(*) FROM transactions") == [(0,)]


def test_a_debit_lowers_the_total_and_never_goes_below_zero(app, client, database):
    root = admin(app, client)
    ada = user(client, "ada", funds="10.00")
    url = f"{USERS}/{_id(database, 'ada')}/debit"
    taken = client.post(url, json={"amount": "4", "reason": "chargeback 7"}, headers=bearer(root))
    assert taken.status_code == 201, taken.get_json()
    assert taken.get_json()["transaction"]["type"] == "debit"
    assert taken.get_json()["balance"]["total_balance"] == "6.00"
    past_zero = client.post(url, json={"amount": "6.01", "reason": "chargeback 8"}, headers=bearer(root))
    error = assert_error(past_zero, 400, "validation_error")
    assert "6.00" in error["details"]["amount"]
    assert client.get("/api/v1/balance", headers=bearer(ada)).get_json()["available_balance"] == "6.00"
    assert _actions(database) == [("debit", _id(database, "ada"), "chargeback 7")]
    # A debit is no call: it is in no usage figure.
    assert client.get("/api/v1/usage", headers=bearer(ada)).get_json()["usage"] == []
    assert database.query(readme_ledger_query()) == []


@pytest.mark.parametrize("action, body", [
    ("credit", {"amount": "1"}),
    ("debit", {"amount": "1"}),
    ("disable", {}),
    ("enable", {}),
])
def test_a_missing_or_blank_reason_is_refused_naming_it(app, client, database, action, body):
    root = admin(app, client)
    user(client, "ada", funds="5.00")
    url = f"{USERS}/{_id(database, 'ada')}/{action}"
    for reason in (None, "   "):
        sent = body if reason is None else {**body, "reason": reason}
        assert "reason" in assert_error(client.post(url, json=sent, headers=bearer(root)), 400,
                                        "validation_error")["details"]
    assert _actions(database) == []
    assert database.query("SELECT count(*), bool_and(is_active) FROM users") == [(2, True)]


@pytest.mark.parametrize("action, body", [
    ("credit", {"amount": "1", "reason": "me"}),
    ("debit", {"amount": "1", "reason": "me"}),
    ("disable", {"reason": "me"}),
    ("enable", {"reason": "me"}),
])
def test_an_admin_may_not_act_on_their_own_account(app, client, database, action, body):
    root = admin(app, client, funds="5.00")
    refused = client.post(f"{USERS}/{_id(database, 'root')}/{action}", json=body, headers=bearer(root))
    assert_error(refused, 403, "self_action_forbidden")
    assert _actions(database) == []
    assert database.query("SELECT total_balance FROM user_balance") == [(5,)]


@pytest.mark.parametrize("body, field", [
    ({"amount": "-1", "reason": "x"}, "amount"),
    ({"amount": "0", "reason": "x"}, "amount"),
    ({"amount": "0.00000000001", "reason": "x"}, "amount"),
    ({"amount": "1", "reason": "x", "extra": 1}, "extra"),
])
def test_bad_amounts_are_refused_naming_the_field(app, client, database, body, field):
    root = admin(app, client)
    user(client, "ada", funds="5.00")
    for action in ("credit", "debit"):
        refused = client.post(f"{USERS}/{_id(database, 'ada')}/{action}", json=body, headers=bearer(root))
        assert field in assert_error(refused, 400, "validation_error")["details"]
    assert database.query("SELECT count(*) FROM transactions") == [(1,)]


def test_disabling_stops_tokens_and_keys_at_once_and_keeps_the_money(app, client, database):
    root = admin(app, client)
    ada = user(client, "ada", funds="5.00")
    key = client.post("/api/v1/access-keys", json={"name": "ci"}, headers=bearer(ada)).get_json()["key"]
    url = f"{USERS}/{_id(database, 'ada')}"
    done = client.post(f"{url}/disable", json={"reason": "abuse report 3"}, headers=bearer(root))
    assert done.status_code == 200 and done.get_json()["user"]["is_active"] is False
    assert_error(client.get("/api/v1/balance", headers=bearer(ada)), 401, "invalid_token")
    assert client.get("/v1/models", headers=bearer(key)).status_code == 401
    assert client.get(url, headers=bearer(root)).get_json()["balance"]["available_balance"] == "5.00"
    again = client.post(f"{url}/enable", json={"reason": "appeal upheld"}, headers=bearer(root))
    assert again.status_code == 200 and again.get_json()["changed"] is True
    assert client.get("/api/v1/balance", headers=bearer(ada)).status_code == 200
    assert client.get("/v1/models", headers=bearer(key)).status_code == 200
    assert _actions(database) == [("disable_user", _id(database, "ada"), "abuse report 3"),
                                  ("enable_user", _id(database, "ada"), "appeal upheld")]
