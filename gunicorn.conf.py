"""gunicorn settings. The gevent worker: each request, and each open stream
for as long as it lasts, is a greenlet, so streams are bounded by
WEB_THREADS connections per worker, not by a pool of threads. Measured against
gthread (BENCHMARKS.md, "Concurrent streams"): 1,000 streams at once on one
worker, with less memory, CPU and first-byte delay per stream. psycogreen makes
psycopg2 wait through gevent's hub instead of blocking the worker."""
# Patched before anything imports socket or ssl (this file imports the app), so
# no module keeps the blocking versions; the workers inherit it.
import gevent
from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

# Every worker writes its metrics here and GET /metrics sums them (app/metrics.py),
# set before prometheus_client is imported: the operator's PROMETHEUS_MULTIPROC_DIR
# emptied, or a fresh directory removed at exit. A start never counts the last one's.
_METRICS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="qmarket-metrics-")
_METRICS_DIR_MADE = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
os.makedirs(_METRICS_DIR, exist_ok=True)
for _stale in os.listdir(_METRICS_DIR):
    if _stale.endswith(".db"):
        os.remove(os.path.join(_METRICS_DIR, _stale))
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _METRICS_DIR

from gunicorn import util  # noqa: E402

from app import MAX_BODY_BYTES  # noqa: E402
from app.config import ConfigError, load_config  # noqa: E402
from app.errors import HTTP_CODES  # noqa: E402

try:
    _config = load_config(check_secrets=False)
except ConfigError as exc:
    sys.exit(f"gunicorn: {exc}")

workers = _config["WEB_WORKERS"]
# Each open stream holds two sockets in its worker (its client's and its
# provider's): the soft limit, often 1024, would refuse connections long before
# WEB_THREADS runs out. Workers inherit it.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if resource.RLIM_INFINITY not in (_soft, _hard) and _soft < _hard:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))
worker_class = "gevent"
# Requests a worker serves at once, kept-alive idle connections included
# (gunicorn's default, 1000, would leave streams beyond it waiting).
worker_connections = _config["WEB_THREADS"]
# A restart lets calls in flight finish, streams included (each ends by its
# STREAM_TIMEOUT); one cut short would keep its hold until reconcile.
graceful_timeout = int(max(_config["PROVIDER_TIMEOUT"], _config["STREAM_TIMEOUT"])) + 5
# A worker silent this long is restarted. It reports from a greenlet of its
# own, not from a request, so a long stream never trips it.
timeout = int(_config["PROVIDER_TIMEOUT"]) + 30
keepalive = 5
# The app writes its own structured access log (with the request id).
accesslog = None
errorlog = "-"
control_socket_disable = True
# gunicorn's defaults, stated for the messages below.
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190

# gunicorn answers a request it cannot parse itself, before the app sees it
# (and a failure outside the app with 500).
PROTOCOL_ERRORS = {
    400: ("bad_request", "The request is not valid HTTP/1.1."),
    414: ("uri_too_long", f"The request line is longer than {limit_request_line} bytes."),
    431: ("headers_too_large", f"The request has more than {limit_request_fields} headers, "
                               f"or one longer than {limit_request_field_size} bytes."),
    500: ("internal_error", "An internal error occurred."),
}


def write_json_error(sock, status_int, reason, mesg):
    """gunicorn's own error answer (util.write_error, called only by the
    worker's handle_error) in the service's one error shape instead of HTML.
    `mesg` may echo the request; gunicorn has logged it, the client gets none."""
    code, message = PROTOCOL_ERRORS.get(status_int, (HTTP_CODES.get(status_int, "http_error"), f"{reason}."))
    body = json.dumps({"error": {"code": code, "message": message, "details": {}}}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


# gunicorn has no setting for these pages; this config runs before any worker forks.
util.write_error = write_json_error


def pre_request(worker, req):
    """A body over the app's limit is refused unread (413), and gunicorn drains
    at most 64 KiB of a body left unread before it drops the connection: the
    answer says `Connection: close` instead of promising keep-alive."""
    declared = next((value for name, value in req.headers if name == "CONTENT-LENGTH"), "0")
    if int(declared) > MAX_BODY_BYTES:
        req.force_close()


def on_starting(server):
    """Before any worker starts: return holds left by calls whose process died,
    and forget idempotency records and login-failure counts past their time."""
    from app import create_app
    from app.billing import reconcile_holds
    from app.extensions import db
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
    # The app made here started greenlets (the rate limiter's 10 ms expiry
    # timer): let them end before the workers fork, or each worker inherits one
    # that fails on its first run there.
    gevent.sleep(0.1)


def child_exit(server, worker):
    """A dead worker's gauges leave the sums; its counters stay counted."""
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)


def when_ready(server):
    """With METRICS_PORT set, /metrics is served there by a process of its own
    (app/metrics_listener.py), started once the master listens, before any worker forks."""
    if _config["METRICS_PORT"] and _config["METRICS_ENABLED"]:
        from app import metrics_listener
        server.metrics_listener = metrics_listener.start(_config)
        server.log.info("metrics: /metrics on %s:%s", _config["METRICS_HOST"], _config["METRICS_PORT"])


def on_exit(server):
    if getattr(server, "metrics_listener", None):
        from app import metrics_listener
        metrics_listener.stop(server.metrics_listener)
    if _METRICS_DIR_MADE:
        shutil.rmtree(_METRICS_DIR, ignore_errors=True)


def post_fork(server, worker):
    """psycopg2 waits for the database through gevent's hub, not blocking the worker."""
    from psycogreen.gevent import patch_psycopg
    patch_psycopg()


def post_worker_init(worker):
    """While the service runs, each worker offers every RECONCILE_INTERVAL to
    return the holds of calls that died with a worker, and to forget the
    idempotency records past their 24 hours (a stored answer, a /v1 answer's
    text among them, lives no longer than that, restart or not). One worker of
    all the instances takes each run (app.billing.reconcile_on_schedule)."""
    gevent.spawn(_keep_reconciling, worker.wsgi, worker.log)
    from app.alerts import keep_delivering
    gevent.spawn(keep_delivering, worker.wsgi, gevent.sleep)  # alerts, from the outbox, after their commit


def _keep_reconciling(app, log):
    from app.billing import reconcile_on_schedule
    from app.extensions import db
    from app.observability import describe_error

    interval = app.config["RECONCILE_INTERVAL"]
    gevent.sleep(random.uniform(0, interval))  # workers and instances spread out
    while True:
        try:
            with app.app_context():
                returned = reconcile_on_schedule(app.config)
                if returned is not None:
                    db.prune_idempotency_keys()
            if returned:
                log.info("reconcile: returned %s stale holds", returned)
        except Exception as exc:  # the run is claimed again next interval, from where the last that worked began
            log.warning("reconcile failed: %s", describe_error(exc))
        gevent.sleep(interval)
