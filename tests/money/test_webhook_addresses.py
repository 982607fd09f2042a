"""A webhook's address at delivery time: each attempt looks its host up once,
checks every address found, and connects to a checked address only (DNS
pinning), so a name that turns private after registration (DNS rebinding)
reaches nothing. Lookups go through app.alerts.resolve_host, the system's
resolver in production; these tests put a resolver of their own in its place
to change what a name resolves to between registration and delivery. TLS
still names and verifies the host, not the address. The webhook receiver
(over TLS too) and the database are real."""
import socket
import subprocess
import time

import pytest

import app.alerts
from app.alerts import deliver_due
from tests.stubs import WebhookReceiver, verify_signature
from tests.support import bearer, raise_alert, settings_for, user, user_id_of

PUBLIC = "93.184.216.34"  # never connected to: every test here refuses it or resolves elsewhere


@pytest.fixture
def settings(database):
    return settings_for(database.app_url, WEBHOOK_ALLOW_HTTP=True, ALERT_RETRY_SECONDS=0.05, ALERT_MAX_ATTEMPTS=3)


@pytest.fixture
def receiver():
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()


class Resolver:
    """What each name resolves to, changed by the test; every lookup is kept."""

    def __init__(self, monkeypatch, **names):
        self.names, self.lookups = names, []
        monkeypatch.setattr(app.alerts, "resolve_host", self)

    def __call__(self, host, port):
        self.lookups.append(host)
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.names[host]


def deliver_until_settled(flask_app, database, user_id, timeout=20):
    """Runs delivery passes until none of the user's deliveries is pending: their (status, attempts, last_error)."""
    deadline = time.monotonic() + timeout
    while True:
        with flask_app.app_context():
            deliver_due(flask_app.config)
        rows = database.query("SELECT status, attempts, last_error FROM alert_deliveries WHERE user_id = %s",
                              (user_id,))
        if rows and all(status != "pending" for status, *_ in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def register(client, token, url):
    answer = client.post("/api/v1/webhooks", json={"url": url}, headers=bearer(token))
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()["secret"]


def test_a_name_that_turns_private_after_registration_is_refused_at_every_attempt(
        app, client, database, receiver, monkeypatch):
    port = receiver.url.rsplit(":", 1)[1]
    resolver = Resolver(monkeypatch, **{"hooks.example": [PUBLIC]})
    token = user(client)
    register(client, token, f"http://hooks.example:{port}/hook")
    resolver.names["hooks.example"] = ["127.0.0.1"]  # where the receiver listens
    user_id = user_id_of(database)
    assert raise_alert(database, user_id)

    rows = deliver_until_settled(app, database, user_id)
    assert [(status, attempts) for status, attempts, _ in rows] == [("failed", 3)]
    assert "private" in rows[0][2] and "127.0.0.1" in rows[0][2]
    assert receiver.received == []
    assert resolver.lookups == ["hooks.example"] * 4  # registration, then once per attempt
    log = client.get("/api/v1/alerts/deliveries", headers=bearer(token)).get_json()["deliveries"]
    assert [(entry["status"], entry["attempts"]) for entry in log] == [("failed", 3)]


def test_an_attempt_connects_to_the_address_its_check_approved(settings, database, receiver, monkeypatch):
    from app import close_app, create_app
    # The system's resolver knows no .test name: only the checked address can be reached.
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("receiver.test", 80)
    flask_app = create_app({**settings, "WEBHOOK_ALLOW_PRIVATE": True})
    client = flask_app.test_client()
    port = receiver.url.rsplit(":", 1)[1]
    resolver = Resolver(monkeypatch, **{"receiver.test": ["127.0.0.1"]})
    token = user(client)
    secret = register(client, token, f"http://receiver.test:{port}/hook")
    user_id = user_id_of(database)
    assert raise_alert(database, user_id)

    rows = deliver_until_settled(flask_app, database, user_id)
    assert [(status, attempts) for status, attempts, _ in rows] == [("delivered", 1)]
    [request] = receiver.received
    assert request["headers"]["Host"] == f"receiver.test:{port}"  # the request still names the host
    assert request["path"] == "/hook"
    verify_signature(secret, request)
    assert resolver.lookups == ["receiver.test"] * 2
    close_app(flask_app)


@pytest.fixture
def tls_receiver(tmp_path, monkeypatch):
    """An https receiver whose certificate names receiver.test only, trusted
    through SSL_CERT_FILE (as an operator would trust a private CA)."""
    cert, key = tmp_path / "receiver.pem", tmp_path / "receiver.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=receiver.test", "-addext", "subjectAltName=DNS:receiver.test", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    receiver = WebhookReceiver(certificate=(str(cert), str(key)))
    yield receiver
    receiver.stop()


def test_tls_names_and_verifies_the_host_while_connecting_to_the_checked_address(settings, database, tls_receiver,
                                                                                 monkeypatch):
    from app import close_app, create_app
    flask_app = create_app({**settings, "WEBHOOK_ALLOW_PRIVATE": True})
    client = flask_app.test_client()
    Resolver(monkeypatch, **{"receiver.test": ["127.0.0.1"], "impostor.test": ["127.0.0.1"]})
    token = user(client)
    secret = register(client, token, f"https://receiver.test:{tls_receiver.port}/hook")
    register(client, token, f"https://impostor.test:{tls_receiver.port}/hook")  # the certificate does not name it
    user_id = user_id_of(database)
    assert raise_alert(database, user_id)

    rows = deliver_until_settled(flask_app, database, user_id)
    assert sorted((status, attempts) for status, attempts, _ in rows) == [("delivered", 1), ("failed", 3)]
    assert any("certificate" in (error or "").lower() for *_, error in rows)
    [request] = tls_receiver.received  # only the host the certificate names got the alert
    assert request["headers"]["Host"] == f"receiver.test:{tls_receiver.port}"
    verify_signature(secret, request)
    close_app(flask_app)


def test_the_system_resolver_answers_every_address_and_refuses_an_unknown_name():
    assert "127.0.0.1" in app.alerts.resolve_host("localhost", 80)
    with pytest.raises(OSError):
        app.alerts.resolve_host("no-such-host.invalid", 443)
