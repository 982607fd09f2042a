"""Settings: defaults, then `.env`, then the process environment, then what a
caller (a test) passes in. Every key read here is listed in `.env.example`."""
import base64
import binascii
import os
import secrets
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import quote

import psycopg2
from dotenv import dotenv_values

from app.money import MONEY_LIMIT
from app.providers.registry import ProvidersError, configured_providers
from database.roles import login_powers

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIN_SECRET_BYTES = 32
SERVICE_LOGIN = "app_user"
LOGIN_CHECK_TIMEOUT_SECONDS = 5


class ConfigError(RuntimeError):
    """A setting is missing or unusable; the message says which and why."""


def _text(value):
    return "" if value is None else str(value).strip()


def _integer(minimum, maximum=None):
    def parse(value):
        number = int(value)
        if number < minimum or (maximum is not None and number > maximum):
            raise ValueError(f"must be between {minimum} and {maximum or 'unbounded'}")
        return number
    return parse


def _flag(value):
    if isinstance(value, bool):
        return value
    text = _text(value).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _decimal(value):
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError("must be a decimal number") from None
    if not amount.is_finite() or amount <= 0:
        raise ValueError("must be a positive decimal number")
    if amount >= MONEY_LIMIT:
        raise ValueError(f"must be below {MONEY_LIMIT:f}, the most the ledger can hold")
    return amount


def _rate(value):
    try:
        rate = Decimal(str(value))
    except InvalidOperation:
        raise ValueError("must be a decimal number") from None
    if not rate.is_finite() or not 0 <= rate <= 1:
        raise ValueError("must be a decimal number from 0 to 1")
    return rate


def _choice(*allowed):
    def parse(value):
        text = _text(value)
        if text not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return text
    return parse


def _csv(value):
    if isinstance(value, (list, tuple)):
        return [str(item) for item in value]
    return [item.strip() for item in _text(value).split(",") if item.strip()]


def _seconds(value):
    seconds = float(value)
    if not 0 < seconds <= 3600:
        raise ValueError("must be between 0 and 3600 seconds")
    return seconds


