"""Helpers shared by the tests: settings, a live server process, users."""
import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
from contextlib import closing, contextmanager
from decimal import ROUND_CEILING, Decimal
from pathlib import Path

import httpx
import psycopg2
from psycopg2.extensions import parse_dsn

from database.catalog_file import load_catalog, validated
from devtools.cluster import free_port
from devtools.launcher import wait_until_answering

ROOT = Path(__file__).resolve().parent.parent
TEST_ITERATIONS = 1000
PASSWORD = "correct horse battery"
# The operator's keys, in the form the provider stubs accept.
HOUSE_OPENAI = "sk-house-openai-000000000000001"
HOUSE_ANTHROPIC = "sk-ant-house-0000000000000000001"
# catalog.json's input and output prices per million tokens, of the models the tests bill.
PRICES = {"openai/gpt-4o-mini": (Decimal("0.15"), Decimal("0.60")),
          "openai/gpt-4.1": (Decimal("2.00"), Decimal("8.00")),
          "anthropic/claude-3-5-haiku-20241022": (Decimal("0.80"), Decimal("4.00")),
          "anthropic/claude-sonnet-4-20250514": (Decimal("3.00"), Decimal("15.00")),
          "openai/o4-mini": (Decimal("1.10"), Decimal("4.40")),
          "local/echo": (Decimal("0.01"), Decimal("0.02"))}


def cost(model, prompt_tokens, completion_tokens):
    """The catalog price of a call served with a house key, each part rounded up to 10 decimals."""
    input_price, output_price = PRICES[model]
    return sum((tokens * price / 1_000_000).quantize(Decimal("1e-10"), rounding=ROUND_CEILING)
               for tokens, price in ((prompt_tokens, input_price), (completion_tokens, output_price)))


def settings_for(database_url, **overrides):
    """Production settings with test-sized password hashing."""
    settings = {
        "APP_ENV": "production",
        "DATABASE_URL": database_url,
        "SECRET_KEY": "s" * 48,
        "FINGERPRINT_KEY": "f" * 48,
        "ENCRYPTION_KEYS": "test1:" + base64.b64encode(b"k" * 32).decode(),
        "PASSWORD_ITERATIONS": TEST_ITERATIONS,
        "LOG_LEVEL": "WARNING",
        "DB_POOL_TIMEOUT": 2,
        # Tests register and log in far faster than any person; the limits have tests of their own.
        "RATELIMIT_ENABLED": False,
        # One try of each route, so that a test's failing stub is asked once, and no circuit opened by a
        # module's failures in a row; routing's and the breakers' tests set their own.
        "PROVIDER_RETRIES": 0,
        "BREAKER_FAILURES": 1000,
        "BREAKER_MIN_CALLS": 100_000,
    }
    settings.update(overrides)
    return settings


_live_users = iter(range(1_000_000))


def live_user(url, funds):
    """A new user of the service at `url`, registered, logged in and given
    `funds` through the API: (bearer headers, user id)."""
    name = f"live{next(_live_users)}"
    credentials = {"email": f"{name}@example.com", "password": PASSWORD}
    assert httpx.post(f"{url}/api/v1/auth/register", json=credentials | {"username": name}).status_code == 201
    login = httpx.post(f"{url}/api/v1/auth/login", json=credentials).json()
    headers = bearer(login["access_token"])
    assert httpx.post(f"{url}/api/v1/balance/funds", json={"amount": funds}, headers=headers).status_code == 201
    return headers, login["user"]["id"]


@contextmanager
def live_service(database, workers=2, **settings):
    """The service under gunicorn on its own clean `database`, with `settings`;
    `.database` on it queries that database."""
    live = LiveServer(settings_for(database.app_url, **settings), workers=workers)
    live.database = database
    try:
        yield live
    finally:
        live.stop()


