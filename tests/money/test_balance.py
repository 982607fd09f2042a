"""The balance, top-ups, the ledger and Idempotency-Key (SPEC §5, endpoints 9–11)."""
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from decimal import Decimal

import httpx
import psycopg2
import pytest

from app import create_app
from app.extensions import db
from tests.support import (LiveServer, assert_error, bearer, live_user, login, readme_ledger_query, register,
                           user_id_of)

FUNDS = "/api/v1/balance/funds"
TRANSACTIONS = "/api/v1/balance/transactions"


def top_up(client, token, amount, key=None, **kwargs):
    headers = bearer(token)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(FUNDS, json={"amount": amount}, headers=headers, **kwargs)


def balance(client, token):
    response = client.get("/api/v1/balance", headers=bearer(token))
    assert response.status_code == 200
    return response.get_json()


def money_rows(database):
    return database.query("SELECT count(*) FROM transactions")[0][0]


# ------------------------------------------------------------------ balance

def test_a_new_account_has_an_empty_balance(client, token):
    assert balance(client, token) == {
        "total_balance": "0.00", "spent_balance": "0.00", "held_balance": "0.00",
        "available_balance": "0.00", "currency": "USD"}


def test_balance_needs_a_token(client):
    assert_error(client.get("/api/v1/balance"), 401, "unauthorized")


def test_top_up_credits_the_balance_and_records_a_deposit(client, token, database):
    response = top_up(client, token, "12.50")
    assert response.status_code == 201
    body = response.get_json()
    assert body["transaction"]["type"] == "deposit"
    assert body["transaction"]["amount"] == "12.50"
    assert body["transaction"]["available_after"] == "12.50"
    assert body["balance"] == balance(client, token)
    assert body["balance"]["total_balance"] == body["balance"]["available_balance"] == "12.50"
    assert database.query("SELECT type, amount FROM transactions") == [("deposit", Decimal("12.50"))]


def test_amounts_are_exact(client, token):
    for _ in range(3):
        assert top_up(client, token, "0.1").status_code == 201
    assert balance(client, token)["total_balance"] == "0.30"
    assert top_up(client, token, 0.1).status_code == 201  # a JSON number parses as Decimal, not float
    assert balance(client, token)["total_balance"] == "0.40"


def test_max_topup_itself_is_accepted(client, token):
    assert top_up(client, token, "1000").status_code == 201
    assert balance(client, token)["available_balance"] == "1000.00"


BAD_AMOUNTS = {
    "zero": 0, "zero string": "0", "zero cents": "0.00", "negative": -5, "negative string": "-5",
    "three decimals": "1.001", "three decimals number": Decimal("0.001"), "true": True, "false": False,
    "null": None, "list": [1], "object": {"value": 1}, "empty": "", "spaces": " 5", "words": "five",
    "NaN string": "NaN", "Infinity string": "Infinity", "exponent string": "1e3", "hex": "0x10",
    "above max": "1000.01", "above max number": 1001, "huge": 10 ** 30, "huge exponent": Decimal("1e400"),
    "NUL": "5\x00",
}


@pytest.mark.parametrize("amount", BAD_AMOUNTS.values(), ids=BAD_AMOUNTS.keys())
def test_bad_amounts_are_refused_and_move_nothing(client, token, database, amount):
    error = assert_error(top_up(client, token, amount), 400, "validation_error")
    assert "amount" in error["details"]
    assert money_rows(database) == 0


@pytest.mark.parametrize("raw", ['{"amount": NaN}', '{"amount": Infinity}', '{"amount": -Infinity}',
                                 '{"amount": 1', '{"amount": 01}'])
def test_non_json_amounts_are_invalid_json(client, token, database, raw):
    response = client.post(FUNDS, data=raw, content_type="application/json", headers=bearer(token))
    assert_error(response, 400, "invalid_json")
    assert money_rows(database) == 0


@pytest.mark.parametrize("body", [{}, {"amount": "5", "user_id": str(uuid.uuid4())}, {"amount": "5", "balance": "9"},
                                  {"amount": "5", "type": "release"}])
