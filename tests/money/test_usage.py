"""GET /api/v1/usage: the user's charges per UTC day and model, read from the
daily rollups that each settle keeps; charges are made through the API with
the local models. After each test README's ledger check, which holds the
rollups equal to the ledger, finds nothing: also after the ledger's rows
were moved to other days by hand (as the owner)."""
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from app.extensions import db
from app.money import format_money
from tests.support import assert_error, bearer, new_session, readme_ledger_query, send, user, user_id_of

USAGE = "/api/v1/usage"


@pytest.fixture
def token(client):
    return user(client, funds="10")


@pytest.fixture(autouse=True)
def ledger_checked(database):
    yield
    assert database.query(readme_ledger_query()) == []


def today():
    return datetime.now(timezone.utc).date()


def usage(client, token, tokens=False, **params):
    """The report's rows: their day, model, cost and requests (`tokens`: all their fields)."""
    response = client.get(USAGE, query_string=params, headers=bearer(token))
    assert response.status_code == 200, response.get_json()
    return [entry if tokens else {name: entry[name] for name in ("day", "model_id", "cost", "requests")}
            for entry in response.get_json()["usage"]]


def charge(client, token, model_id="local/echo", content="Hello there"):
    """One billed message; its cost as the answer states it."""
    response = send(client, token, new_session(client, token, model_id=model_id), content)
    assert response.status_code == 201, response.get_json()
    return Decimal(response.get_json()["cost"])


def last_hold(database):
    return database.query("SELECT max(id) FROM transactions WHERE type = 'hold'")[0][0]


def settle_at(database, hold_id, moment):
    """The hold and its release, as if made at `moment` (as the owner)."""
    database.query("UPDATE transactions SET created_at = %s WHERE id = %s OR related_transaction_id = %s",
                   (moment, hold_id, hold_id))


def row(day, model_id, costs):
    return {"day": day and day.isoformat(), "model_id": model_id, "cost": format_money(sum(costs)),
            "requests": len(costs)}


def test_charges_are_summed_per_day_and_model_by_default(client, token):
    echo = [charge(client, token), charge(client, token, content="a longer question"), charge(client, token)]
    reverse = [charge(client, token, "local/reverse")]
    assert all(cost > 0 for cost in echo + reverse)
    assert usage(client, token) == [row(today(), "local/echo", echo), row(today(), "local/reverse", reverse)]
    assert usage(client, token, group_by="day,model") == usage(client, token)


def test_the_cost_is_what_the_balance_paid(client, token, database):
    for _ in range(3):
        charge(client, token)
    spent = database.query("SELECT spent_balance FROM user_balance")[0][0]
    assert Decimal(usage(client, token)[0]["cost"]) == spent


def test_rows_group_by_day_or_by_model(client, token, database):
    echo_today = [charge(client, token)]
    echo_yesterday = [charge(client, token)]
    settle_at(database, last_hold(database), datetime.now(timezone.utc) - timedelta(days=1))
    reverse_today = [charge(client, token, "local/reverse")]
    yesterday = today() - timedelta(days=1)
    assert usage(client, token, group_by="day") == [row(yesterday, None, echo_yesterday),
                                                    row(today(), None, echo_today + reverse_today)]
    assert usage(client, token, group_by="model") == [row(None, "local/echo", echo_today + echo_yesterday),
                                                      row(None, "local/reverse", reverse_today)]
    assert usage(client, token) == [row(yesterday, "local/echo", echo_yesterday),
                                    row(today(), "local/echo", echo_today),
                                    row(today(), "local/reverse", reverse_today)]


def test_the_default_is_the_last_30_days_ending_today(client, token, database):
    kept = {}
    for days_ago in (0, 29, 30):
        cost = charge(client, token)
        settle_at(database, last_hold(database), datetime.now(timezone.utc) - timedelta(days=days_ago))
        kept[days_ago] = cost
    assert usage(client, token, group_by="day") == [row(today() - timedelta(days=29), None, [kept[29]]),
                                                    row(today(), None, [kept[0]])]
    # `to` alone moves the window: the 30 days ending there.
    assert [entry["day"] for entry in usage(client, token, group_by="day", to=str(today() - timedelta(days=1)))] \
        == [str(today() - timedelta(days=30)), str(today() - timedelta(days=29))]


def test_from_and_to_are_inclusive_utc_days(client, token, database):
    utc = timezone.utc
    moments = {
        "before": datetime(2026, 3, 9, 23, 59, 59, 999999, tzinfo=utc),
        "first": datetime(2026, 3, 10, 0, 0, tzinfo=utc),
        "last": datetime(2026, 3, 10, 23, 59, 59, 999999, tzinfo=utc),
        # Past midnight an hour east of UTC, still the 10th in UTC.
        "east": datetime(2026, 3, 11, 0, 30, tzinfo=timezone(timedelta(hours=1))),
        "after": datetime(2026, 3, 11, 0, 0, tzinfo=utc),
    }
    costs = {}
    for name, moment in moments.items():
        costs[name] = charge(client, token)
        settle_at(database, last_hold(database), moment)
    the_10th = [costs["first"], costs["last"], costs["east"]]
    assert usage(client, token, **{"from": "2026-03-10", "to": "2026-03-10"}) == [
        row(date(2026, 3, 10), "local/echo", the_10th)]
    assert usage(client, token, group_by="day", **{"from": "2026-03-09", "to": "2026-03-11"}) == [
        row(date(2026, 3, 9), None, [costs["before"]]), row(date(2026, 3, 10), None, the_10th),
        row(date(2026, 3, 11), None, [costs["after"]])]
    assert usage(client, token, **{"from": "2026-03-12", "to": "2026-03-31"}) == []


