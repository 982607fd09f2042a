"""A hold's token: each hold carries a random UUID that only its own call
knows. A release that gives it closes only that hold, so after a database
crash that lost a hold and handed its id to another call's hold, the first
call's settle (or its failure's release) cannot close the other call's hold.
The same token asked again answers the same hold, and a settle sent again
answers the settle made, so each can be one statement committed in its own
round trip, sent again when its connection died before the answer came back."""
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from types import SimpleNamespace
from uuid import uuid4

import pytest

from app.extensions import db
from app.pricing import Charge
from tests.money.test_billing_faults import DEPOSIT, MODEL, holds_and_releases, money
from tests.support import bearer, new_session, readme_ledger_query, user, user_id_of

OTHER_HOLD = Decimal("0.50")


@pytest.fixture
def settings(stubbed_settings):
    # A gated call must outlive a busy machine's pauses: its hold is lost by hand meanwhile.
    return {**stubbed_settings, "OPENAI_API_KEY": "sk-house-stubkey-000000000001234", "PROVIDER_TIMEOUT": 60}


@pytest.fixture
def token(client):
    return user(client, funds=DEPOSIT)


def lose_hold(database, hold_id):
    """What a crash leaves when a hold's commit had not reached the disk: no
    hold row, no audit rows of its transaction, the balance as before it, and
    the id sequence back where it was, so the next hold gets the same id."""
    with database.owner() as conn, conn.cursor() as cur:
        cur.execute("SET session_replication_role = replica")  # the audit triggers stay out of the repair
        cur.execute("SELECT user_id, amount, created_at FROM transactions WHERE id = %s AND type = 'hold'", (hold_id,))
        user_id, amount, created_at = cur.fetchone()
        cur.execute("UPDATE user_balance SET spent_balance = spent_balance - %s, held_balance = held_balance - %s "
                    "WHERE user_id = %s", (amount, amount, user_id))
        cur.execute("DELETE FROM transactions WHERE id = %s", (hold_id,))
        cur.execute("DELETE FROM audit_log WHERE created_at = %s", (created_at,))
        cur.execute("SELECT setval(pg_get_serial_sequence('transactions', 'id'), %s - 1)", (hold_id,))
    conn.close()


def hold(app, user_id, amount, hold_token):
    with app.app_context():
        return db.hold_funds(user_id, amount, "Hold for a call", {}, call_timeout=60, hold_token=hold_token)


def release(app, user_id, hold_id, amount, hold_token):
    with app.app_context():
        return db.release_hold(user_id, hold_id, amount, "Returned", {}, hold_token=hold_token)


def test_a_settle_never_closes_another_calls_hold_under_a_lost_holds_id(app, client, token, database, openai_stub):
    session_url = f"/api/v1/chat/sessions/{new_session(client, token, MODEL)}/messages"
    user_id = user_id_of(database)
    gate = openai_stub.behaviour.hold_answers()
    try:
        with ThreadPoolExecutor(1) as caller:
            first = caller.submit(client.post, session_url, json={"content": "Hi"}, headers=bearer(token))
            assert openai_stub.wait_for_requests(1)
            (lost_id,), = database.query("SELECT id FROM transactions WHERE type = 'hold'")
            lose_hold(database, lost_id)
            other_token = uuid4()
            other = hold(app, user_id, OTHER_HOLD, other_token)
            assert other["ok"] and other["transaction_id"] == lost_id  # the lost hold's id, handed out again
            gate.set()
            answer = first.result(timeout=30)
    finally:
        gate.set()
    # The call was answered, and went unbilled: it was never held.
    assert answer.status_code == 201, answer.get_data(as_text=True)
    assert Decimal(answer.get_json()["cost"]) == 0
    # The other call's hold is untouched and still open, for its own settle.
    assert holds_and_releases(database) == [(OTHER_HOLD, None)]
    assert money(database) == (DEPOSIT, OTHER_HOLD, OTHER_HOLD)
    assert release(app, user_id, lost_id, OTHER_HOLD - Decimal("0.2"), other_token)["ok"]
    assert money(database) == (DEPOSIT, Decimal("0.2"), 0)
    assert database.query(readme_ledger_query()) == []


