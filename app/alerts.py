"""Alert delivery: webhooks (signed) and email, from the outbox the database
fills in the transaction that moved the money (database/alerts.py). Each
worker runs `keep_delivering` beside its requests, so a billed call never
waits for a receiver; `flask alerts deliver` runs one pass by hand or by cron.

A delivery is claimed for a lease before it is sent (SKIP LOCKED: workers
never take the same one at once) and marked when the receiver answered 2xx:
a worker dying in between leaves it to be sent again once the lease ends, so
delivery is at least once, and the delivery id (the same on every attempt)
lets a receiver drop a repeat. A failed attempt is tried again after a
doubling pause, until ALERT_MAX_ATTEMPTS; then the delivery is marked failed.

Each webhook request carries `X-QM-Delivery-Id`, `X-QM-Timestamp` (Unix
seconds) and `X-QM-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>"
under the webhook's secret>`. Its address is checked at registration and
again before each attempt (DNS may change): https only, and no private,
loopback or link-local address, unless the operator allows them. The attempt
then connects to an address that check approved, never resolving the host a
second time (a name that changes between the two, DNS rebinding, reaches
nothing unchecked); the request still names the host, and TLS still checks
the certificate for it."""
import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import secrets
import smtplib
import socket
import ssl
import time
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import httpcore
import httpx

from app.extensions import db, vault
from app.observability import describe_error

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
WEBHOOK_BINDING = "webhook"  # what the vault binds a webhook's secret to, beside its user
CLAIM_BATCH = 20
LONGEST_PAUSE = 3600.0
SUBJECTS = {"low_balance": "Your balance is below your alert threshold",
            "key_spend_80": "An access key has used 80% of its spend limit",
            "key_spend_100": "An access key has reached its spend limit",
            "daily_limit_reached": "You have reached your daily spend limit"}


class RefusedAddress(ValueError):
    """The URL may not be called; the message says why."""


def resolve_host(host, port):
    """Every address `host` resolves to, by the system's resolver: the one
    lookup an attempt makes (the connection goes to what it found)."""
    return sorted({info[4][0] for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)})


def check_webhook_url(url, config):
    """The addresses `url` may be called at now; RefusedAddress unless it is
    https (or http where WEBHOOK_ALLOW_HTTP), its host resolves, and only to
    public addresses (any, where WEBHOOK_ALLOW_PRIVATE) that are not the service's own."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise RefusedAddress("is not a valid URL") from None
    if parts.scheme != "https" and not (parts.scheme == "http" and config["WEBHOOK_ALLOW_HTTP"]):
        raise RefusedAddress("must be an https:// URL")
    if not parts.hostname or parts.username or parts.password:
        raise RefusedAddress("must name a host, and no user or password")
    try:
        found = resolve_host(parts.hostname, port)
    except (OSError, UnicodeError):
        raise RefusedAddress(f"names a host that does not resolve: {parts.hostname}") from None
    if not found:
        raise RefusedAddress(f"names a host that does not resolve: {parts.hostname}")
    if config["WEBHOOK_ALLOW_PRIVATE"]:
        return found
    for address in found:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not ip.is_global or ip.is_multicast:
            raise RefusedAddress(f"resolves to a private or reserved address ({ip}); webhooks must be public")
    if parts.hostname in (config["HOST"], "localhost") and port == config["PORT"]:
        raise RefusedAddress("points at this service")
    return found


class _PinnedBackend(httpcore.SyncBackend):
    """Opens connections to the checked `addresses` (in turn, until one
    answers) whatever host the request names: no second lookup. TLS is
    started by httpcore with the URL's host as server name, so SNI and the
    certificate check are the host's."""

    def __init__(self, addresses):
        self.addresses = addresses

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        for address in self.addresses[:-1]:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError:
                continue
        return super().connect_tcp(self.addresses[-1], port, timeout, local_address, socket_options)


def pinned_client(addresses, config):
    """A client for one attempt that connects only to `addresses`. Redirects
    are not followed (a receiver could point one anywhere), and no proxy from
    the environment is used (it would resolve the host itself). Certificates
    are checked against certifi's roots, or SSL_CERT_FILE's when set."""
    transport = httpx.HTTPTransport()
    # httpx takes no network backend of its own; its pool does.
    transport._pool = httpcore.ConnectionPool(ssl_context=httpx.create_ssl_context(),
                                              network_backend=_PinnedBackend(addresses))
    return httpx.Client(transport=transport, timeout=config["WEBHOOK_TIMEOUT"], follow_redirects=False,
                        trust_env=False)