def test_only_settled_charges_count(app, client, token, database):
    """A hold of 0.30 settled at 0.12 counts 0.12; an open hold, or one returned whole, counts nothing."""
    user_id = user_id_of(database)
    with app.app_context():
        settled = db.hold_funds(user_id, Decimal("0.30"), "call", {}, model_id="local/echo")
        assert db.release_hold(user_id, settled["transaction_id"], Decimal("0.18"), "Unused part", {})["ok"]
        assert db.hold_funds(user_id, Decimal("0.40"), "open", {}, model_id="local/echo")["ok"]
        returned = db.hold_funds(user_id, Decimal("0.50"), "failed", {}, model_id="local/reverse")
        assert db.release_hold(user_id, returned["transaction_id"], Decimal("0.50"), "Returned", {})["ok"]
    assert usage(client, token) == [row(today(), "local/echo", [Decimal("0.12")])]


def test_tokens_are_summed_by_kind_from_the_calls_that_kept_them(app, client, token, database):
    """Two chat calls with their usage; a hold settled without a charge by part
    (as before schema version 8) adds its cost but no tokens, and a model only
    such calls used shows null tokens."""
    answers = []
    for content in ("Hello there", "a longer question than that"):
        answer = send(client, token, new_session(client, token), content)
        assert answer.status_code == 201, answer.get_json()
        answers.append(answer.get_json())
    user_id = user_id_of(database)
    with app.app_context():
        for model_id in ("local/echo", "local/reverse"):
            held = db.hold_funds(user_id, Decimal("0.30"), "call", {}, model_id=model_id)
            assert db.release_hold(user_id, held["transaction_id"], Decimal("0.10"), "Unused part", {})["ok"]
    echo, reverse = usage(client, token, tokens=True)
    assert (echo["requests"], echo["cost"]) == (3, format_money(sum(Decimal(answer["cost"]) for answer in answers)
                                                                + Decimal("0.20")))
    assert (echo["input_tokens"], echo["cached_input_tokens"], echo["cache_write_tokens"], echo["output_tokens"]) == (
        sum(answer["usage"]["prompt_tokens"] for answer in answers), 0, 0,
        sum(answer["usage"]["completion_tokens"] for answer in answers))
    assert echo["input_tokens"] > 0 and echo["output_tokens"] > 0
    assert reverse == {**row(today(), "local/reverse", [Decimal("0.20")]), "input_tokens": None,
                       "cached_input_tokens": None, "cache_write_tokens": None, "output_tokens": None}


def test_another_users_charges_are_never_seen(client, token):
    grace = user(client, "grace", funds="10")
    charge(client, grace)
    assert usage(client, token) == []
    mine = [charge(client, token, "local/reverse")]
    assert usage(client, token, group_by="model") == [row(None, "local/reverse", mine)]


def test_a_span_of_366_days_is_allowed(client, token):
    assert usage(client, token, **{"from": "2025-01-01", "to": "2026-01-01"}) == []


def test_usage_needs_a_token(client):
    assert_error(client.get(USAGE), 401, "unauthorized")


@pytest.mark.parametrize("params, field", [
    ({"from": "2026-13-01"}, "from"),
    ({"from": "yesterday"}, "from"),
    ({"to": "1700000000"}, "to"),
    ({"to": "2026-11-26T00:00:00Z"}, "to"),
    ({"to": "２０２６-11-26"}, "to"),
    ({"from": ""}, "from"),
    ({"from": "2026-11-27", "to": "2026-11-26"}, "from"),
    ({"from": "2025-01-01", "to": "2026-01-02"}, "from"),
    ({"group_by": "week"}, "group_by"),
    ({"group_by": "model,day"}, "group_by"),
    ({"days": "7"}, "days"),
], ids=lambda value: str(value) if not isinstance(value, dict) else "&".join(f"{k}={v}" for k, v in value.items()))
def test_bad_queries_are_refused_naming_the_field(client, token, params, field):
    error = assert_error(client.get(USAGE, query_string=params, headers=bearer(token)), 400, "validation_error")
    assert list(error["details"]) == [field], error


def test_the_endpoint_is_in_the_openapi_document(client):
    operation = client.get("/openapi.json").get_json()["paths"][USAGE]["get"]
    assert [parameter["name"] for parameter in operation["parameters"]] == ["from", "to", "group_by"]
    assert operation["security"] == [{"bearer": []}]
    assert set(operation["responses"]) >= {"200", "400", "401"}
