"""The versioned price book: each change a new version, past ones never
rewritten; a call priced by the version in force at its hold, which its hold
and its charge name; a scheduled price in force from its time; a model with
no price in force never served."""
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import psycopg2
import psycopg2.errors
import pytest

from tests.support import (HOUSE_OPENAI, add_models, admin, assert_error, bearer, cost, new_session,
                           readme_ledger_query, send, settings_for, user)

MINI = "openai/gpt-4o-mini"
CHAT = "/v1/chat/completions"


@pytest.fixture
def settings(database, openai_stub):
    openai_stub.reset()
    return settings_for(database.app_url, MIGRATE_DATABASE_URL=database.owner_url,
                        OPENAI_BASE_URL=f"{openai_stub.url}/v1", OPENAI_API_KEY=HOUSE_OPENAI)


def _versions(database, model_id):
    return database.query("SELECT id, effective_from, input_price_per_mtok, output_price_per_mtok FROM model_prices"
                          " WHERE model_id = %s ORDER BY effective_from", (model_id,))


def _call(client, token, model=MINI):
    return client.post(CHAT, headers=bearer(token), json={"model": model, "max_tokens": 50,
                                                          "messages": [{"role": "user", "content": "Hi"}]})


def _charges(database):
    """[(charge, the hold's price version, the charge's)] of every settled call, oldest first."""
    return database.query(
        "SELECT hold.amount - rel.amount, (hold.metadata->>'price_version_id')::bigint,"
        " (rel.metadata->>'price_version_id')::bigint FROM transactions hold"
        " JOIN transactions rel ON rel.related_transaction_id = hold.id AND rel.type = 'release'"
        " ORDER BY hold.id")


def test_the_price_history_is_public_and_new_versions_never_rewrite_old_ones(client, database):
    (first,) = _versions(database, "local/echo")
    listed = client.get("/api/v1/models/local/echo/prices").get_json()["prices"]
    assert [(entry["id"], entry["input_price_per_mtok"], entry["in_force"]) for entry in listed] == [
        (str(first[0]), "0.01", True)]
    assert_error(client.get("/api/v1/models/local/nothing/prices"), 404, "not_found")
    # A catalog load with a new price adds a version in force at once; the same load again adds none.
    changed = {"id": "local/echo", "provider": "local", "name": "Local Echo", "context_window": 8192,
               "max_output_tokens": 512, "input_price_per_mtok": "0.03", "output_price_per_mtok": "0.04",
               "prices_as_of": "2026-12-01", "capabilities": ["fast", "cheap"]}
    add_models(database.owner_url, changed)
    add_models(database.owner_url, changed)
    versions = _versions(database, "local/echo")
    assert versions[0] == first and len(versions) == 2
    assert versions[1][2:] == (Decimal("0.03"), Decimal("0.04"))
    listed = client.get("/api/v1/models/local/echo/prices").get_json()["prices"]
    assert [(entry["input_price_per_mtok"], entry["in_force"]) for entry in listed] == [("0.03", True),
                                                                                        ("0.01", False)]
    assert client.get("/api/v1/models/local/echo").get_json()["input_price_per_mtok"] == "0.03"


@pytest.mark.parametrize("statement", ["UPDATE model_prices SET input_price_per_mtok = 0",
                                       "DELETE FROM model_prices", "TRUNCATE model_prices CASCADE"])
def test_no_one_rewrites_a_price_version_not_even_the_owner(database, statement):
    before = database.query("SELECT * FROM model_prices ORDER BY id")
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        database.query(statement)
    with closing(psycopg2.connect(database.app_url)) as conn, conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("INSERT INTO model_prices (model_id, effective_from, input_price_per_mtok,"
                        " output_price_per_mtok) VALUES ('local/echo', now(), 0, 0)")
    assert database.query("SELECT * FROM model_prices ORDER BY id") == before


def test_a_price_change_between_a_hold_and_its_settle_charges_the_holds_version(app, client, database, openai_stub):
    root = admin(app, client)
    ada = user(client, "ada", funds="5.00")
    (old_version, *_), = _versions(database, MINI)
    gate = openai_stub.behaviour.hold_answers()
    try:
        with ThreadPoolExecutor(1) as caller:
            running = caller.submit(_call, client, ada)
            assert openai_stub.wait_for_requests(1)  # held, and at the provider
            changed = client.patch(f"/api/v1/admin/models/{MINI}", headers=bearer(root), json={
                "changes": {"input_price_per_mtok": "15", "output_price_per_mtok": "60"}, "reason": "repricing"})
            assert changed.status_code == 200, changed.get_json()
            gate.set()
            answer = running.result()
    finally:
        gate.set()
    assert answer.status_code == 200, answer.get_json()
    usage = answer.get_json()["usage"]
    (charged, hold_version, charge_version), = _charges(database)
    assert charged == cost(MINI, usage["prompt_tokens"], usage["completion_tokens"])  # the old prices
    assert hold_version == charge_version == old_version
    # The ledger shows each entry's version.
    ledger = client.get("/api/v1/balance/transactions", headers=bearer(ada)).get_json()["transactions"]
    assert [(entry["type"], entry["price_version_id"]) for entry in ledger] == [
        ("release", str(old_version)), ("hold", str(old_version)), ("deposit", None)]
    # So does the activity feed's row for the call.
    activity = client.get("/api/v1/activity", headers=bearer(ada)).get_json()["activity"]
    assert [(row["kind"], row["price_version_id"]) for row in activity] == [
        ("call", str(old_version)), ("deposit", None)]
    # The next call is priced by the new version.
    assert _call(client, ada).status_code == 200
    new_version = _versions(database, MINI)[-1][0]
    assert _charges(database)[-1][1:] == (new_version, new_version)
    assert database.query(readme_ledger_query()) == []