def test_a_release_that_gives_another_token_closes_nothing(app, token, database):
    """The path of a failed call, or of a settle, whose hold was lost: its
    token is not the one the hold under its id carries."""
    user_id = user_id_of(database)
    held = hold(app, user_id, OTHER_HOLD, uuid4())
    refused = release(app, user_id, held["transaction_id"], OTHER_HOLD, uuid4())
    assert (refused["ok"], refused["reason"]) == (False, "invalid_hold")
    assert money(database) == (DEPOSIT, OTHER_HOLD, OTHER_HOLD)
    assert holds_and_releases(database) == [(OTHER_HOLD, None)]
    # Reconcile reads the hold it returns from the ledger, and gives no token.
    assert release(app, user_id, held["transaction_id"], OTHER_HOLD, None)["ok"]
    assert money(database) == (DEPOSIT, 0, 0)
    assert database.query(readme_ledger_query()) == []


def test_a_hold_sent_again_with_its_token_is_the_same_hold(app, token, database):
    user_id = user_id_of(database)
    hold_token = uuid4()
    first = hold(app, user_id, Decimal("0.40"), hold_token)
    again = hold(app, user_id, Decimal("0.40"), hold_token)
    assert first["ok"] and again["ok"] and again["transaction_id"] == first["transaction_id"]
    assert money(database) == (DEPOSIT, Decimal("0.40"), Decimal("0.40"))
    assert database.query("SELECT count(*), min(hold_token::text) FROM transactions WHERE type = 'hold'") == [
        (1, str(hold_token))]
    # Sent alone, the hold still names its acting user in the audit rows of its transaction.
    assert database.query("SELECT DISTINCT acting_user_id FROM audit_log WHERE created_at = "
                          "(SELECT created_at FROM transactions WHERE type = 'hold')") == [(user_id,)]
    assert release(app, user_id, first["transaction_id"], Decimal("0.40"), hold_token)["ok"]
    assert database.query(readme_ledger_query()) == []


def test_a_token_belongs_to_holds_only(database, token):
    user_id = user_id_of(database)
    with pytest.raises(Exception, match="transactions_hold_token_check"):
        database.query("INSERT INTO transactions (user_id, type, amount, available_after, hold_token) "
                       "VALUES (%s, 'deposit', 1, 1, gen_random_uuid())", (user_id,))


def test_a_settle_sent_again_answers_the_settle_made_and_writes_nothing_twice(app, client, token, database):
    user_id = user_id_of(database)
    hold_token = uuid4()
    held = hold(app, user_id, OTHER_HOLD, hold_token)
    session_id = new_session(client, token, MODEL)
    the_hold = SimpleNamespace(id=held["transaction_id"], amount=OTHER_HOLD, model_id=MODEL, token=hold_token,
                               route=SimpleNamespace(provider="openai"))
    charge = Charge(3, 4, 0, 0, 0, None, Decimal("0.0000030"), Decimal(0), Decimal(0), Decimal("0.12"))

    def settle():
        with app.app_context():  # no transaction given: one statement, committed as it runs
            return db.settle_chat_call(user_id, session_id, the_hold, None, "hi", "You said: hi", charge,
                                       {"kind": "settle"})

    first, again = settle(), settle()
    assert first["charged"] and first["saved"]
    assert again == first
    assert holds_and_releases(database) == [(OTHER_HOLD, OTHER_HOLD - Decimal("0.120003"))]
    assert database.query("SELECT count(*) FROM chat_history") == [(2,)]
    assert database.query("SELECT sum(request_count) FROM model_usage_stats") == [(1,)]
    assert database.query("SELECT message_count FROM chat_sessions") == [(2,)]
    assert money(database) == (DEPOSIT, Decimal("0.120003"), 0)
    assert database.query(readme_ledger_query()) == []
    # Its audit rows name the user, though no BEGIN carried the acting user.
    assert database.query("SELECT DISTINCT acting_user_id FROM audit_log WHERE table_name = 'transactions' "
                          "AND operation = 'INSERT'") == [(user_id,)]