# name: (default, parser). The parser turns a string (or an already typed value
# passed by a caller) into the value the application uses.
SETTINGS = {
    "APP_ENV": ("production", _choice("production", "development")),
    "HOST": ("127.0.0.1", _text),
    "PORT": ("8000", _integer(1, 65535)),
    "DATABASE_URL": ("", _text),
    "MIGRATE_DATABASE_URL": ("", _text),
    "DB_HOST": ("", _text),
    "DB_PORT": ("5432", _integer(1, 65535)),
    "DB_NAME": ("qmarket", _text),
    "DB_USER": ("app_user", _text),
    "DB_PASSWORD": ("", _text),
    "DB_POOL_SIZE": ("10", _integer(1, 1000)),
    "DB_POOL_TIMEOUT": ("5", _seconds),
    "SECRET_KEY": ("", _text),
    "ENCRYPTION_KEYS": ("", _text),
    "FINGERPRINT_KEY": ("", _text),
    "PASSWORD_ITERATIONS": ("600000", _integer(1, 10_000_000)),
    "ACCESS_TOKEN_TTL": ("900", _integer(1, 86400)),
    "REFRESH_TOKEN_TTL": (str(30 * 86400), _integer(60, 365 * 86400)),
    "JWT_ISSUER": ("q-marketplace", _text),
    "JWT_AUDIENCE": ("q-marketplace-api", _text),
    "CORS_ORIGINS": ("", _csv),
    "RATELIMIT_STORAGE_URI": ("memory://", _text),
    "RATELIMIT_ENABLED": ("true", _flag),
    # flask-limiter notation; per client address (auth) or per user (chat).
    "RATE_LIMIT_AUTH": ("20 per minute", _text),
    "RATE_LIMIT_CHAT": ("120 per minute", _text),
    "RATE_LIMIT_ACCESS_KEY": ("600 per minute", _text),
    # Failed logins per email (counted in PostgreSQL, whoever sends them) before
    # that email is locked for LOGIN_LOCKOUT_SECONDS.
    "LOGIN_LOCKOUT_THRESHOLD": ("10", _integer(1, 10_000)),
    "LOGIN_LOCKOUT_SECONDS": ("900", _integer(1, 86400)),
    # Reverse proxies in front of the service whose X-Forwarded-For to trust.
    "TRUSTED_PROXIES": ("0", _integer(0, 10)),
    "OPENAI_BASE_URL": ("https://api.openai.com/v1", _text),
    "ANTHROPIC_BASE_URL": ("https://api.anthropic.com/v1", _text),
    # The operator's own provider keys ("house keys"), for users holding none
    # of their own; unset means calls need the user's key.
    "OPENAI_API_KEY": ("", _text),
    "ANTHROPIC_API_KEY": ("", _text),
    # A JSON file of more providers (any OpenAI-compatible server: vLLM, Ollama, …)
    # or of the built-in ones' replacements; see app/providers/registry.py.
    "PROVIDERS_FILE": ("", _text),
    # A call made with the user's own key (BYOK) is charged this share of its
    # catalog cost, rounded up to the ledger's 10 decimals.
    "BYOK_FEE_RATE": ("0.05", _rate),
    "PROVIDER_TIMEOUT": ("60", _seconds),
    # Rounds more over a call's routes once every one failed in a way that
    # moves on (app/routing.py), each after a jittered, doubling pause or the
    # Retry-After asked, all before the first byte's PROVIDER_TIMEOUT.
    "PROVIDER_RETRIES": ("2", _integer(0, 10)),
    # Circuit breakers per deployment (app/breakers.py): failures in a row that
    # open one, or half the calls of a window once it saw BREAKER_MIN_CALLS;
    # seconds it stays open before one call probes it.
    "BREAKER_FAILURES": ("5", _integer(1, 1000)),
    "BREAKER_WINDOW": ("60", _seconds),
    "BREAKER_MIN_CALLS": ("20", _integer(1, 100_000)),
    "BREAKER_COOLDOWN": ("30", _seconds),
    "STREAM_TIMEOUT": ("600", _seconds),
    # A streaming client that takes nothing this long while something waits for
    # it, or holds its stream back this long in all, is cut off; its call is
    # billed for all the provider produced all the same.
    "CLIENT_IDLE_TIMEOUT": ("30", _seconds),
    # A hold still unsettled this long after its call's deadline was left by a
    # crash: reconcile returns it (and a retry may take over its Idempotency-Key).
    "HOLD_GRACE_SECONDS": ("30", _seconds),
    # How often each worker returns such holds while the service runs (a worker
    # that died mid-call leaves one); start-up returns all of them.
    "RECONCILE_INTERVAL": ("60", _seconds),
    "SELF_TOPUP_ENABLED": ("true", _flag),
    "MAX_TOPUP": ("1000", _decimal),
    # The largest request body of the inference API (/v1), in bytes: its
    # prompts may carry images as base64. Every other body: MAX_BODY_BYTES.
    "MAX_INFERENCE_BODY": (str(20 * 1024 * 1024), _integer(1024 * 1024, 1024 * 1024 * 1024)),
    "LOG_LEVEL": ("INFO", _choice("DEBUG", "INFO", "WARNING", "ERROR")),
    # Unset: 1 while rate limits are counted in memory:// (see _web_workers), else 2.
    "WEB_WORKERS": ("", lambda value: _integer(1, 64)(value) if _text(value) else None),
    # Requests each gevent worker serves at once, an open stream one for as long
    # as it lasts (see BENCHMARKS.md, "Concurrent streams").
    "WEB_THREADS": ("1100", _integer(1, 10_000)),
    # Off: no Prometheus figure is counted and there is no /metrics (saves their
    # few tens of microseconds a call; BENCHMARKS.md, "Metrics and alerts").
    "METRICS_ENABLED": ("true", _flag),
    # GET /metrics answers only a request bearing this token (Authorization: Bearer …);
    # unset, there is no /metrics at all. A request without it gets METRICS_REFUSAL_STATUS.
    "METRICS_TOKEN": ("", _text),
    "METRICS_REFUSAL_STATUS": ("404", lambda value: int(_choice("401", "404")(value))),
    # Set: /metrics is served on this port of METRICS_HOST by a listener of its own
    # (app/metrics_listener.py), and no longer on the API's port. Unset: on the API's.
    "METRICS_PORT": ("", lambda value: _integer(1, 65535)(value) if _text(value) else None),
    "METRICS_HOST": ("127.0.0.1", _text),
    # Alerts (app/alerts.py): webhooks must be https and public unless these allow
    # otherwise (development, tests); each attempt's timeout (SMTP's too).
    "WEBHOOK_ALLOW_HTTP": ("false", _flag),
    "WEBHOOK_ALLOW_PRIVATE": ("false", _flag),
    "WEBHOOK_TIMEOUT": ("5", _seconds),
    # Attempts per delivery, the first pause between them (doubling), and how long a
    # worker holds a claimed delivery before another may send it again.
    "ALERT_MAX_ATTEMPTS": ("8", _integer(1, 100)),
    "ALERT_RETRY_SECONDS": ("10", _seconds),
    "ALERT_LEASE_SECONDS": ("60", _seconds),
    # Seconds between each worker's passes over the outbox.
    "ALERT_POLL_INTERVAL": ("2", _seconds),
    # smtp://[user:password@]host[:port] (smtps:// for TLS, ?starttls=true to upgrade);
    # empty: email alerts are marked failed.
    "SMTP_URL": ("", _text),
    "ALERT_EMAIL_FROM": ("alerts@localhost", _text),
    # OpenTelemetry traces go to this OTLP/HTTP collector (…:4318); empty: tracing is off.
    "OTEL_EXPORTER_OTLP_ENDPOINT": ("", _text),
    # Days `flask prune` keeps chat messages, audit rows and finished alert
    # deliveries (0: for ever). Ledger rows are never deleted.
    "CHAT_RETENTION_DAYS": ("0", _integer(0, 36500)),
    "AUDIT_RETENTION_DAYS": ("365", _integer(0, 36500)),
    "ALERT_DELIVERY_RETENTION_DAYS": ("30", _integer(0, 36500)),
}
# The commands that make each secret, as .env.example also gives them.
_TOKEN_RECIPE = '''python3 -c "import secrets; print(secrets.token_urlsafe(48))"'''
SECRET_RECIPES = {
    "SECRET_KEY": _TOKEN_RECIPE,
    "FINGERPRINT_KEY": _TOKEN_RECIPE,
    "ENCRYPTION_KEYS": ('''python3 -c "import base64, secrets; '''
                        '''print('k1:' + base64.b64encode(secrets.token_bytes(32)).decode())"'''),
}


