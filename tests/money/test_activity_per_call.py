"""GET /api/v1/activity as a person reads their account: one row per call and
per deposit, each signed by what it did to the available balance; a hold shows
only while its call runs, as a reservation. `?view=entries` keeps every ledger
entry and message, and the ledger itself keeps every row."""
from decimal import Decimal

import pytest

from tests.money.test_access_key_billing import hold, release
from tests.support import assert_error, bearer, new_session, readme_ledger_query, send, user, user_id_of

ACTIVITY = "/api/v1/activity"


def activity(client, token, **query):
    response = client.get(ACTIVITY, query_string=query, headers=bearer(token))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def available(client, token):
    return Decimal(client.get("/api/v1/balance", headers=bearer(token)).get_json()["available_balance"])


def test_each_call_is_one_row_with_its_model_tokens_and_signed_cost(client, database):
    token = user(client, funds="10")
    session_id = new_session(client, token)
    exchanges = [send(client, token, session_id, text).get_json() for text in ("first words", "second words here")]
    rows = activity(client, token)["activity"]
    assert [(row["kind"], row["status"]) for row in rows] == [("call", "done"), ("call", "done"), ("deposit", "done")]
    for row, exchange in zip(rows, reversed(exchanges)):
        assert Decimal(row["amount"]) == -Decimal(exchange["cost"]) < 0
        assert row["amount"].startswith("-") and row["reserved"] is None
        assert (row["prompt_tokens"], row["completion_tokens"]) == (
            exchange["user_message"]["prompt_tokens"], exchange["assistant_message"]["completion_tokens"])
        assert (row["model_id"], row["session_id"]) == ("local/echo", session_id)
        assert row["charge"]["cost"] == exchange["cost"]
    assert rows[-1]["amount"] == "10.00"
    # The rows add up to the balance, and the ledger behind them keeps every entry.
    assert sum(Decimal(row["amount"]) for row in rows) == available(client, token)
    entries = activity(client, token, view="entries")["activity"]
    assert sorted(item["action"] for item in entries if item["kind"] == "transaction") == [
        "deposit", "hold", "hold", "release", "release"]
    assert len(client.get("/api/v1/balance/transactions", headers=bearer(token)).get_json()["transactions"]) == 5
    assert database.query(readme_ledger_query()) == []


def test_a_running_call_shows_what_it_reserves_until_it_settles(app, client, database):
    token = user(client, funds="10")
    user_id = user_id_of(database)
    held = hold(app, user_id, "0.01", None)
    [running, _] = activity(client, token)["activity"]
    assert (running["kind"], running["status"], running["amount"], running["reserved"]) == (
        "call", "in_progress", "-0.01", "0.01")
    assert running["id"] == str(held["transaction_id"]) and running["model_id"] == "local/echo"
    release(app, user_id, held["transaction_id"], "0.0099")
    [settled, _] = activity(client, token)["activity"]
    assert (settled["status"], settled["amount"], settled["reserved"]) == ("done", "-0.0001", None)
    assert database.query(readme_ledger_query()) == []


def test_a_failed_call_is_one_row_that_cost_nothing(client, database, openai_stub):
    token = user(client, funds="10")
    assert client.post("/api/v1/keys", json={"provider": "openai", "api_key": "sk-activity-test-0000000000000001"},
                       headers=bearer(token)).status_code == 201
    openai_stub.behaviour.status = 500
    assert_error(send(client, token, new_session(client, token, "openai/gpt-4o-mini")), 502, "provider_error")
    [failed, _] = activity(client, token)["activity"]
    assert (failed["kind"], failed["status"], failed["amount"], failed["charge"]) == ("call", "failed", "0.00", None)
    assert available(client, token) == 10
    assert database.query(readme_ledger_query()) == []


def test_calls_page_without_gaps_and_refuse_another_views_cursor(client):
    token = user(client, funds="10")
    session_id = new_session(client, token)
    for _ in range(3):
        assert send(client, token, session_id).status_code == 201
    everything = activity(client, token, limit=100)["activity"]
    seen, cursor = [], None
    while True:
        page = activity(client, token, limit=2, **({"cursor": cursor} if cursor else {}))
        seen += page["activity"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == everything and len(everything) == 4
    entries_cursor = activity(client, token, view="entries", limit=1)["next_cursor"]
    assert_error(client.get(ACTIVITY, query_string={"cursor": entries_cursor}, headers=bearer(token)),
                 400, "validation_error")


@pytest.mark.parametrize("view", ["call", "", "ledger"])
def test_an_unknown_view_is_refused(client, token, view):
    assert_error(client.get(ACTIVITY, query_string={"view": view}, headers=bearer(token)), 400, "validation_error")
