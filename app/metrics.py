"""Prometheus metrics. Under gunicorn every worker writes its figures to files
in PROMETHEUS_MULTIPROC_DIR (gunicorn.conf.py makes a fresh one per start) and
`GET /metrics` sums them all (prometheus_client's multiprocess mode); a process
without that directory (a test's app, a command) counts in its own memory.

Labels are bounded: route templates (never a raw path), catalog model ids and
provider names from the configuration, statuses; never a user, key or session.
Each update is a write to a memory-mapped file under a process-local lock,
cheap enough for the billed path (BENCHMARKS.md, "Metrics")."""
import hmac
import os
import time

from flask import current_app, g, request
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest,
                               multiprocess, values)

from app.errors import NotFound, Unauthorized

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

# Multiprocess mode asks the process id at every update, to notice a fork; a
# system call that costs several microseconds where processes are sandboxed,
# 26 times a billed call. The id is kept instead, and renewed in a forked child.
_pid = os.getpid()


def _forked():
    global _pid
    _pid = os.getpid()


if os.environ.get(MULTIPROCESS_DIR):
    os.register_at_fork(after_in_child=_forked)
    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: _pid)
# Seconds: from a fast answer to a long stream's first byte.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}

requests_total = Counter("qmarket_http_requests_total", "Requests answered, by route template and status",
                         ["method", "route", "status"])
request_seconds = Histogram("qmarket_http_request_duration_seconds",
                            "Time to answer a request (a stream: to its first byte)", ["method", "route"],
                            buckets=LATENCY_BUCKETS)
provider_calls = Counter("qmarket_provider_calls_total", "Attempts on a provider's deployment, by outcome",
                         ["provider", "model", "outcome"])
provider_first_token = Histogram("qmarket_provider_time_to_first_token_seconds",
                                 "Time to a provider's first token (a plain call: its whole answer)",
                                 ["provider", "model"], buckets=LATENCY_BUCKETS)
provider_duration = Histogram("qmarket_provider_call_duration_seconds",
                              "A served provider call from its attempt to its last token", ["provider", "model"],
                              buckets=LATENCY_BUCKETS)
billed_tokens = Counter("qmarket_billed_tokens_total", "Tokens billed, by model and kind", ["model", "kind"])
billed_dollars = Counter("qmarket_billed_dollars_total", "US dollars billed, by model and kind", ["model", "kind"])
holds_open = Gauge("qmarket_holds_open", "Holds made by live workers whose call has not ended",
                   multiprocess_mode="livesum")
holds_reconciled = Counter("qmarket_holds_reconciled_total", "Holds of calls that never settled, returned by reconcile")
pool_in_use = Gauge("qmarket_db_pool_connections_in_use", "Database connections borrowed from the pools",
                    multiprocess_mode="livesum")
pool_wait = Histogram("qmarket_db_pool_wait_seconds", "Time spent waiting to borrow a database connection",
                      buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5))
refusals = Counter("qmarket_refusals_total", "Requests refused by a rate limit or a login lockout", ["reason"])
streams_open = Gauge("qmarket_streams_open", "Streamed answers being relayed", multiprocess_mode="livesum")

_open_holds = set()
_counting = True  # METRICS_ENABLED, for the process: off, the figures below are never updated


def hold_opened(hold_id):
    if _counting:
        _open_holds.add(hold_id)
        holds_open.inc()


def hold_ended(hold_id):
    """Once per hold, whichever of settle and release comes first."""
    if hold_id in _open_holds:
        _open_holds.discard(hold_id)
        holds_open.dec()


def hold_reconciled():
    if _counting:
        holds_reconciled.inc()


def stream_opened():
    if _counting:
        streams_open.inc()


def stream_closed():
    if _counting:
        streams_open.dec()


def provider_attempt(provider, model, ok, first_token_seconds=None):
    if not _counting:
        return
    provider_calls.labels(provider, model, "ok" if ok else "error").inc()
    if ok and first_token_seconds is not None:
        provider_first_token.labels(provider, model).observe(first_token_seconds)


def provider_served(provider, model, seconds):
    if _counting:
        provider_duration.labels(provider, model).observe(seconds)


def billed(model, charge):
    """A settled call's app.pricing.Charge. Input counts the prompt's tokens
    billed at the input price; cache reads and writes have kinds of their own."""
    if not _counting:
        return
    cache_write = charge.cache_write_tokens + charge.cache_write_1h_tokens
    parts = (("input", charge.prompt_tokens - charge.cache_read_tokens - cache_write, charge.input_cost),
             ("output", charge.completion_tokens, charge.output_cost),
             ("cache_read", charge.cache_read_tokens, charge.cached_input_cost),
             ("cache_write", cache_write, charge.cache_write_cost))
    for kind, tokens, dollars in parts:
        if tokens:
            billed_tokens.labels(model, kind).inc(tokens)
        if dollars:
            billed_dollars.labels(model, kind).inc(float(dollars))


def refused(reason):
    """`reason`: rate_limited or login_locked."""
    if _counting:
        refusals.labels(reason).inc()


class PoolObserver:
    """What database/pool.py reports about its borrows (it knows nothing of Prometheus)."""

    @staticmethod
    def borrowed(wait_seconds):
        if _counting:
            pool_wait.observe(wait_seconds)
            pool_in_use.inc()

    @staticmethod
    def returned():
        if _counting:
            pool_in_use.dec()


def register_request_metrics(app):
    """Counts every request; with METRICS_ENABLED off, nothing at all is
    counted in this process (a worker serves one app)."""
    global _counting
    _counting = app.config["METRICS_ENABLED"]
    if not _counting:
        return

    @app.before_request
    def start_clock():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def count_request(response):
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        method = request.method if request.method in METHODS else "OTHER"
        requests_total.labels(method, route, str(response.status_code)).inc()
        request_seconds.labels(method, route).observe(time.perf_counter() - g.get("metrics_started",
                                                                                   time.perf_counter()))
        return response


def scrape():
    """The /metrics answer: every worker's figures (multiprocess mode), or this process's.
    METRICS_TOKEN unset, METRICS_ENABLED off, or METRICS_PORT set (the figures
    are served there, app/metrics_listener.py): the endpoint does not exist (404). Else it
    answers a request bearing the token; any other gets METRICS_REFUSAL_STATUS (401 or 404)."""
    token = current_app.config["METRICS_TOKEN"]
    if not token or current_app.config["METRICS_PORT"] or not current_app.config["METRICS_ENABLED"]:
        raise NotFound()
    if not bearer_accepted(request.headers.get("Authorization", ""), token):
        raise Unauthorized() if current_app.config["METRICS_REFUSAL_STATUS"] == 401 else NotFound()
    answer = current_app.response_class(exposition())
    answer.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return answer


def bearer_accepted(authorization, token):
    """Whether an Authorization header's value is `Bearer <token>`, compared in constant time."""
    return hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode())


def exposition():
    """Prometheus' text format of every worker's figures (multiprocess mode), or this process's."""
    if os.environ.get(MULTIPROCESS_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    from prometheus_client import REGISTRY
    return generate_latest(REGISTRY)
