"""The Q Marketplace API: `create_app(config=None)` builds the Flask app."""
from flask import Flask, request
from flask_cors import CORS
from werkzeug.middleware.proxy_fix import ProxyFix

from app import console, metrics, tracing
from app.api import register_blueprints
from app.commands import register_commands
from app.config import check_database_login, load_config
from app.errors import register_error_handlers
from app.extensions import db, limiter
from app.observability import configure_logging, register_request_hooks
from app.breakers import Breakers
from app.health import Health
from app.providers import Providers
from app.security import TokenIssuer
from app.shared_store import TIMEOUT_SECONDS as REDIS_TIMEOUT_SECONDS
from database.pool import PoolHolder
from database.vault import Vault

MAX_BODY_BYTES = 1024 * 1024  # every body but the inference API's (MAX_INFERENCE_BODY)
INFERENCE_PATH = "/v1/"
CORS_ALLOWED_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"]
CORS_EXPOSED_HEADERS = ["X-Request-ID", "Retry-After", "Idempotent-Replayed"]


def create_app(config=None):
    """Settings come from defaults, `.env`, the environment, then `config`."""
    app = Flask(__name__)
    app.config.update(load_config(config))
    check_database_login(app.config)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    register_body_limits(app)
    app.json.sort_keys = False
    configure_logging(app.config["LOG_LEVEL"])
    register_extensions(app)
    register_blueprints(app)
    app.register_blueprint(console.bp)
    register_error_handlers(app)
    register_request_hooks(app)
    metrics.register_request_metrics(app)
    tracing.configure_tracing(app)
    register_commands(app)
    return app


def register_extensions(app):
    db.init_app(app)
    PoolHolder.observer = metrics.PoolObserver  # every pool of the process reports to its metrics
    # No rate-limit headers on every answer: clients (the OpenAI and Anthropic
    # SDKs) wait out a Retry-After even on a 5xx. A 429 says when to come back
    # (guards.over_rate_limit).
    app.config["RATELIMIT_HEADERS_ENABLED"] = False
    # A Redis that does not answer costs a request this long, not the kernel's
    # connect timeout, before its worker counts in memory instead (app/extensions.py).
    app.config["RATELIMIT_STORAGE_OPTIONS"] = {"socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
                                               "socket_timeout": REDIS_TIMEOUT_SECONDS}
    limiter.init_app(app)
    CORS(app, origins=app.config["CORS_ORIGINS"], allow_headers=CORS_ALLOWED_HEADERS,
         expose_headers=CORS_EXPOSED_HEADERS, max_age=600)
    if app.config["TRUSTED_PROXIES"]:
        proxies = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)
    app.extensions["tokens"] = TokenIssuer(app.config)
    app.extensions["vault"] = Vault(app.config["ENCRYPTION_KEYS"], app.config["FINGERPRINT_KEY"])
    app.extensions["providers"] = Providers(app.config)
    app.extensions["breakers"] = Breakers(app.config)
    app.extensions["health"] = Health(app.config)


def register_body_limits(app):
    """A body over its limit is a 413 (in the path's own error shape): the
    inference API's may be up to MAX_INFERENCE_BODY, since a prompt carries
    its images; any other, MAX_BODY_BYTES."""
    @app.before_request
    def inference_body_limit():
        if request.path.startswith(INFERENCE_PATH):
            request.max_content_length = app.config["MAX_INFERENCE_BODY"]


def close_app(app):
    """Closes what the app holds open: its database pool and provider connections."""
    with app.app_context():
        db.close()
    app.extensions["providers"].close()
