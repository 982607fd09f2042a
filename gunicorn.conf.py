"""gunicorn settings. Threads, not gevent: psycopg2 blocks under gevent unless
patched, and a thread waiting on a slow provider holds no database connection,
so in-flight calls are bounded by workers × threads, not by the pool."""
from app.config import load_config

_config = load_config(check_secrets=False)

workers = _config["WEB_WORKERS"]
threads = _config["WEB_THREADS"]
worker_class = "gthread"
# A restart lets calls already waiting on a provider finish.
graceful_timeout = int(_config["PROVIDER_TIMEOUT"]) + 5
timeout = int(_config["PROVIDER_TIMEOUT"]) + 30
keepalive = 5
# The app writes its own structured access log (with the request id).
accesslog = None
errorlog = "-"
control_socket_disable = True


def on_starting(server):
    """Before any worker starts: return holds left by calls whose process died,
    and forget idempotency records and login-failure counts past their time."""
    from app import create_app
    from app.extensions import db
    from app.gateway import reconcile_holds
    from database.errors import DatabaseUnavailable

    app = create_app()
    with app.app_context():
        try:
            server.log.info("reconcile: returned %s stale holds", reconcile_holds(app.config))
            server.log.info("prune: %s idempotency records, %s login-failure counts",
                            db.prune_idempotency_keys(), db.prune_login_attempts(app.config["LOGIN_LOCKOUT_SECONDS"]))
        except DatabaseUnavailable:
            server.log.warning("start-up housekeeping skipped: the database is unavailable")
        finally:
            db.close()
