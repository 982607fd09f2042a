"""/openapi.json: an OpenAPI 3.1 document generated from the routes and the same
pydantic models the views validate with, so the contract cannot drift.

Each view's contract is what its declarations state (app/api/contract.py);
the document is built once per app from the URL map."""
import re

from flask import current_app
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.api.pagination import MAX_PAGE_SIZE
from app.errors import ERROR_CODES

OPENAPI_VERSION = "3.1.0"
API_TITLE = "Q Marketplace API"
API_VERSION = "1.0.0"
IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "Makes a retry safe: the same key and body replay the first answer to the same caller "
                   "(the user, and the access key on /v1); kept 24 h.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7e]+$"},
}


def query_parameter(name, schema, description):
    """An optional query parameter, as the document lists it."""
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


LIMIT = query_parameter("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": 20},
                        "Page size.")
CURSOR = query_parameter("cursor", {"type": "string"}, "The next_cursor of the previous page.")

ERROR_BODY = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message", "details"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                       "details": {"type": "object"}},
    }},
}
# The error shapes of the provider formats the inference API speaks.
OPENAI_ERROR_BODY = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["message", "type", "code"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"}, "code": {"type": "string"},
                       "param": {"type": ["string", "null"]}},
    }},
}
ANTHROPIC_ERROR_BODY = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {"type": {"const": "error"}, "error": {
        "type": "object",
        "required": ["type", "message"],
        "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
    }},
}
EVENT_STREAM = {"schema": {"type": "string", "description": "Server-sent events, when the request asks for a stream."}}
HEALTH = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"},
                                                                  "database": {"type": "string"}}}
RESPONSE_HEADERS = {
    "X-Request-ID": {"description": "The request's id, also in the logs.", "schema": {"type": "string"}},
}


def query_enum(name, values, description):
    return query_parameter(name, {"type": "string", "enum": list(values)}, description)


def document():
    """The document for the current app, built on first use."""
    if "openapi" not in current_app.extensions:
        current_app.extensions["openapi"] = _build(current_app)
    return current_app.extensions["openapi"]


def _build(app):
    operations = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        operation = getattr(app.view_functions[rule.endpoint], "operation", None)
        if operation is not None:
            path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
            params = re.findall(r"<(?:[a-z]+:)?([a-z_]+)>", rule.rule)
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                operations.append((path, method.lower(), params, rule.endpoint, operation))
    refs, schemas = _schemas(operations)
    paths = {}
    for path, method, params, endpoint, operation in operations:
        paths.setdefault(path, {})[method] = _operation(operation, endpoint, params, refs)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": API_TITLE, "version": API_VERSION,
                 "description": "One account to use many AI models: a prepaid balance, an encrypted key vault, "
                                "chat billed per token, ratings and recommendations. Money is sent and shown "
                                "as decimal strings in USD."},
        "paths": paths,
        "components": {
            "schemas": {**schemas, "Error": ERROR_BODY, "OpenAIError": OPENAI_ERROR_BODY,
                        "AnthropicError": ANTHROPIC_ERROR_BODY},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def _schemas(operations):
    """JSON schemas for every model used, requests in validation mode and
    responses in serialization mode."""
    wanted = set()
    for *_, operation in operations:
        if operation.request is not None:
            wanted.add((operation.request, "validation"))
        wanted |= {(body, "serialization") for body in operation.responses.values()
                   if isinstance(body, type) and issubclass(body, BaseModel)}
    refs, definitions = models_json_schema(sorted(wanted, key=lambda item: (item[0].__name__, item[1])),
                                           ref_template="#/components/schemas/{model}")
    return refs, definitions.get("$defs", {})


def _operation(operation, endpoint, path_params, refs):
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                  for name in path_params]
    parameters += operation.query
    if operation.idempotent:
        parameters.append(IDEMPOTENCY_HEADER)
    result = {"operationId": endpoint.replace(".", "_"), "summary": operation.summary,
              "tags": [endpoint.split(".")[0]], "responses": {}}
    if parameters:
        result["parameters"] = parameters
    if operation.request is not None:
        result["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": refs[(operation.request, "validation")]}}}
    for status, body in sorted(operation.responses.items()):
        response = {"description": _status_text(status), "headers": RESPONSE_HEADERS}
        if body is not None:
            schema = refs[(body, "serialization")] if isinstance(body, type) else body
            response["content"] = {"application/json": {"schema": schema}}
        result["responses"][str(status)] = response
    if operation.stream_status is not None:
        streamed = result["responses"].setdefault(
            str(operation.stream_status), {"description": _status_text(operation.stream_status),
                                           "headers": RESPONSE_HEADERS})
        streamed.setdefault("content", {})["text/event-stream"] = EVENT_STREAM
    for status in sorted(set(_error_statuses(operation, path_params)) - set(operation.responses)):
        result["responses"][str(status)] = {
            "description": "Error: " + ", ".join(ERROR_CODES[status]),
            "headers": {**RESPONSE_HEADERS, **({"Retry-After": {"schema": {"type": "integer"}}}
                                               if status == 429 else {})},
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{operation.error_body}"}}},
        }
    result["security"] = [{"bearer": []}] if operation.auth else []
    return result


def _error_statuses(operation, path_params):
    yield from operation.errors
    yield 500
    if operation.request is not None or operation.query or operation.idempotent:
        yield 400
    if operation.request is not None:
        yield from (413, 415)
    if operation.auth:
        yield 401
    if path_params:
        yield 404
    if operation.rate_limited:
        yield 429
    if operation.uses_database:
        yield 503


def _status_text(status):
    return {200: "OK", 201: "Created", 204: "No Content", 503: "Not ready"}.get(status, str(status))
