"""A database crash between a call's hold and its settle, for real: the hold
commits without waiting for the disk, PostgreSQL is killed (SIGKILL) before
its WAL reached the kernel, and comes back without the hold and with the
hold's id free again. The next hold gets that id; the first call's settle,
which knows its hold by the token it made, leaves that hold alone: the first
call goes unbilled (it was never held) and nobody pays for anyone else."""
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from uuid import uuid4

import pytest

from app import close_app, create_app
from app.extensions import db
from tests.processes import PrivateServer
from tests.support import bearer, new_session, readme_ledger_query, settings_for, user

APP_PASSWORD = "hold-crash-test-app-password"
MODEL = "openai/gpt-4o-mini"
DEPOSIT, OTHER_HOLD = Decimal("10"), Decimal("0.50")
# The WAL writer sleeps 10 s and nothing else writes WAL out (no autovacuum, no
# background writer, no full-page images), so an asynchronous commit's WAL
# stays in shared memory until the kill.
QUIET_WAL = ("-c wal_writer_delay=10000 -c autovacuum=off -c bgwriter_lru_maxpages=0 -c full_page_writes=off")


@pytest.fixture
def private_server():
    server = PrivateServer(APP_PASSWORD, QUIET_WAL)
    yield server
    server.stop()


@pytest.fixture
def app(private_server, openai_stub):
    openai_stub.reset()
    app = create_app(settings_for(private_server.app_url, OPENAI_BASE_URL=f"{openai_stub.url}/v1",
                                  OPENAI_API_KEY="sk-house-stubkey-000000000001234", PROVIDER_TIMEOUT=60))
    yield app
    close_app(app)


def test_a_hold_lost_in_a_crash_leaves_the_next_hold_under_its_id_alone(app, private_server, openai_stub):
    client = app.test_client()
    token = user(client, funds=DEPOSIT)
    session_url = f"/api/v1/chat/sessions/{new_session(client, token, MODEL)}/messages"
    (user_id,), = private_server.query("SELECT id FROM users")
    # The next id is logged afresh by the hold that takes it, and all before it is on disk.
    private_server.query("SELECT setval(pg_get_serial_sequence('transactions', 'id'), "
                         "(SELECT max(id) + 1 FROM transactions), false)")
    private_server.query("SELECT pg_switch_wal()")
    gate = openai_stub.behaviour.hold_answers()
    try:
        with ThreadPoolExecutor(1) as caller:
            first = caller.submit(client.post, session_url, json={"content": "Hi"}, headers=bearer(token))
            assert openai_stub.wait_for_requests(1)
            (lost_id,), = private_server.query("SELECT id FROM transactions WHERE type = 'hold'")
            private_server.kill()
            private_server.restart()
            assert private_server.query("SELECT count(*) FROM transactions WHERE type = 'hold'") == [(0,)]
            with app.app_context():
                other_token = uuid4()
                other = db.hold_funds(user_id, OTHER_HOLD, "another call's hold", {}, call_timeout=60,
                                      hold_token=other_token)
            assert other["ok"] and other["transaction_id"] == lost_id
            gate.set()
            answer = first.result(timeout=60)
    finally:
        gate.set()
    assert answer.status_code == 201, answer.get_data(as_text=True)
    assert Decimal(answer.get_json()["cost"]) == 0  # never held, so never billed
    assert private_server.query("""SELECT h.amount, r.amount FROM transactions h
                                   LEFT JOIN transactions r ON r.related_transaction_id = h.id
                                   WHERE h.type = 'hold'""") == [(OTHER_HOLD, None)]
    assert private_server.query("SELECT total_balance, spent_balance, held_balance FROM user_balance") == [
        (DEPOSIT, OTHER_HOLD, OTHER_HOLD)]
    with app.app_context():
        assert db.release_hold(user_id, lost_id, OTHER_HOLD, "Returned", {}, hold_token=other_token)["ok"]
    assert private_server.query(readme_ledger_query()) == []
