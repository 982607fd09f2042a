"""GET /metrics: Prometheus' text format summed over every gunicorn worker,
guarded by METRICS_TOKEN, with bounded labels; and docs/grafana-dashboard.json
naming only metrics the service has."""
import json
import re
from decimal import Decimal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from app import create_app, metrics  # noqa: F401 (defines the metrics the dashboard is checked against)
from tests.conftest import clean_database
from tests.sdk_clients import assert_charged_exactly
from devtools.cluster import free_port
from tests.support import ROOT, assert_error, bearer, live_service, live_user, settings_for

TOKEN = "m" * 40
COMPLETIONS = "/v1/chat/completions"


@pytest.fixture(scope="module")
def server(pg_server, template_db, tmp_path_factory):
    directory = tmp_path_factory.mktemp("metrics")
    with clean_database(pg_server, template_db) as database, live_service(
            database, workers=2, METRICS_TOKEN=TOKEN, PROMETHEUS_MULTIPROC_DIR=str(directory)) as live:
        live.metrics_dir = directory
        yield live


def scrape(server):
    answer = httpx.get(f"{server.url}/metrics", headers=bearer(TOKEN))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text) for sample in family.samples}


def per_worker_requests(directory, route):
    """Each process's count of requests to `route`, read from its own file."""
    counts = {}
    for path in Path(directory).glob("counter_*.db"):
        counts[path.name] = sum(sample.value for family in multiprocess.MultiProcessCollector.merge([str(path)])
                                for sample in family.samples
                                if sample.name == "qmarket_http_requests_total" and sample.labels["route"] == route)
    return {name: count for name, count in counts.items() if count}


def calls(server, key, how_many):
    def one(_):
        answer = httpx.post(f"{server.url}{COMPLETIONS}", headers=bearer(key), timeout=30,
                            json={"model": "local/echo", "messages": [{"role": "user", "content": "count me"}],
                                  "max_tokens": 20})
        assert answer.status_code == 200, answer.text
        return answer.json()["usage"]
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(how_many)))


def total(scraped, name, **labels):
    return sum(value for (sample, found), value in scraped.items()
               if sample == name and all(dict(found).get(k) == v for k, v in labels.items()))


def test_scrape_sums_the_counters_of_both_workers(server):
    headers, user_id = live_user(server.url, "5")
    key = httpx.post(f"{server.url}/api/v1/access-keys", json={"name": "metrics"}, headers=headers).json()["key"]
    before = scrape(server)
    served = []
    for _ in range(10):  # until each worker has served some: the kernel decides which accepts
        served += calls(server, key, 16)
        if len(per_worker_requests(server.metrics_dir, COMPLETIONS)) >= 2:
            break
    workers = per_worker_requests(server.metrics_dir, COMPLETIONS)
    assert len(workers) >= 2, workers
    after = scrape(server)
    counted = total(after, "qmarket_http_requests_total", route=COMPLETIONS, status="200")
    assert counted == sum(workers.values()) == len(served) + total(
        before, "qmarket_http_requests_total", route=COMPLETIONS, status="200")
    # Tokens billed by model and kind, exactly what the answers said.
    billed_output = (total(after, "qmarket_billed_tokens_total", model="local/echo", kind="output")
                     - total(before, "qmarket_billed_tokens_total", model="local/echo", kind="output"))
    assert billed_output == sum(usage["completion_tokens"] for usage in served)
    charged = sum(float(usage["cost"]) for usage in served)
    billed_dollars = (total(after, "qmarket_billed_dollars_total", model="local/echo")
                      - total(before, "qmarket_billed_dollars_total", model="local/echo"))
    assert billed_dollars == pytest.approx(charged)
    provider_ok = (total(after, "qmarket_provider_calls_total", provider="local", model="local/echo", outcome="ok")
                   - total(before, "qmarket_provider_calls_total", provider="local", model="local/echo",
                           outcome="ok"))
    assert provider_ok == len(served)
    assert total(after, "qmarket_provider_time_to_first_token_seconds_count", model="local/echo") >= len(served)
    assert total(after, "qmarket_db_pool_wait_seconds_count") > 0
    # Every call ended: no hold left open, no connection still borrowed, no stream open.
    assert total(after, "qmarket_holds_open") == 0
    assert total(after, "qmarket_db_pool_connections_in_use") <= 1  # the scrape's own request may hold one
    assert total(after, "qmarket_streams_open") == 0
    assert_charged_exactly(server, user_id, sum(Decimal(usage["cost"]) for usage in served))


def test_labels_are_templates_never_raw_paths_or_users(server):
    headers, user_id = live_user(server.url, "1")
    session = httpx.post(f"{server.url}/api/v1/chat/sessions", json={"model_id": "local/echo"}, headers=headers)
    session_id = session.json()["id"]
    assert httpx.get(f"{server.url}/api/v1/chat/sessions/{session_id}", headers=headers).status_code == 200
    assert httpx.get(f"{server.url}/no/such/{user_id}").status_code == 404
    text = httpx.get(f"{server.url}/metrics", headers=bearer(TOKEN)).text
    assert re.search(r'route="/api/v1/chat/sessions/<[a-z_:]+>",status="200"', text)
    assert 'route="unmatched"' in text
    assert session_id not in text and str(user_id) not in text