def test_missing_and_extra_fields_are_refused(client, token, database, body):
    response = client.post(FUNDS, json=body, headers=bearer(token))
    assert_error(response, 400, "validation_error")
    assert money_rows(database) == 0


def test_top_ups_can_be_turned_off(settings, database):
    app = create_app({**settings, "SELF_TOPUP_ENABLED": "false"})
    client = app.test_client()
    register(client)
    token = login(client)["access_token"]
    assert_error(top_up(client, token, "5"), 403, "topups_disabled")
    assert_error(top_up(client, token, "5", key="k"), 403, "topups_disabled")
    assert money_rows(database) == 0
    assert database.query("SELECT count(*) FROM idempotency_keys")[0][0] == 0
    with app.app_context():
        db.close()


def test_each_movement_is_audited_with_old_and_new_balance(client, token, database):
    top_up(client, token, "3.00")
    (old_row, new_row), = database.query(
        "SELECT old_row, new_row FROM audit_log WHERE table_name = 'user_balance' AND operation = 'UPDATE'")
    assert Decimal(str(old_row["total_balance"])) == 0
    assert Decimal(str(new_row["total_balance"])) == Decimal("3.00")
    assert database.query("SELECT count(*) FROM audit_log WHERE table_name = 'transactions'")[0][0] == 1


# --------------------------------------------------------------- the ledger