class LiveServer:
    """The service under gunicorn in its own process, on a free loopback port."""

    running = set()

    def __init__(self, settings, workers=2, threads=16):
        self.settings = settings  # another instance of the same service starts from them
        self.database_url = settings.get("DATABASE_URL")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **{key: str(value) for key, value in settings.items()},
               "ENV_FILE": os.devnull, "WEB_WORKERS": str(workers), "WEB_THREADS": str(threads)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "gunicorn.conf.py"),
             "--bind", f"127.0.0.1:{self.port}", "wsgi:app"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        # Read as it comes, so that a chatty service never blocks on a full pipe.
        self._log = []
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        LiveServer.running.add(self)
        wait_until_ready(self.url, self.process, output=self.output)

    def _read_log(self):
        for chunk in iter(lambda: self.process.stderr.read1(65536), b""):
            self._log.append(chunk)

    def output(self):
        """What the service wrote to stderr so far (all of it, once it has exited)."""
        if self.process.poll() is not None:
            self._reader.join(timeout=10)
        return b"".join(self._log).decode(errors="replace")

    def kill(self):
        """SIGKILL to the master and every worker: a crash, nothing cleaned up."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._reader.join(timeout=10)
        self.process.stderr.close()
        LiveServer.running.discard(self)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=10)
        self.process.stderr.close()
        LiveServer.running.discard(self)


def stop_servers_on(dbname):
    """Stops the servers a test left running on a database, before its rows are reset."""
    for server in [server for server in LiveServer.running
                   if server.database_url and parse_dsn(server.database_url).get("dbname") == dbname]:
        server.stop()


def wait_until_ready(url, process, timeout=30, path="/readyz", output=None):
    """Returns once `url` + `path` answers 200; raises, with the end of the
    server's output (`output()`, else its stderr pipe), if `process` ends first
    or `timeout` seconds pass."""
    def tail():
        return output() if output else process.stderr.read().decode(errors="replace")
    wait_until_answering(f"{url}{path}", process, timeout, tail)


def register(client, email="ada@example.com", username="ada", password=PASSWORD):
    response = client.post("/api/v1/auth/register",
                           json={"email": email, "username": username, "password": password})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def login(client, email="ada@example.com", password=PASSWORD):
    response = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


# What most tests do first, one way everywhere: register, log in, fund, open a chat session, send.
CHAT_SESSIONS = "/api/v1/chat/sessions"


def fund(client, token, amount):
    response = client.post("/api/v1/balance/funds", json={"amount": str(amount)}, headers=bearer(token))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def user(client, name="ada", funds=None):
    """A registered, logged-in user's access token, optionally with a balance."""
    register(client, email=f"{name}@example.com", username=name)
    token = login(client, email=f"{name}@example.com")["access_token"]
    if funds is not None:
        fund(client, token, funds)
    return token


def admin(app, client, name="root", funds=None):
    """A user made an admin by the owner's `flask admin grant`: their access token."""
    token = user(client, name, funds)
    result = app.test_cli_runner().invoke(args=["admin", "grant", f"{name}@example.com", "--reason", "test operator"])
    assert result.exit_code == 0, result.output
    return token


def new_session(client, token, model_id="local/echo", **extra):
    response = client.post(CHAT_SESSIONS, json={"model_id": model_id, **extra}, headers=bearer(token))
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def send(client, token, session_id=None, content="Hello there", **extra):
    """A message; to a fresh local/echo session (so the hold does not depend on history) unless one is given."""
    session_id = session_id or new_session(client, token)
    return client.post(f"{CHAT_SESSIONS}/{session_id}/messages", json={"content": content, **extra},
                       headers=bearer(token))


def readme_section(title):
    """The text of README's `## title` section, up to the next one."""
    return (ROOT / "README.md").read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def readme_ledger_query():
    """The ledger check exactly as README's Money section prints it."""
    return re.search(r"```sql\n(.*?)```", readme_section("Money"), re.S).group(1)


def assert_error(response, status, code):
    """The one error shape: {"error": {"code", "message", "details"}}, as JSON; returns the error."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert list(body) == ["error"]
    error = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    return error


def user_id_of(database, email="ada@example.com"):
    return database.query("SELECT id FROM users WHERE email = %s", (email,))[0][0]


def raise_alert(database, user_id, subject=None):
    """A low-balance alert for the user, raised by the database's own raise_alert
    (as the ledger's trigger does): one outbox row per webhook of theirs. False
    when `subject` (by default the user) already alerted."""
    return database.query("SELECT raise_alert(%s, %s, 'low_balance', 'test', '{\"available_balance\": \"0\"}')",
                          (user_id, subject or f"test:{user_id}"))[0][0]


def add_models(owner_url, *entries, alias_lists=()):
    """Adds or updates catalog entries (and alias lists), validated as `flask catalog load` does, as the
    database's owner."""
    with closing(psycopg2.connect(owner_url)) as conn, conn, conn.cursor() as cur:
        load_catalog(cur, validated({"models": list(entries), "alias_lists": list(alias_lists)}))


def openai_provider(name, base_url, *key_settings, **extra):
    """A PROVIDERS_FILE entry for a server speaking OpenAI's format, its house keys named by their settings."""
    return {"name": name, "format": "openai", "base_url": base_url, "keys": [{"env": key} for key in key_settings],
            **extra}


def providers_file(directory, *providers):
    """A PROVIDERS_FILE in `directory` declaring `providers`; its path."""
    path = Path(directory) / "providers.json"
    path.write_text(json.dumps({"providers": list(providers)}))
    return path
