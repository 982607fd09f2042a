"""Access keys on the money side, through the real procedures: a hold made with
a key is refused past the key's spend limit for its period (also under a
parallel burst) or when the key is not live; the key's `spent` grows by exactly
its charges on every path that closes a hold; the ledger and the activity show
each entry's model and key; an Idempotency-Key's answer is replayed only to
the caller that sent the request."""
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from types import SimpleNamespace

import httpx
import pytest

from app.billing import reconcile_holds
from app.extensions import db
from app.pricing import Charge
from tests.support import bearer, live_user, new_session, readme_ledger_query, user, user_id_of

ACCESS_KEYS = "/api/v1/access-keys"
MODEL = "local/echo"


@pytest.fixture
def funded(client):
    """A user with $10 and their access token."""
    return user(client, funds="10.00")


def new_key(client, token, **fields):
    response = client.post(ACCESS_KEYS, json={"name": "program", **fields}, headers=bearer(token))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def hold(app, user_id, amount, key_id, **extra):
    with app.app_context():
        return db.hold_funds(user_id, Decimal(amount), "Hold for a call", {}, model_id=MODEL, access_key_id=key_id,
                             **extra)


def release(app, user_id, hold_id, amount, **extra):
    with app.app_context():
        released = db.release_hold(user_id, hold_id, Decimal(amount), "Unused part", {}, **extra)
    assert released["ok"], released
    return released


def spent(database, key_id):
    return database.query("SELECT spent FROM access_keys WHERE id = %s", (key_id,))[0][0]


def move_to_the_past(database, hold_id, interval):
    """The hold and its release, made `interval` ago (as the owner)."""
    database.query("UPDATE transactions SET created_at = created_at - %s::interval "
                   "WHERE id = %s OR related_transaction_id = %s", (interval, hold_id, hold_id))


# ----------------------------------------------------------------- the spend limit

def test_a_parallel_burst_cannot_pass_the_keys_spend_limit(app, client, funded, database):
    key = new_key(client, funded, spend_limit="1.00", spend_limit_period="total")
    user_id = user_id_of(database)

    def one_hold(_):
        with app.app_context(), db.transaction() as tx:
            return hold(app, user_id, "0.30", key["id"], tx=tx)

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(one_hold, range(20)))
    assert sorted(result["reason"] or "ok" for result in results) == ["ok"] * 3 + ["spend_limit_reached"] * 17
    assert database.query("SELECT count(*), sum(amount) FROM transactions WHERE type = 'hold'") == [
        (3, Decimal("0.90"))]
    assert database.query("SELECT held_balance FROM user_balance") == [(Decimal("0.90"),)]


def test_what_was_released_no_longer_counts(app, client, funded, database):
    key = new_key(client, funded, spend_limit="1.00", spend_limit_period="day")
    user_id = user_id_of(database)
    first = hold(app, user_id, "0.80", key["id"])
    assert hold(app, user_id, "0.30", key["id"])["reason"] == "spend_limit_reached"
    release(app, user_id, first["transaction_id"], "0.60")  # charged 0.20
    assert hold(app, user_id, "0.80", key["id"])["ok"]
    assert hold(app, user_id, "0.01", key["id"])["reason"] == "spend_limit_reached"


@pytest.mark.parametrize("period, interval, counts", [
    ("day", "1 day", False),
    ("month", "32 days", False),
    ("total", "400 days", True),
    ("month", "0 days", True),
])
def test_the_limit_counts_the_keys_period_only(app, client, funded, database, period, interval, counts):
    key = new_key(client, funded, spend_limit="1.00", spend_limit_period=period)
    user_id = user_id_of(database)
    old = hold(app, user_id, "0.90", key["id"])
    release(app, user_id, old["transaction_id"], "0.10")  # charged 0.80
    move_to_the_past(database, old["transaction_id"], interval)
    assert hold(app, user_id, "0.50", key["id"])["reason"] == ("spend_limit_reached" if counts else None)


def test_a_key_without_a_limit_and_a_hold_without_a_key_are_not_limited(app, client, funded, database):
    key = new_key(client, funded)
    user_id = user_id_of(database)
    assert hold(app, user_id, "6.00", key["id"])["ok"]
    assert hold(app, user_id, "4.00", None)["ok"]


def test_the_users_daily_limit_still_applies_to_a_key(app, client, funded, database):
    key = new_key(client, funded, spend_limit="5.00", spend_limit_period="day")
    assert hold(app, user_id_of(database), "2.00", key["id"], daily_limit=Decimal("1.00"))["reason"] \
        == "spend_limit_reached"


def test_a_key_that_is_not_live_or_not_the_users_holds_nothing(app, client, funded, database):
    revoked, expired, theirs = (new_key(client, funded) for _ in range(3))
    client.delete(f"{ACCESS_KEYS}/{revoked['id']}", headers=bearer(funded))
    database.query("UPDATE access_keys SET expires_at = now() - interval '1 second' WHERE id = %s", (expired["id"],))
    user(client, "bob", funds="10.00")
    bob = user_id_of(database, "bob@example.com")
    for user_id, key_id in ((user_id_of(database), revoked["id"]), (user_id_of(database), expired["id"]),
                            (bob, theirs["id"]), (bob, "00000000-0000-4000-8000-000000000001")):
        assert hold(app, user_id, "1.00", key_id)["reason"] == "invalid_access_key"
    assert database.query("SELECT count(*) FROM transactions WHERE type = 'hold'") == [(0,)]


# ----------------------------------------------------------------- spent