def test_transactions_come_newest_first_in_pages(client, token):
    for cents in range(1, 26):
        top_up(client, token, f"0.{cents:02d}")
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        page = client.get(TRANSACTIONS, query_string=query, headers=bearer(token)).get_json()
        seen += page["transactions"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert [entry["amount"] for entry in seen] == [f"0.{cents:02d}" for cents in range(25, 0, -1)]
    ids = [int(entry["id"]) for entry in seen]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 25


def test_transactions_filter_by_type(client, token, database):
    top_up(client, token, "5")
    hold_id = hold(database, user_id_of(database), "2")
    by_type = {kind: client.get(TRANSACTIONS, query_string={"type": kind}, headers=bearer(token)).get_json()
               for kind in ("deposit", "hold", "release")}
    assert [entry["type"] for entry in by_type["deposit"]["transactions"]] == ["deposit"]
    assert [entry["id"] for entry in by_type["hold"]["transactions"]] == [str(hold_id)]
    assert by_type["release"]["transactions"] == []


def test_transactions_are_private(client, token):
    top_up(client, token, "5")
    register(client, email="bob@example.com", username="bob")
    bob = login(client, email="bob@example.com")["access_token"]
    assert client.get(TRANSACTIONS, headers=bearer(bob)).get_json() == {"transactions": [], "next_cursor": None}


@pytest.mark.parametrize("query", [
    {"limit": "0"}, {"limit": "101"}, {"limit": "-1"}, {"limit": "abc"}, {"limit": "1.5"}, {"limit": "１"},
    {"limit": ""}, {"type": "withdrawal"}, {"type": "DEPOSIT"}, {"cursor": "garbage!"}, {"cursor": ""},
    {"cursor": "djF8YWJj"},  # "v1|abc"
    {"cursor": "djJ8NQ"},  # "v2|5"
    {"cursor": "djF8LTE"},  # "v1|-1"
    {"cursor": "djF8NXw2"},  # "v1|5|6"
    {"cursor": "djF8OTk5OTk5OTk5OTk5OTk5OTk5OTk"},  # beyond bigint
])
def test_bad_page_parameters_are_refused(client, token, query):
    error = assert_error(client.get(TRANSACTIONS, query_string=query, headers=bearer(token)), 400, "validation_error")
    assert set(error["details"]) <= {"limit", "type", "cursor"}


# ------------------------------------------------------------ idempotency

def test_a_retry_replays_the_first_answer_and_moves_no_money(client, token, database):
    first = top_up(client, token, "7.25", key="order-1")
    again = top_up(client, token, "7.25", key="order-1")
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert again.get_data() == first.get_data()
    assert balance(client, token)["total_balance"] == "7.25"
    assert money_rows(database) == 1


def test_the_same_key_with_another_body_is_refused(client, token, database):
    top_up(client, token, "7.25", key="order-1")
    assert_error(top_up(client, token, "7.26", key="order-1"), 422, "idempotency_key_reused")
    assert balance(client, token)["total_balance"] == "7.25"


def test_the_same_number_in_another_spelling_is_the_same_body(client, token):
    def send(raw):
        return client.post(FUNDS, data=raw, content_type="application/json",
                           headers={**bearer(token), "Idempotency-Key": "spelling"})

    assert send('{"amount": 12.5}').status_code == 201
    assert send('{ "amount" : 12.50 }').headers["Idempotent-Replayed"] == "true"
    assert send('{"amount": 1.25e1}').headers["Idempotent-Replayed"] == "true"
    assert_error(send('{"amount": "12.5"}'), 422, "idempotency_key_reused")
    assert balance(client, token)["total_balance"] == "12.50"


def test_a_duplicate_while_the_first_runs_is_a_conflict(app, client, token, database):
    with app.app_context():
        outcome, _ = db.claim_idempotency_key(user_id_of(database), "order-1", _fingerprint(app, token), 90)
    assert outcome == "claimed"
    assert_error(top_up(client, token, "5", key="order-1"), 409, "idempotency_in_progress")
    assert money_rows(database) == 0


def _fingerprint(app, token):
    """The fingerprint the service computes for top_up(…, "5", key=…)."""
    from app.api.idempotency import request_fingerprint
    with app.test_request_context(FUNDS, method="POST", json={"amount": "5"}, headers=bearer(token)):
        return request_fingerprint()


def test_a_stale_in_progress_record_is_taken_over(app, client, token, database):
    with app.app_context():
        db.claim_idempotency_key(user_id_of(database), "order-1", _fingerprint(app, token), 90)
    database.query("UPDATE idempotency_keys SET stale_at = now() - interval '1 second'")
    assert top_up(client, token, "5", key="order-1").status_code == 201
    assert balance(client, token)["total_balance"] == "5.00"


def test_an_error_answer_is_not_kept(client, token, database):
    assert_error(top_up(client, token, "0", key="order-1"), 400, "validation_error")
    assert database.query("SELECT count(*) FROM idempotency_keys")[0][0] == 0
    assert top_up(client, token, "4", key="order-1").status_code == 201


def test_keys_expire_after_a_day_and_are_pruned(app, client, token, database):
    top_up(client, token, "1", key="old")
    top_up(client, token, "1", key="recent")
    database.query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old'")
    assert "Idempotent-Replayed" not in top_up(client, token, "1", key="old").headers  # ran anew
    assert balance(client, token)["total_balance"] == "3.00"
    database.query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old'")
    result = app.test_cli_runner().invoke(args=["prune"])
    assert result.exit_code == 0 and "pruned 1 idempotency records" in result.output
    assert [row[0] for row in database.query("SELECT key FROM idempotency_keys")] == ["recent"]


def test_a_running_service_forgets_records_past_a_day_without_a_restart(settings, database):
    """Each worker prunes as it reconciles: a stored answer outlives its 24 hours
    by at most RECONCILE_INTERVAL, whether or not `flask prune` runs."""
    server = LiveServer({**settings, "RECONCILE_INTERVAL": 0.2})
    try:
        headers, _ = live_user(server.url, "1")
        for key in ("old", "recent"):
            keyed = {**headers, "Idempotency-Key": key}
            assert httpx.post(f"{server.url}{FUNDS}", json={"amount": "1"}, headers=keyed).status_code == 201
        database.query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old'")
        deadline = time.monotonic() + 10
        while database.query("SELECT key FROM idempotency_keys ORDER BY key") != [("recent",)]:
            assert time.monotonic() < deadline, "the old record was not pruned"
            time.sleep(0.05)
    finally:
        server.stop()


def test_keys_are_scoped_to_the_user(client, token):
    top_up(client, token, "1", key="shared")
    register(client, email="bob@example.com", username="bob")
    bob = login(client, email="bob@example.com")["access_token"]
    response = top_up(client, bob, "2", key="shared")
    assert response.status_code == 201 and "Idempotent-Replayed" not in response.headers
    assert balance(client, bob)["total_balance"] == "2.00"


@pytest.mark.parametrize("key", ["", "k" * 256, "has space", "tab\tkey", "ünïcode"])
def test_malformed_keys_are_refused(client, token, database, key):
    response = client.post(FUNDS, json={"amount": "1"}, headers={**bearer(token), "Idempotency-Key": key})
    assert_error(response, 400, "validation_error")
    assert money_rows(database) == 0


# ------------------------------------------------- real parallel requests

def _parallel(count, request):
    """Runs request(i) for i in range(count) at once; returns the responses."""
    start = threading.Barrier(count)

    def run(i):
        start.wait()
        return request(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def _live_user(live_server):
    account = {"email": "ada@example.com", "username": "ada", "password": "correct horse battery"}
    assert httpx.post(f"{live_server.url}/api/v1/auth/register", json=account).status_code == 201
    credentials = {"email": account["email"], "password": account["password"]}
    tokens = httpx.post(f"{live_server.url}/api/v1/auth/login", json=credentials).json()
    return bearer(tokens["access_token"])


def test_parallel_retries_of_one_key_credit_once(live_server, database):
    headers = _live_user(live_server) | {"Idempotency-Key": "same-order"}
    responses = _parallel(20, lambda _: httpx.post(f"{live_server.url}{FUNDS}", json={"amount": "9.99"},
                                                  headers=headers, timeout=30))
    statuses = sorted(response.status_code for response in responses)
    # The claim is made in the top-up's own transaction: a duplicate waits for its commit and replays it.
    assert statuses == [201] * 20, statuses
    assert sum(response.headers.get("Idempotent-Replayed") == "true" for response in responses) == 19
    credited = {response.text for response in responses if response.status_code == 201}
    assert len(credited) == 1, "every success is the one first answer"
    assert database.query("SELECT count(*), sum(amount) FROM transactions") == [(1, Decimal("9.99"))]


def test_parallel_distinct_top_ups_all_count(live_server, database):
    headers = _live_user(live_server)
    responses = _parallel(50, lambda i: httpx.post(
        f"{live_server.url}{FUNDS}", json={"amount": "0.10"},
        headers=headers | {"Idempotency-Key": f"order-{i}"}, timeout=30))
    assert [response.status_code for response in responses] == [201] * 50
    assert database.query("SELECT total_balance FROM user_balance") == [(Decimal("5.00"),)]


# ------------------------------------------------------------- procedures

def hold(database, user_id, amount):
    ok, transaction_id, _, reason = database.query(
        "SELECT * FROM deduct_user_balance(%s, %s)", (user_id, Decimal(amount)))[0]
    assert ok, reason
    return transaction_id


def test_concurrent_deductions_never_overspend(client, token, database):
    top_up(client, token, "10.00")
    user_id = user_id_of(database)

    def deduct(_):
        with closing(psycopg2.connect(database.app_url)) as conn, conn, conn.cursor() as cur:
            cur.execute("SELECT ok, reason FROM deduct_user_balance(%s, 1.00)", (user_id,))
            return cur.fetchone()

    results = _parallel(100, deduct)
    assert results.count((True, None)) == 10
    assert results.count((False, "insufficient_funds")) == 90
    assert database.query("SELECT total_balance - spent_balance FROM user_balance") == [(Decimal("0"),)]
    assert database.query("SELECT count(*) FROM transactions WHERE type = 'hold'") == [(10,)]


def test_a_hold_shows_as_held_until_released_once(client, token, database):
    top_up(client, token, "10")
    user_id = user_id_of(database)
    hold_id = hold(database, user_id, "4.00")
    assert balance(client, token) == {
        "total_balance": "10.00", "spent_balance": "4.00", "held_balance": "4.00",
        "available_balance": "6.00", "currency": "USD"}

    release = "SELECT ok, available, reason FROM add_user_funds(%s, %s, 'release', %s)"
    assert database.query(release, (user_id, Decimal("1.50"), hold_id)) == [(True, Decimal("7.50"), None)]
    assert balance(client, token)["held_balance"] == "0.00"
    assert balance(client, token)["spent_balance"] == "2.50"
    assert database.query(release, (user_id, Decimal("1.00"), hold_id))[0][2] == "already_released"
    assert balance(client, token)["available_balance"] == "7.50"


def test_a_release_cannot_exceed_its_hold_or_touch_another_users(client, token, database):
    top_up(client, token, "10")
    user_id = user_id_of(database)
    hold_id = hold(database, user_id, "4.00")
    register(client, email="bob@example.com", username="bob")
    release = "SELECT ok, reason FROM add_user_funds(%s, %s, 'release', %s)"
    assert database.query(release, (user_id, Decimal("4.01"), hold_id)) == [(False, "invalid_hold")]
    assert database.query(release, (user_id_of(database, "bob@example.com"), Decimal("1"), hold_id)) == [
        (False, "invalid_hold")]
    assert database.query("SELECT count(*) FROM transactions WHERE type = 'release'") == [(0,)]


@pytest.mark.parametrize("statement", [
    "UPDATE transactions SET amount = 0",
    "DELETE FROM transactions",
    "UPDATE audit_log SET row_id = 'x'",
    "DELETE FROM audit_log",
    "UPDATE user_balance SET total_balance = 1000000",
    "INSERT INTO transactions (user_id, type, amount, available_after) SELECT user_id, 'deposit', 5, 5 FROM user_balance",
])
def test_the_service_login_cannot_rewrite_money(client, token, database, statement):
    top_up(client, token, "1")
    with closing(psycopg2.connect(database.app_url)) as conn, conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute(statement)
    with closing(database.owner()) as conn, conn.cursor() as cur:
        cur.execute("SET ROLE app_user")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute(statement)


# ---------------------------------------------------------------- operators

def test_an_operator_credit_uses_the_same_ledger(app, client, token, database):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["credit", "Ada@Example.com", "25.00", "--note", "welcome"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(args=["credit", "ada@example.com", "1.20", "--note", "bad answer", "--refund"])
    assert result.exit_code == 0, result.output
    assert balance(client, token)["total_balance"] == "26.20"
    assert database.query("SELECT description, metadata->>'kind' FROM transactions ORDER BY id") == [
        ("Operator credit: welcome", "credit"), ("Operator refund: bad answer", "refund")]
    assert database.query("SELECT count(*) FROM audit_log WHERE table_name = 'user_balance' AND operation = 'UPDATE'"
                          ) == [(2,)]


@pytest.mark.parametrize("args, says", [
    (["credit", "ada@example.com", "0", "--note", "x"], "Invalid value for AMOUNT: must be positive"),
    (["credit", "--note", "x", "--", "ada@example.com", "-1"], "Invalid value for AMOUNT: must be positive"),
    (["credit", "ada@example.com", "1.001", "--note", "x"], "Invalid value for AMOUNT: must have at most 2 decimal"),
    (["credit", "ada@example.com", "NaN", "--note", "x"], "Invalid value for AMOUNT: must be a decimal number"),
    (["credit", "ada@example.com", "5", "--note", "  "], "--note must be 1 to 400 characters"),
    (["credit", "ada@example.com", "5"], "Missing option '--note'"),
    (["credit", "nobody@example.com", "5", "--note", "x"], "no account with email nobody@example.com"),
    (["credit", "not-an-email", "5", "--note", "x"], "Invalid value for EMAIL: must be an email address"),
])
def test_bad_operator_credits_move_nothing(app, token, database, args, says):
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code != 0
    assert says in result.output
    assert "Value error" not in result.output
    assert money_rows(database) == 0


def test_the_readme_ledger_check_finds_nothing_wrong_and_catches_a_mismatch(client, token, database):
    top_up(client, token, "10")
    hold(database, user_id_of(database), "3")
    assert database.query(readme_ledger_query()) == []
    database.query("UPDATE user_balance SET total_balance = total_balance + 1")
    assert len(database.query(readme_ledger_query())) == 1
