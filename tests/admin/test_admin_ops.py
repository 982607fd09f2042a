"""Operators' operations: overdue holds and reconcile now, the house keys'
state by setting name, and the audit log's filters and pages."""
from decimal import Decimal

import pytest

from app.extensions import db, providers
from tests.support import HOUSE_OPENAI, admin, assert_error, bearer, readme_ledger_query, settings_for, user, user_id_of

ADMIN = "/api/v1/admin"


@pytest.fixture
def settings(database):
    """A house key set for OpenAI and none for Anthropic."""
    return settings_for(database.app_url, MIGRATE_DATABASE_URL=database.owner_url, OPENAI_API_KEY=HOUSE_OPENAI,
                        ANTHROPIC_API_KEY="")


def _overdue_hold(app, database, email):
    """A hold whose call's deadline passed an hour ago, as a crashed call leaves it."""
    with app.app_context():
        held = db.hold_funds(user_id_of(database, email), Decimal("0.5"), "Hold for a call", {},
                             call_timeout=-3600, model_id="local/echo")
    assert held["ok"], held
    return held["transaction_id"]


def test_overdue_holds_are_listed_and_reconcile_now_returns_them(app, client, database):
    root = admin(app, client)
    user(client, "ada", funds="2.00")
    hold_id = _overdue_hold(app, database, "ada@example.com")
    listed = client.get(f"{ADMIN}/holds/overdue", headers=bearer(root)).get_json()["holds"]
    assert [(hold["id"], hold["email"], hold["amount"]) for hold in listed] == [(str(hold_id), "ada@example.com",
                                                                                 "0.50")]
    done = client.post(f"{ADMIN}/holds/reconcile", json={"reason": "after the crash"}, headers=bearer(root))
    assert done.status_code == 200 and done.get_json()["returned"] == 1
    assert client.get(f"{ADMIN}/holds/overdue", headers=bearer(root)).get_json()["holds"] == []
    assert database.query("SELECT action, reason FROM admin_actions WHERE admin_id IS NOT NULL") == [
        ("reconcile", "after the crash")]
    assert database.query(readme_ledger_query()) == []


def test_house_keys_are_shown_by_setting_never_by_value(app, client, database):
    root = admin(app, client)
    answer = client.get(f"{ADMIN}/house-keys", headers=bearer(root))
    assert HOUSE_OPENAI not in answer.get_data(as_text=True)
    keys = {entry["provider"]: entry["keys"] for entry in answer.get_json()["providers"]}
    never_failed = {"last_failure_status": None, "last_failed_at": None, "failures": 0}
    assert keys["openai"] == [{"setting": "OPENAI_API_KEY", "state": "ready", **never_failed}]
    assert keys["anthropic"] == [{"setting": "ANTHROPIC_API_KEY", "state": "unset", **never_failed}]
    # A key the provider refused is out of its pool until a restart, and shown so.
    with app.app_context():
        providers.house_keys["openai"].disable(HOUSE_OPENAI)
    keys = {entry["provider"]: entry["keys"]
            for entry in client.get(f"{ADMIN}/house-keys", headers=bearer(root)).get_json()["providers"]}
    assert keys["openai"] == [{"setting": "OPENAI_API_KEY", "state": "refused", **never_failed}]


def test_the_audit_log_filters_by_user_admin_action_and_time_in_pages(app, client, database):
    root = admin(app, client)
    chief = admin(app, client, "chief")
    user(client, "ada", funds="5.00")
    user(client, "bob", funds="5.00")
    ada, bob = (str(user_id_of(database, f"{name}@example.com")) for name in ("ada", "bob"))
    for token, target, action in ((root, ada, "credit"), (root, bob, "debit"), (chief, ada, "debit")):
        sent = client.post(f"{ADMIN}/users/{target}/{action}", json={"amount": "1", "reason": f"{action} it"},
                           headers=bearer(token))
        assert sent.status_code == 201, sent.get_json()

    def listed(query=""):
        answer = client.get(f"{ADMIN}/audit{query}", headers=bearer(root))
        assert answer.status_code == 200, answer.get_json()
        return answer.get_json()

    everything = listed()["actions"]
    assert [(entry["action"], entry["admin_email"]) for entry in everything] == [
        ("debit", "chief@example.com"), ("debit", "root@example.com"), ("credit", "root@example.com"),
        ("grant_admin", None), ("grant_admin", None)]
    assert [entry["reason"] for entry in listed(f"?user_id={ada}")["actions"]] == ["debit it", "credit it"]
    chief_id = everything[0]["admin_id"]
    assert [entry["target_email"] for entry in listed(f"?admin_id={chief_id}")["actions"]] == ["ada@example.com"]
    assert len(listed("?action=debit")["actions"]) == 2
    first = listed("?limit=2")
    second = listed(f"?limit=2&cursor={first['next_cursor']}")
    assert [entry["id"] for entry in first["actions"] + second["actions"]] == [entry["id"] for entry in everything][:4]
    since = everything[1]["created_at"].replace("+00:00", "Z")
    assert [entry["action"] for entry in listed(f"?from={since}")["actions"]][-1] == "debit"
    assert listed("?to=2000-01-01T00:00:00Z")["actions"] == []


@pytest.mark.parametrize("query, field", [
    ("?user_id=nobody", "user_id"),
    ("?action=explode", "action"),
    ("?from=yesterday", "from"),
    ("?to=2030-01-01T00:00:00", "to"),
    ("?cursor=zzz", "cursor"),
])
def test_bad_audit_filters_are_refused_naming_them(app, client, database, query, field):
    root = admin(app, client)
    assert field in assert_error(client.get(f"{ADMIN}/audit{query}", headers=bearer(root)), 400,
                                 "validation_error")["details"]


def test_operations_are_for_admins_only(app, client, database):
    ada = user(client, "ada")
    for method, path in (("get", "/holds/overdue"), ("get", "/house-keys"), ("get", "/audit"),
                         ("post", "/holds/reconcile")):
        answer = getattr(client, method)(f"{ADMIN}{path}", json={"reason": "x"} if method == "post" else None,
                                         headers=bearer(ada))
        assert_error(answer, 403, "admin_required")
    assert database.query("SELECT count(*) FROM admin_actions WHERE admin_id IS NOT NULL") == [(0,)]
