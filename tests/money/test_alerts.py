"""Alerts, once per crossing, from the outbox to a real webhook receiver and a
real SMTP server (aiosmtpd) on 127.0.0.1, through the service under gunicorn:
a balance below its threshold, an access key at 80% and 100% of its limit,
the daily limit reached; under bursts of parallel calls too. Deliveries are
signed, retried, marked failed when the receiver stays down, survive a crash
between the commit and the delivery, and never hold up a billed call."""
import json
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest

from tests.conftest import clean_database
from tests.stubs import SMTPReceiver, WebhookReceiver, verify_signature
from tests.support import bearer, live_service, live_user, readme_ledger_query

ALLOW_LOCAL = {"WEBHOOK_ALLOW_HTTP": True, "WEBHOOK_ALLOW_PRIVATE": True, "ALERT_POLL_INTERVAL": 0.2,
               "ALERT_RETRY_SECONDS": 0.2, "ALERT_MAX_ATTEMPTS": 3, "WEBHOOK_TIMEOUT": 1}
COMPLETIONS = "/v1/chat/completions"


@pytest.fixture(scope="module")
def smtp():
    try:
        receiver = SMTPReceiver()
    except ImportError:
        pytest.skip("aiosmtpd not installed")
    yield receiver
    receiver.stop()


@pytest.fixture
def receiver():
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def server(pg_server, template_db, smtp):
    with clean_database(pg_server, template_db) as database, live_service(
            database, SMTP_URL=smtp.url, **ALLOW_LOCAL) as live:
        yield live


def webhook(server, headers, url):
    answer = httpx.post(f"{server.url}/api/v1/webhooks", json={"url": url}, headers=headers)
    assert answer.status_code == 201, answer.text
    return answer.json()["secret"]


def preferences(server, headers, **chosen):
    answer = httpx.put(f"{server.url}/api/v1/preferences", json=chosen, headers=headers)
    assert answer.status_code == 200, answer.text


def access_key(server, headers, **fields):
    answer = httpx.post(f"{server.url}/api/v1/access-keys", json={"name": "alerts", **fields}, headers=headers)
    assert answer.status_code == 201, answer.text
    return answer.json()["key"]


def burst(server, token, count, parallel=8, max_tokens=16):
    """`count` calls at once (`parallel` at a time): their statuses."""
    def one(_):
        return httpx.post(f"{server.url}{COMPLETIONS}", headers=bearer(token), timeout=30,
                          json={"model": "local/echo", "messages": [{"role": "user", "content": "hi"}],
                                "max_tokens": max_tokens}).status_code
    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(one, range(count)))


def alerts(received):
    return [json.loads(request["body"]) for request in received]


def settled_kinds(server, user_id, count, timeout=20):
    """The kinds of the user's deliveries once `count` are no longer pending."""
    deadline = time.monotonic() + timeout
    while True:
        rows = server.database.query("SELECT kind, status FROM alert_deliveries WHERE user_id = %s", (user_id,))
        if (len(rows) >= count and all(status != "pending" for _, status in rows)) or time.monotonic() > deadline:
            return sorted(kind for kind, _ in rows)
        time.sleep(0.1)


def test_low_balance_alerts_once_per_crossing_under_bursts(server, receiver, smtp):
    headers, user_id = live_user(server.url, "1")
    token = headers["Authorization"].split()[1]
    secret = webhook(server, headers, f"{receiver.url}/hook")
    # The first hold (up to 500 output tokens) takes the balance below; the rest stay below.
    preferences(server, headers, low_balance_threshold="0.99999", email_alerts=True)
    before_mail = len(smtp.messages)
    assert set(burst(server, token, 24, max_tokens=500)) == {200}
    assert set(burst(server, token, 24, max_tokens=500)) == {200}  # below all along: nothing more
    assert settled_kinds(server, user_id, 2) == ["low_balance"] * 2  # a webhook and an email
    # A top-up lifts it to the threshold again (re-armed); with a higher threshold the next burst falls below.
    assert httpx.post(f"{server.url}/api/v1/balance/funds", json={"amount": "0.01"}, headers=headers).status_code \
        == 201
    preferences(server, headers, low_balance_threshold="1.01", email_alerts=True)
    assert set(burst(server, token, 24, max_tokens=500)) == {200}
    receiver.wait_for(2)
    assert settled_kinds(server, user_id, 4) == ["low_balance"] * 4
    time.sleep(1)  # a duplicate would come within a few delivery passes
    received = receiver.received
    assert [alert["type"] for alert in alerts(received)] == ["low_balance", "low_balance"]
    assert len({alert["id"] for alert in alerts(received)}) == 2
    for request in received:
        verify_signature(secret, request)
        assert request["path"] == "/hook"
    assert Decimal(alerts(received)[0]["data"]["available_balance"]) < Decimal("0.99999")
    mail = [message for message in smtp.wait_for(before_mail + 2)
            if message.rcpt_tos == [_email(server, user_id)]]
    assert len(mail) == 2
    assert b"below your alert threshold" in mail[0].content
    assert server.database.query(readme_ledger_query()) == []


