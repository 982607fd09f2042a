"""OpenTelemetry tracing, off unless OTEL_EXPORTER_OTLP_ENDPOINT is set: then
the maintained instrumentations trace each request (Flask), provider call
(httpx) and statement (psycopg2), and a billed call adds its own spans:
`qmarket.hold`, `qmarket.provider_call` and `qmarket.settle`, each carrying
the request's id (`qmarket.request_id`). Off, the spans are OpenTelemetry's
no-op ones, which cost a call next to nothing.

No prompt text, key or token reaches an attribute: ours carry ids, model and
provider names and token counts only, and every span passes through
`Redacting` on its way out, which keeps of a statement only its first word
(parameters and statements sent already bound, such as those travelling with
a COMMIT, hold values) and drops query strings from URLs."""
import logging

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

log = logging.getLogger(__name__)

tracer = trace.get_tracer("qmarket")
REQUEST_ID = "qmarket.request_id"
STATEMENTS = ("db.statement", "db.query.text")
URLS = ("http.url", "url.full", "http.target", "url.query")


def span(name, request_id, **attributes):
    """A span of a billed call's step (hold, provider_call, settle), with the request's id."""
    attributes = {f"qmarket.{key}": value for key, value in attributes.items() if value is not None}
    return tracer.start_as_current_span(f"qmarket.{name}", attributes={REQUEST_ID: request_id or "", **attributes})


class Redacting(SpanExporter):
    """Exports through `exporter` the spans with their statements cut to their
    first word and their URLs to their path."""

    def __init__(self, exporter):
        self.exporter = exporter

    def export(self, spans):
        return self.exporter.export([_redacted(one) for one in spans])

    def shutdown(self):
        self.exporter.shutdown()

    def force_flush(self, timeout_millis=30000):
        return self.exporter.force_flush(timeout_millis)


def _redacted(one):
    attributes = dict(one.attributes or {})
    for key in STATEMENTS:
        if key in attributes:
            attributes[key] = str(attributes[key]).split(None, 1)[0] if str(attributes[key]).strip() else ""
    for key in URLS:
        if key in attributes:
            attributes[key] = str(attributes[key]).split("?", 1)[0] if key != "url.query" else ""
    return ReadableSpan(name=one.name, context=one.context, parent=one.parent, resource=one.resource,
                        attributes=attributes, events=(), links=one.links, kind=one.kind, status=one.status,
                        start_time=one.start_time, end_time=one.end_time,
                        instrumentation_scope=one.instrumentation_scope)


_instrumented = False


def configure_tracing(app):
    """Tracing for the process, once, when OTEL_EXPORTER_OTLP_ENDPOINT is set
    (OpenTelemetry's own OTEL_* variables configure the exporter); the app's
    requests are traced either way once it is on."""
    global _instrumented
    if not app.config["OTEL_EXPORTER_OTLP_ENDPOINT"]:
        return
    if not _instrumented:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.instrumentation.psycopg2 import Psycopg2Instrumentor

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Redacting(OTLPSpanExporter(
            endpoint=app.config["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"))))
        trace.set_tracer_provider(provider)
        HTTPXClientInstrumentor().instrument()
        Psycopg2Instrumentor().instrument(skip_dep_check=True)
        _instrumented = True
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    FlaskInstrumentor().instrument_app(app)