def env_file_path():
    return Path(os.environ.get("ENV_FILE") or PROJECT_ROOT / ".env")


def read_env_file(path=None):
    """The `.env` file's values, without touching os.environ."""
    path = Path(path or env_file_path())
    return {k: v for k, v in dotenv_values(path).items() if v is not None} if path.exists() else {}


def load_config(overrides=None, check_secrets=True):
    """Every setting, typed and checked. Raises ConfigError naming the bad one."""
    layers = [read_env_file(), os.environ, overrides or {}]
    config = {}
    for name, (default, parse) in SETTINGS.items():
        raw = default
        for layer in layers:
            if layer.get(name) not in (None, ""):
                raw = layer[name]
        try:
            config[name] = parse(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name}: {exc}") from None
    config["DATABASE_URL"] = config["DATABASE_URL"] or _url_from_parts(config)
    config["MIGRATE_DATABASE_URL"] = config["MIGRATE_DATABASE_URL"] or config["DATABASE_URL"]
    config["ENCRYPTION_KEYS"] = parse_encryption_keys(config["ENCRYPTION_KEYS"])
    config["WEB_WORKERS"] = _web_workers(config)
    try:
        config["PROVIDERS"] = configured_providers(config, lambda name: _setting(config, layers, name))
    except ProvidersError as exc:
        raise ConfigError(str(exc)) from None
    if check_secrets:
        _check_secrets(config)
    return config


def _setting(config, layers, name):
    """A setting's value, also for one this file does not list (a provider's key)."""
    if name in config:
        return config[name]
    return next((_text(layer[name]) for layer in reversed(layers) if layer.get(name) not in (None, "")), "")


