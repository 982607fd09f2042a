"""Tracing with OpenTelemetry's in-memory exporter: a billed call's hold,
provider call and settle spans share the request's id, beside the Flask,
httpx and psycopg2 instrumentations' spans, and no attribute carries the
prompt, the answer, a key or a token. Tracing instruments the whole process,
so the calls run in a process of their own."""
import multiprocessing

import pytest

from app.tracing import REQUEST_ID
from tests.support import HOUSE_OPENAI, PASSWORD, bearer

PROMPT = "the secret prompt text 7f3a"


def traced_calls(settings):
    """In a fresh process: a session chat (local/echo) and a /v1 call (the
    OpenAI stub), traced into memory. (the spans as dicts, the request ids, the secrets used)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from app import create_app
    from app.tracing import Redacting

    app = create_app(settings)
    memory = InMemorySpanExporter()
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(Redacting(memory)))
    client = app.test_client()
    credentials = {"email": "tracer@example.com", "password": PASSWORD}
    assert client.post("/api/v1/auth/register", json={**credentials, "username": "tracer"}).status_code == 201
    token = client.post("/api/v1/auth/login", json=credentials).get_json()["access_token"]
    assert client.post("/api/v1/balance/funds", json={"amount": "5"}, headers=bearer(token)).status_code == 201
    key = client.post("/api/v1/access-keys", json={"name": "trace"}, headers=bearer(token)).get_json()["key"]
    session = client.post("/api/v1/chat/sessions", json={"model_id": "local/echo"}, headers=bearer(token))
    chat = client.post(f"/api/v1/chat/sessions/{session.get_json()['id']}/messages", json={"content": PROMPT},
                       headers=bearer(token))
    assert chat.status_code == 201, chat.get_json()
    api = client.post("/v1/chat/completions", headers=bearer(key),
                      json={"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}]})
    assert api.status_code == 200, api.get_json()
    spans = [{"name": one.name, "attributes": dict(one.attributes), "trace_id": one.context.trace_id,
              "scope": one.instrumentation_scope.name} for one in memory.get_finished_spans()]
    return spans, [chat.headers["X-Request-ID"], api.headers["X-Request-ID"]], [token, key, HOUSE_OPENAI,
                                                                                  chat.get_json()["assistant_message"]
                                                                                  ["content"]]


@pytest.fixture
def traced(stubbed_settings):
    settings = {**stubbed_settings, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OPENAI_API_KEY": HOUSE_OPENAI}
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(traced_calls, (settings,))


def test_hold_call_and_settle_spans_share_the_request_id(traced):
    spans, request_ids, _ = traced
    for request_id in request_ids:
        steps = [one for one in spans if one["attributes"].get(REQUEST_ID) == request_id]
        assert sorted(one["name"] for one in steps) == ["qmarket.hold", "qmarket.provider_call", "qmarket.settle"]
        assert len({one["trace_id"] for one in steps}) == 1  # within the request's own trace
        settle = next(one for one in steps if one["name"] == "qmarket.settle")
        assert settle["attributes"]["qmarket.completion_tokens"] > 0
    scopes = {one["scope"] for one in spans}
    assert {"opentelemetry.instrumentation.flask", "opentelemetry.instrumentation.httpx",
            "opentelemetry.instrumentation.psycopg2"} <= scopes, scopes


def test_no_attribute_carries_the_prompt_a_key_or_a_token(traced):
    spans, _, secrets = traced
    text = repr([one["attributes"] for one in spans])
    assert "db.statement" in text or "db.query.text" in text
    for secret in [PROMPT, *secrets]:
        assert secret not in text


def test_tracing_is_off_unless_an_endpoint_is_set(app):
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    assert app.config["OTEL_EXPORTER_OTLP_ENDPOINT"] == ""
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