def test_a_scrape_without_its_token_is_refused(server):
    for headers in ({}, bearer("m" * 39), bearer(TOKEN + "x")):
        answer = httpx.get(f"{server.url}/metrics", headers=headers)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
        assert "qmarket_" not in answer.text


def test_refusals_are_counted(server):
    # Ten failed logins lock the email; the eleventh is refused without a check.
    email = "locked@example.com"
    for _ in range(11):
        httpx.post(f"{server.url}/api/v1/auth/login", json={"email": email, "password": "wrong password!"})
    assert total(scrape(server), "qmarket_refusals_total", reason="login_locked") >= 1


def test_metrics_are_absent_without_a_token_and_401_when_configured():
    closed = create_app(settings_for("postgresql://unused@127.0.0.1:1/unused"))
    assert_error(closed.test_client().get("/metrics", headers=bearer(TOKEN)), 404, "not_found")
    guarded = create_app(settings_for("postgresql://unused@127.0.0.1:1/unused", METRICS_TOKEN=TOKEN,
                                      METRICS_REFUSAL_STATUS="401"))
    client = guarded.test_client()
    assert_error(client.get("/metrics"), 401, "unauthorized")
    answer = client.get("/metrics", headers=bearer(TOKEN))
    assert answer.status_code == 200 and b"qmarket_http_requests_total" in answer.data


def test_with_metrics_disabled_nothing_is_counted_and_there_is_no_endpoint(pg_server, template_db, tmp_path):
    with clean_database(pg_server, template_db) as database, live_service(
            database, workers=2, METRICS_ENABLED="false", METRICS_TOKEN=TOKEN,
            PROMETHEUS_MULTIPROC_DIR=str(tmp_path)) as live:
        headers, _ = live_user(live.url, "5")
        key = httpx.post(f"{live.url}/api/v1/access-keys", json={"name": "quiet"}, headers=headers).json()["key"]
        assert len(calls(live, key, 6)) == 6
        refused = httpx.get(f"{live.url}/metrics", headers=bearer(TOKEN))
        assert refused.status_code == 404, refused.text
        counted = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                   for family in multiprocess.MultiProcessCollector.merge(
                       [str(path) for path in tmp_path.glob("*.db")]) for sample in family.samples}
        assert {name: value for name, value in counted.items() if value} == {}


def dashboard_metric_names():
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert expressions
    return {name for expr in expressions for name in re.findall(r"\b(qmarket_[a-z_]+)", expr)}


def test_the_dashboard_names_only_metrics_that_exist():
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    known = {family.name + suffix for family in REGISTRY.collect() if family.name.startswith("qmarket_")
             for suffix in suffixes[family.type]}
    names = dashboard_metric_names()
    assert names and names <= known, names - known
    # Every metric the issue lists has a panel.
    assert {name.rsplit("_bucket", 1)[0].rsplit("_count", 1)[0].rsplit("_sum", 1)[0] for name in names} >= {
        "qmarket_http_requests_total", "qmarket_http_request_duration_seconds", "qmarket_provider_calls_total",
        "qmarket_provider_time_to_first_token_seconds", "qmarket_provider_call_duration_seconds",
        "qmarket_billed_tokens_total", "qmarket_billed_dollars_total", "qmarket_holds_open",
        "qmarket_holds_reconciled_total", "qmarket_db_pool_connections_in_use", "qmarket_db_pool_wait_seconds",
        "qmarket_refusals_total", "qmarket_streams_open"}


def test_metrics_on_a_port_of_their_own_sum_both_workers_and_leave_the_api_port(pg_server, template_db,
                                                                                tmp_path_factory):
    directory = tmp_path_factory.mktemp("metrics-port")
    port = free_port()
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    with clean_database(pg_server, template_db) as database, live_service(
            database, workers=2, METRICS_PORT=port, METRICS_TOKEN=TOKEN,
            PROMETHEUS_MULTIPROC_DIR=str(directory)) as live:
        headers, _ = live_user(live.url, "5")
        key = httpx.post(f"{live.url}/api/v1/access-keys", json={"name": "metrics"}, headers=headers).json()["key"]
        served = []
        for _ in range(10):  # until each worker has served some
            served += calls(live, key, 16)
            if len(per_worker_requests(directory, COMPLETIONS)) >= 2:
                break
        workers = per_worker_requests(directory, COMPLETIONS)
        assert len(workers) >= 2, workers
        answer = httpx.get(metrics_url, headers=bearer(TOKEN))
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain; version=")
        scraped = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                   for family in text_string_to_metric_families(answer.text) for sample in family.samples}
        assert total(scraped, "qmarket_http_requests_total", route=COMPLETIONS, status="200") == sum(
            workers.values()) == len(served)
        # The token is asked for there too; nothing else is served; the API's port has no /metrics.
        for refused in (httpx.get(metrics_url), httpx.get(metrics_url, headers=bearer(TOKEN + "x")),
                        httpx.get(f"http://127.0.0.1:{port}/other", headers=bearer(TOKEN)),
                        httpx.get(f"{live.url}/metrics", headers=bearer(TOKEN))):
            assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
            assert "qmarket_" not in refused.text
    with pytest.raises(httpx.ConnectError):  # the listener ended with the service
        httpx.get(metrics_url, headers=bearer(TOKEN))