def _email(server, user_id):
    return server.database.query("SELECT email FROM users WHERE id = %s", (user_id,))[0][0]


def test_a_key_alerts_at_80_and_100_percent_once_each(server, receiver):
    headers, user_id = live_user(server.url, "5")
    secret = webhook(server, headers, receiver.url)
    limit = Decimal("0.00002")
    key = access_key(server, headers, spend_limit=str(limit), spend_limit_period="month")
    statuses = []
    for _ in range(30):  # until the limit refuses calls, and a burst of refusals more
        statuses += burst(server, key, 16)
        if statuses.count(402) >= 16:
            break
    assert 402 in statuses and 200 in statuses
    charged = server.database.query("SELECT spent FROM access_keys WHERE user_id = %s", (user_id,))[0][0]
    assert charged >= limit * Decimal("0.8")
    assert settled_kinds(server, user_id, 2) == ["key_spend_100", "key_spend_80"]
    received = receiver.wait_for(2)
    time.sleep(1)
    assert sorted(alert["type"] for alert in alerts(receiver.received)) == ["key_spend_100", "key_spend_80"]
    for request in received:
        verify_signature(secret, request)
        assert json.loads(request["body"])["data"]["spend_limit"].rstrip("0") == str(limit).rstrip("0")
    assert server.database.query(readme_ledger_query()) == []


def test_the_daily_limit_alerts_once_however_many_calls_it_refuses(server, receiver):
    headers, user_id = live_user(server.url, "1")
    webhook(server, headers, receiver.url)
    preferences(server, headers, daily_spend_limit="0.000001")
    statuses = burst(server, headers["Authorization"].split()[1], 16)
    assert 402 in statuses
    assert settled_kinds(server, user_id, 1) == ["daily_limit_reached"]
    receiver.wait_for(1)
    time.sleep(1)
    assert [alert["type"] for alert in alerts(receiver.received)] == ["daily_limit_reached"]


def test_a_failing_receiver_is_retried_with_the_same_delivery_id(server, receiver):
    receiver.statuses = [500, 503]
    headers, user_id = live_user(server.url, "1")
    secret = webhook(server, headers, receiver.url)
    preferences(server, headers, low_balance_threshold="1")
    assert burst(server, headers["Authorization"].split()[1], 1) == [200]
    received = receiver.wait_for(3)
    assert len(received) == 3 and len({json.loads(request["body"])["id"] for request in received}) == 1
    for request in received:
        verify_signature(secret, request)
    assert settled_kinds(server, user_id, 1) == ["low_balance"]
    status, attempts, last_status = server.database.query(
        "SELECT status, attempts, last_status FROM alert_deliveries WHERE user_id = %s", (user_id,))[0]
    assert (status, attempts, last_status) == ("delivered", 3, 200)
    log = httpx.get(f"{server.url}/api/v1/alerts/deliveries", headers=headers).json()["deliveries"]
    assert [(entry["kind"], entry["status"], entry["attempts"]) for entry in log] == [("low_balance", "delivered", 3)]


def test_a_receiver_down_or_silent_and_smtp_down_end_failed_and_never_hold_a_call(pg_server, template_db, receiver):
    receiver.gate.clear()  # takes requests and never answers (until the test ends)
    with clean_database(pg_server, template_db) as database, live_service(
            database, SMTP_URL="smtp://127.0.0.1:1", **ALLOW_LOCAL) as live:
        headers, user_id = live_user(live.url, "1")
        webhook(live, headers, receiver.url)
        webhook(live, headers, "http://127.0.0.1:1/closed")
        preferences(live, headers, low_balance_threshold="1", email_alerts=True)
        token = headers["Authorization"].split()[1]
        assert burst(live, token, 1) == [200]
        receiver.wait_for(1)
        # The silent receiver holds a delivery open: calls are answered all the same.
        assert set(burst(live, token, 8)) == {200}
        assert settled_kinds(live, user_id, 3, timeout=30) == ["low_balance"] * 3
        rows = live.database.query("SELECT channel, status, attempts, last_error FROM alert_deliveries "
                                   "WHERE user_id = %s ORDER BY channel", (user_id,))
        assert [(channel, status, attempts) for channel, status, attempts, _ in rows] == [
            ("email", "failed", 3), ("webhook", "failed", 3), ("webhook", "failed", 3)]
        assert all(error for *_, error in rows)
        assert any("in time" in error for *_, error in rows)
        assert live.database.query(readme_ledger_query()) == []