def test_a_scheduled_price_takes_effect_at_its_time(app, client, database):
    root = admin(app, client)
    ada = user(client, "ada", funds="5.00")
    session = new_session(client, ada)
    starts = datetime.now(timezone.utc) + timedelta(seconds=2)
    scheduled = client.post("/api/v1/admin/models/local/echo/prices", headers=bearer(root), json={
        "input_price_per_mtok": "1", "output_price_per_mtok": "2", "effective_from": starts.isoformat(),
        "reason": "new year's prices"})
    assert scheduled.status_code == 201, scheduled.get_json()
    new_version = int(scheduled.get_json()["version_id"])
    (old_version, *_), _ = _versions(database, "local/echo")
    before = send(client, ada, session)
    assert before.status_code == 201
    while database.query("SELECT now() < %s", (starts,)) == [(True,)]:
        time.sleep(0.1)
    after = send(client, ada, session)
    assert after.status_code == 201
    (_, first_hold, first_charge), (_, second_hold, second_charge) = _charges(database)
    assert (first_hold, first_charge, second_hold, second_charge) == (old_version, old_version, new_version,
                                                                      new_version)
    usage = after.get_json()["usage"]
    assert Decimal(after.get_json()["cost"]) == (Decimal(usage["prompt_tokens"]) * 1
                                                 + Decimal(usage["completion_tokens"]) * 2) / 1_000_000
    assert database.query("SELECT action, target_model FROM admin_actions WHERE admin_id IS NOT NULL") == [
        ("schedule_price", "local/echo")]
    assert database.query(readme_ledger_query()) == []


@pytest.mark.parametrize("change, field", [
    ({"input_price_per_mtok": "-1"}, "input_price_per_mtok"),
    ({"output_price_per_mtok": "0.00000000001"}, "output_price_per_mtok"),
    ({"effective_from": "2020-01-01T00:00:00Z"}, "effective_from"),
    ({"effective_from": "2030-01-01T00:00:00"}, "effective_from"),
    ({"reason": ""}, "reason"),
    ({"cache_read_price_per_mtok": "1"}, "features"),
])
def test_a_bad_price_is_refused_naming_the_field_and_changes_nothing(app, client, database, change, field):
    root = admin(app, client)
    before = database.query("SELECT * FROM model_prices ORDER BY id")
    body = {"input_price_per_mtok": "1", "output_price_per_mtok": "2", "effective_from": "2030-01-01T00:00:00Z",
            "reason": "x", **change}
    refused = client.post("/api/v1/admin/models/local/echo/prices", headers=bearer(root), json=body)
    assert field in str(assert_error(refused, 400, "validation_error")["details"])
    assert database.query("SELECT * FROM model_prices ORDER BY id") == before
    assert database.query("SELECT count(*) FROM admin_actions WHERE admin_id IS NOT NULL") == [(0,)]


def test_a_price_for_an_unknown_model_is_not_found(app, client, database):
    root = admin(app, client)
    unknown = client.post("/api/v1/admin/models/local/nothing/prices", headers=bearer(root), json={
        "input_price_per_mtok": "1", "output_price_per_mtok": "2", "effective_from": "2030-01-01T00:00:00Z",
        "reason": "x"})
    assert_error(unknown, 404, "not_found")
    assert database.query("SELECT count(*) FROM model_prices WHERE model_id = 'local/nothing'") == [(0,)]


def test_a_model_with_no_price_in_force_is_never_served(app, client, database):
    """A model whose only price is still to come (its prices written without a version, as the owner may):
    every way in refuses it with 503 model_unpriced before any hold, never at $0."""
    database.query("ALTER TABLE models DISABLE TRIGGER models_price_version")
    try:
        add_models(database.owner_url, {"id": "local/unpriced", "provider": "local", "name": "Unpriced",
                                        "context_window": 4096, "max_output_tokens": 256,
                                        "input_price_per_mtok": "0", "output_price_per_mtok": "0",
                                        "prices_as_of": "2026-12-01"})
    finally:
        database.query("ALTER TABLE models ENABLE TRIGGER models_price_version")
    ada = user(client, "ada", funds="5.00")
    session = client.post("/api/v1/chat/sessions", json={"model_id": "local/unpriced"}, headers=bearer(ada))
    assert session.status_code == 201, session.get_json()
    assert_error(send(client, ada, session.get_json()["id"]), 503, "model_unpriced")
    refused = _call(client, ada, "local/unpriced")
    assert refused.status_code == 503 and refused.get_json()["error"]["code"] == "model_unpriced"
    assert "local/unpriced" not in {model["id"] for model in client.get("/api/v1/models").get_json()["models"]}
    assert database.query("SELECT count(*) FROM transactions WHERE type = 'hold'") == [(0,)]