def new_secret():
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret, timestamp, body):
    """The X-QM-Signature value of `body` (bytes) sent at `timestamp`."""
    signed = f"{timestamp}.".encode() + body
    return "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def body_of(delivery):
    return json.dumps({"id": str(delivery["id"]), **delivery["payload"]}, separators=(",", ":")).encode()


def retry_pause(config, attempts):
    """Seconds before attempt `attempts` + 1: doubling from ALERT_RETRY_SECONDS, jittered by up to a tenth."""
    pause = min(config["ALERT_RETRY_SECONDS"] * 2 ** (attempts - 1), LONGEST_PAUSE)
    return pause * random.uniform(1.0, 1.1)


def deliver_due(config):
    """One pass: claims the deliveries due and attempts each. How many were delivered."""
    delivered = 0
    for delivery in db.claim_due_deliveries(CLAIM_BATCH, config["ALERT_LEASE_SECONDS"]):
        attempts = delivery["attempts"] + 1
        try:
            status = (_post_webhook(delivery, config) if delivery["channel"] == "webhook"
                      else _send_email(delivery, config))
            ok = status is None or 200 <= status < 300
            error = None if ok else f"the receiver answered {status}"
        except (RefusedAddress, httpx.HTTPError, smtplib.SMTPException, OSError) as exc:
            ok, status, error = False, None, _described(exc)
        retry_in = None if ok or attempts >= config["ALERT_MAX_ATTEMPTS"] else retry_pause(config, attempts)
        db.finish_delivery(delivery["id"], attempts, ok, status, error, retry_in)
        if ok:
            delivered += 1
        elif retry_in is None:
            log.warning("alert delivery %s failed for good after %s attempts: %s", delivery["id"], attempts, error)
    return delivered


def _described(exc):
    if isinstance(exc, RefusedAddress):
        return f"the URL {exc}"
    if isinstance(exc, httpx.TimeoutException):
        return "the receiver did not answer in time"
    return describe_error(exc)


def _post_webhook(delivery, config):
    hook = delivery["webhook"]
    addresses = check_webhook_url(hook["url"], config)
    secret = vault.decrypt(hook["encryption_kid"], base64.b64decode(hook["nonce"]),
                           base64.b64decode(hook["encrypted_secret"]), delivery["user_id"], WEBHOOK_BINDING)
    body, timestamp = body_of(delivery), str(int(time.time()))
    with pinned_client(addresses, config) as client:
        answer = client.post(hook["url"], content=body, headers={
            "Content-Type": "application/json", "User-Agent": "q-marketplace-alerts",
            "X-QM-Delivery-Id": str(delivery["id"]), "X-QM-Timestamp": timestamp,
            "X-QM-Signature": signature(secret, timestamp, body)})
    return answer.status_code


def _send_email(delivery, config):
    """Sends the alert to the account's email through SMTP_URL
    (smtp://[user:password@]host[:port], or smtps:// for TLS; ?starttls=true
    upgrades a plain connection). None once the server accepted it."""
    if not config["SMTP_URL"]:
        raise smtplib.SMTPException("SMTP_URL is not set")
    parts = urlsplit(config["SMTP_URL"])
    timeout = config["WEBHOOK_TIMEOUT"]
    if parts.scheme == "smtps":
        server = smtplib.SMTP_SSL(parts.hostname, parts.port or 465, timeout=timeout,
                                  context=ssl.create_default_context())
    else:
        server = smtplib.SMTP(parts.hostname, parts.port or 25, timeout=timeout)
    with server:
        if "starttls=true" in parts.query:
            server.starttls(context=ssl.create_default_context())
        if parts.username:
            server.login(unquote(parts.username), unquote(parts.password or ""))
        message = EmailMessage()
        message["From"] = config["ALERT_EMAIL_FROM"]
        message["To"] = delivery["email"]
        message["Subject"] = SUBJECTS[delivery["kind"]]
        message["X-QM-Delivery-Id"] = str(delivery["id"])
        message.set_content(f"{SUBJECTS[delivery['kind']]}.\n\n"
                            + json.dumps({"id": str(delivery["id"]), **delivery["payload"]}, indent=2) + "\n")
        server.send_message(message)
    return None


def keep_delivering(app, sleep):
    """A worker's loop: a pass every ALERT_POLL_INTERVAL, a failed pass logged and tried again."""
    config = app.config
    sleep(random.uniform(0, min(config["ALERT_POLL_INTERVAL"], 1.0)))  # workers spread out
    while True:
        try:
            with app.app_context():
                deliver_due(config)
        except Exception as exc:
            log.warning("alert delivery pass failed: %s", describe_error(exc))
        sleep(config["ALERT_POLL_INTERVAL"])
