"""The local cluster for the tests: what `make cluster` starts
(devtools.local_cluster.LocalCluster: PgBouncer in transaction mode, a
redis-server, gunicorn instances, nginx) in front of a test database, its
OpenAI deployments served by the stub with a house key, and the billed call
the cluster tests send."""
import shutil
import tempfile
from contextlib import contextmanager

import httpx
import pytest

from devtools.cluster import free_port
from devtools.local_cluster import LocalCluster
from devtools.nginx import nginx_binary
from devtools.pgbouncer import pgbouncer_binary
from devtools.redis_server import redis_binary
from tests.money.test_billing_bounds import prompt_bound
from tests.support import HOUSE_OPENAI, cost, readme_ledger_query, settings_for

GPT = "openai/gpt-4o-mini"
PROMPT = "Hi"
# A hold of about $0.009 (output tokens at $0.60 per million): a few fit in a few cents.
MAX_TOKENS = 15000
HOLD = cost(GPT, prompt_bound(PROMPT), MAX_TOKENS)
# Calls' deadlines: each worker reconciles every second, one second past a hold's deadline.
CLUSTER_SETTINGS = {
    "PROVIDER_TIMEOUT": 10,
    "HOLD_GRACE_SECONDS": 1,
    "RECONCILE_INTERVAL": 1,
    "WEB_WORKERS": 1,
    "WEB_THREADS": 64,
    # The limits are counted in the cluster's Redis; these are far above what a test sends.
    "RATELIMIT_ENABLED": True,
    "RATE_LIMIT_AUTH": "10000 per minute",
    "RATE_LIMIT_CHAT": "10000 per minute",
    "RATE_LIMIT_ACCESS_KEY": "10000 per minute",
}


def skip_without_cluster_programs():
    missing = [name for name, find in (("pgbouncer", pgbouncer_binary), ("nginx", nginx_binary),
                                       ("redis-server", redis_binary)) if find() is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (Debian: apt-get install pgbouncer nginx-light "
                    "redis-server; .ci/run installs them)")


@contextmanager
def running_cluster(database, openai_stub, instances=3, **settings):
    """A cluster of `instances` in front of `database` (a tests.conftest
    TestDatabase), stopped and its files removed afterwards."""
    skip_without_cluster_programs()
    # Under /tmp: the postgres account must enter it when we are root.
    work_dir = tempfile.mkdtemp(prefix="qmarket-test-cluster-", dir="/tmp")
    all_settings = settings_for(database.app_url, OPENAI_BASE_URL=f"{openai_stub.url}/v1",
                                OPENAI_API_KEY=HOUSE_OPENAI, **{**CLUSTER_SETTINGS, **settings})
    cluster = LocalCluster(work_dir, database.app_url, all_settings, instances=instances, port=free_port())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop(grace_seconds=30)
        shutil.rmtree(work_dir, ignore_errors=True)


def targets(cluster):
    """Every way in: each instance's own port, and nginx."""
    return [instance.url for instance in cluster.instances] + [cluster.url]


def answer_at_the_hold(stub):
    """The stub reports the usage the hold was made for, so a call costs exactly HOLD."""
    stub.behaviour.prompt_tokens, stub.behaviour.completion_tokens = prompt_bound(PROMPT), MAX_TOKENS


def billed_call(url, headers, stream=False, timeout=30, **extra_headers):
    """A /v1/chat/completions call of GPT, held at HOLD."""
    body = {"model": GPT, "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers={**headers, **extra_headers},
                      timeout=timeout)


def balance_of(database, user_id):
    """(total, spent, held) of a user."""
    return database.query("SELECT total_balance, spent_balance, held_balance FROM user_balance WHERE user_id = %s",
                          (user_id,))[0]


def holds_of(database, user_id):
    """Each hold of a user: (its amount, [(released amount, kind)] of its releases)."""
    rows = database.query(
        "SELECT h.id, h.amount, r.amount, r.metadata ->> 'kind' FROM transactions h"
        " LEFT JOIN transactions r ON r.related_transaction_id = h.id AND r.type = 'release'"
        " WHERE h.type = 'hold' AND h.user_id = %s ORDER BY h.created_at", (user_id,))
    holds = {}
    for hold_id, amount, released, kind in rows:
        holds.setdefault(hold_id, (amount, []))[1].extend([] if released is None else [(released, kind)])
    return list(holds.values())


def assert_ledger_exact(database):
    assert database.query(readme_ledger_query()) == []