def test_spent_grows_by_exactly_the_charges_on_every_path(app, client, funded, database):
    key = new_key(client, funded)
    user_id = user_id_of(database)
    settled = hold(app, user_id, "0.50", key["id"])
    session_id = new_session(client, funded)
    with app.app_context():
        answer = db.settle_chat_call(
            user_id, session_id, SimpleNamespace(id=settled["transaction_id"], amount=Decimal("0.50"), model_id=MODEL,
                            route=SimpleNamespace(provider="openai"), token=None),
            None, "hi", "You said: hi",
            Charge(3, 4, 0, 0, 0, None, Decimal("0.0000030"), Decimal(0), Decimal(0), Decimal("0.12")),
            {"kind": "settle"})
    assert answer["charged"]
    assert spent(database, key["id"]) == Decimal("0.120003")

    failed = hold(app, user_id, "0.70", key["id"])
    release(app, user_id, failed["transaction_id"], "0.70")
    assert spent(database, key["id"]) == Decimal("0.120003")

    closed = hold(app, user_id, "0.25", key["id"])
    release(app, user_id, closed["transaction_id"], "0")
    assert spent(database, key["id"]) == Decimal("0.370003")

    crashed = hold(app, user_id, "0.40", key["id"], call_timeout=0)
    database.query("UPDATE transactions SET call_deadline = now() - interval '1 hour' WHERE id = %s",
                   (crashed["transaction_id"],))
    with app.app_context():
        assert reconcile_holds(app.config) == 1
    assert spent(database, key["id"]) == Decimal("0.370003")

    charges = database.query(
        "SELECT sum(h.amount - r.amount) FROM transactions h JOIN transactions r ON r.related_transaction_id = h.id "
        "WHERE h.access_key_id = %s", (key["id"],))[0][0]
    assert charges == spent(database, key["id"])
    assert database.query("SELECT last_used_at IS NOT NULL FROM access_keys") == [(True,)]
    assert database.query("SELECT held_balance FROM user_balance WHERE user_id = %s", (user_id,)) == [(0,)]


def test_the_service_cannot_write_spent_itself(database):
    assert database.query(
        "SELECT has_column_privilege('app_user', 'access_keys', 'spent', 'UPDATE'), "
        "has_column_privilege('app_user', 'access_keys', 'spent', 'INSERT'), "
        "has_column_privilege('app_user', 'access_keys', 'revoked_at', 'UPDATE'), "
        "has_table_privilege('app_user', 'access_keys', 'DELETE')") == [(False, False, True, False)]


# ----------------------------------------------------------------- what the user sees

def test_the_ledger_and_the_activity_show_each_entrys_model_and_key(app, client, funded, database):
    key = new_key(client, funded)
    user_id = user_id_of(database)
    held = hold(app, user_id, "0.50", key["id"])
    release(app, user_id, held["transaction_id"], "0.20")

    ledger = client.get("/api/v1/balance/transactions", headers=bearer(funded)).get_json()["transactions"]
    assert [(entry["type"], entry["model_id"], entry["access_key_id"]) for entry in ledger] == [
        ("release", MODEL, key["id"]), ("hold", MODEL, key["id"]), ("deposit", None, None)]
    entries = client.get("/api/v1/activity?view=entries", headers=bearer(funded)).get_json()["activity"]
    assert [(item["action"], item["model_id"], item["access_key_id"]) for item in entries] == [
        ("release", MODEL, key["id"]), ("hold", MODEL, key["id"]), ("deposit", None, None)]
    calls = client.get("/api/v1/activity", headers=bearer(funded)).get_json()["activity"]
    assert [(item["kind"], item["amount"], item["model_id"], item["access_key_id"]) for item in calls] == [
        ("call", "-0.30", MODEL, key["id"]), ("deposit", "10.00", None, None)]
    assert client.get(ACCESS_KEYS, headers=bearer(funded)).get_json()["access_keys"][0]["spent"] == "0.30"


# ----------------------------------------------------------------- Idempotency-Key: a replay is its caller's

def test_a_replay_is_only_for_the_caller_that_sent_the_request(live_server, database):
    """Key A's answer is replayed to A alone. Key B, held to local/echo, sending
    A's body and Idempotency-Key meets its own allow-list; key C and the user's
    own token are served afresh, each billed for its call."""
    url = f"{live_server.url}/v1/chat/completions"
    token_headers, user_id = live_user(live_server.url, "10")
    keys = {name: httpx.post(f"{live_server.url}{ACCESS_KEYS}", json={"name": name, **fields},
                             headers=token_headers).json()["key"]
            for name, fields in {"a": {}, "b": {"allowed_models": [MODEL]}, "c": {}}.items()}
    body = {"model": "local/reverse", "messages": [{"role": "user", "content": "Hello there"}]}

    def send(headers):
        return httpx.post(url, json=body, headers={**headers, "Idempotency-Key": "abc-1"})

    def holds():
        return database.query("SELECT count(*) FROM transactions WHERE type = 'hold'")[0][0]

    first = send(bearer(keys["a"]))
    assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers
    assert first.json()["choices"][0]["message"]["content"] == "there Hello"

    refused = send(bearer(keys["b"]))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    assert holds() == 1

    for other in (bearer(keys["c"]), token_headers):
        fresh = send(other)
        assert fresh.status_code == 200 and "Idempotent-Replayed" not in fresh.headers
        assert fresh.json()["id"] != first.json()["id"]
    assert holds() == 3

    rows = database.query("SELECT count(*) FROM transactions")[0][0]
    again = send(bearer(keys["a"]))
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content
    assert database.query("SELECT count(*) FROM transactions")[0][0] == rows
    assert database.query(readme_ledger_query()) == []
    assert database.query("SELECT held_balance FROM user_balance WHERE user_id = %s", (user_id,)) == [(0,)]