def test_a_crash_between_commit_and_delivery_still_delivers_once(pg_server, template_db, receiver):
    with clean_database(pg_server, template_db) as database:
        # Passes an hour apart: the first (within a second of start) finds nothing.
        with live_service(database, **{**ALLOW_LOCAL, "ALERT_POLL_INTERVAL": 3600}) as first:
            time.sleep(1.5)
            headers, user_id = live_user(first.url, "1")
            webhook(first, headers, receiver.url)
            preferences(first, headers, low_balance_threshold="1")
            assert burst(first, headers["Authorization"].split()[1], 1) == [200]
            first.kill()
        assert database.query("SELECT status, attempts FROM alert_deliveries WHERE user_id = %s",
                              (user_id,)) == [("pending", 0)]
        assert receiver.received == []
        with live_service(database, **ALLOW_LOCAL) as second:
            received = receiver.wait_for(1)
            assert settled_kinds(second, user_id, 1) == ["low_balance"]
            time.sleep(1)
            assert len(receiver.received) == len(received) == 1


@pytest.mark.parametrize("url, says", [
    ("http://93.184.216.34/hook", "https"),
    ("https://127.0.0.1/hook", "private"),
    ("https://10.1.2.3/hook", "private"),
    ("https://[::1]/hook", "private"),
    ("https://169.254.169.254/latest", "private"),
    ("https://user:pw@93.184.216.34/", "no user"),
    ("https://" + "a" * 2000 + ".example/", "2000"),
    ("https://no-such-host.invalid/hook", "resolve"),
])
def test_webhook_urls_that_could_reach_inside_are_refused(client, url, says):
    from tests.support import assert_error, user
    token = user(client)
    error = assert_error(client.post("/api/v1/webhooks", json={"url": url}, headers=bearer(token)), 400,
                         "validation_error")
    assert list(error["details"]) == ["url"] and says in error["details"]["url"]
    assert client.get("/api/v1/webhooks", headers=bearer(token)).get_json()["webhooks"] == []


def test_a_public_webhook_is_registered_listed_and_deleted(client):
    from tests.support import user
    token = user(client)
    created = client.post("/api/v1/webhooks", json={"url": "https://93.184.216.34/hook"}, headers=bearer(token))
    assert created.status_code == 201
    secret = created.get_json()["secret"]
    listed = client.get("/api/v1/webhooks", headers=bearer(token)).get_json()["webhooks"]
    assert [hook["url"] for hook in listed] == ["https://93.184.216.34/hook"] and "secret" not in listed[0]
    assert secret not in json.dumps(listed)
    other = user(client, "bob")
    assert client.delete(f"/api/v1/webhooks/{listed[0]['id']}", headers=bearer(other)).status_code == 404
    assert client.delete(f"/api/v1/webhooks/{listed[0]['id']}", headers=bearer(token)).status_code == 204
    assert client.get("/api/v1/webhooks", headers=bearer(token)).get_json()["webhooks"] == []


def test_a_webhooks_deliveries_are_paged_and_its_state_is_its_newest_delivery(client, database):
    from tests.support import assert_error, raise_alert, user, user_id_of
    token = user(client)
    created = [client.post("/api/v1/webhooks", json={"url": f"https://93.184.216.34/{name}"}, headers=bearer(token))
               for name in ("one", "two")]
    first, second = (answer.get_json()["id"] for answer in created)
    listed = client.get("/api/v1/webhooks", headers=bearer(token)).get_json()["webhooks"]
    assert [hook["last_delivery_status"] for hook in listed] == [None, None]
    for subject in ("a", "b", "c"):
        assert raise_alert(database, user_id_of(database), subject)
    database.query("UPDATE alert_deliveries SET status = 'failed' WHERE webhook_id = %s", (second,))
    listed = client.get("/api/v1/webhooks", headers=bearer(token)).get_json()["webhooks"]
    assert {hook["id"]: hook["last_delivery_status"] for hook in listed} == {first: "pending", second: "failed"}

    seen, cursor = [], None
    while True:
        page = client.get(f"/api/v1/webhooks/{first}/deliveries", query_string={"limit": 2, "cursor": cursor},
                          headers=bearer(token)).get_json()
        seen += page["deliveries"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 3 and {entry["webhook_id"] for entry in seen} == {first}
    assert len({entry["id"] for entry in seen}) == 3
    assert len(client.get("/api/v1/alerts/deliveries", headers=bearer(token)).get_json()["deliveries"]) == 6

    other = user(client, "bob")
    assert_error(client.get(f"/api/v1/webhooks/{first}/deliveries", headers=bearer(other)), 404, "not_found")
    assert_error(client.get("/api/v1/webhooks/not-an-id/deliveries", headers=bearer(token)), 404, "not_found")
    bad_cursor = assert_error(client.get(f"/api/v1/webhooks/{first}/deliveries?cursor=zz", headers=bearer(token)),
                              400, "validation_error")
    assert list(bad_cursor["details"]) == ["cursor"]
    bad_limit = assert_error(client.get(f"/api/v1/webhooks/{first}/deliveries?limit=0", headers=bearer(token)),
                             400, "validation_error")
    assert list(bad_limit["details"]) == ["limit"]