def _web_workers(config):
    """memory:// counts rate limits inside each worker process, so n workers
    would let n times every limit through: one worker, unless limits are off
    or kept in a shared store such as Redis."""
    per_process = config["RATELIMIT_ENABLED"] and config["RATELIMIT_STORAGE_URI"].startswith("memory://")
    workers = config["WEB_WORKERS"]
    if workers is None:
        return 1 if per_process else 2
    if per_process and workers > 1:
        raise ConfigError(
            f"WEB_WORKERS: {workers} workers with RATELIMIT_STORAGE_URI=memory:// would each count the rate "
            f"limits on their own, letting up to {workers} times every limit through. Set RATELIMIT_STORAGE_URI "
            "to a shared store (redis://host:6379), or WEB_WORKERS=1 (or leave it unset).")
    return workers


def _url_from_parts(config):
    if not config["DB_HOST"]:
        return ""
    user = quote(config["DB_USER"], safe="")
    password = quote(config["DB_PASSWORD"], safe="")
    credentials = f"{user}:{password}" if password else user
    host = f"[{config['DB_HOST']}]" if ":" in config["DB_HOST"] else config["DB_HOST"]  # IPv6 literal
    return f"postgresql://{credentials}@{host}:{config['DB_PORT']}/{config['DB_NAME']}"


def parse_encryption_keys(value):
    """`kid:base64-32-bytes,...`, newest first → list of (kid, key bytes)."""
    if isinstance(value, list):
        return value
    keys = []
    for entry in _csv(value):
        kid, _, encoded = entry.partition(":")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not kid or len(key) != 32:
            raise ConfigError(f"ENCRYPTION_KEYS: entry {kid or '?'!r} must be kid:base64 of 32 bytes")
        if kid in (existing for existing, _ in keys):
            raise ConfigError(f"ENCRYPTION_KEYS: key id {kid!r} appears twice")
        keys.append((kid, key))
    return keys


def _check_secrets(config):
    if config["APP_ENV"] != "production":
        # Development may run without secrets: tokens and stored keys then last one process only.
        config["SECRET_KEY"] = config["SECRET_KEY"] or secrets.token_urlsafe(48)
        config["FINGERPRINT_KEY"] = config["FINGERPRINT_KEY"] or secrets.token_urlsafe(48)
        config["ENCRYPTION_KEYS"] = config["ENCRYPTION_KEYS"] or [("dev", secrets.token_bytes(32))]
        return
    problems = {}
    for name in ("SECRET_KEY", "FINGERPRINT_KEY"):
        if len(config[name].encode()) < MIN_SECRET_BYTES:
            problems[name] = f"{name} must be at least {MIN_SECRET_BYTES} bytes"
    if not config["ENCRYPTION_KEYS"]:
        problems["ENCRYPTION_KEYS"] = "ENCRYPTION_KEYS must list at least one kid:base64-32-bytes key"
    if problems:
        raise ConfigError("refusing to start in production: " + "; ".join(problems.values()) + ".\n"
                          + _how_to_make(problems))


def check_database_login(config):
    """Production refuses to serve as a database login that could rewrite the
    schema or the ledger: a superuser, or the owner of any table. A database that
    cannot be reached yet goes unchecked: the service starts anyway and answers
    503 until it can (a process started later, each gunicorn worker, checks)."""
    if config["APP_ENV"] != "production":
        return
    try:
        name, superuser, owns = login_powers(config["DATABASE_URL"], LOGIN_CHECK_TIMEOUT_SECONDS)
    except psycopg2.OperationalError:
        return
    if superuser or owns:
        power = "a superuser" if superuser else f"the owner of {', '.join(owns)}"
        raise ConfigError(
            f"refusing to serve in production as the database login {name!r}, {power}: a flaw in the "
            f"service could then rewrite any table. DATABASE_URL (or DB_USER and DB_PASSWORD) names the "
            f"service's own login, {SERVICE_LOGIN}, which migrate creates and gives that password; the "
            f"owner belongs in MIGRATE_DATABASE_URL only. See .env.example.")


def _how_to_make(names):
    """Where the missing secrets go and the commands that make them. `make run`
    writes fresh ones only into a new .env, never into one that exists."""
    env_file = env_file_path()
    where = (f"Add them to {env_file}" if env_file.exists()
             else "Add them to a .env (or let `make run` write a new one with fresh values)")
    recipes = [f"  {name}: {SECRET_RECIPES[name]}" for name in names]
    return where + ", made with:\n" + "\n".join(recipes) + "\nSee .env.example."
