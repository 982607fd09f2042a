"""Hostile input against every operation the service's own /openapi.json lists
(SPEC §6, §7, §10): wrong and logged-out tokens, wrong types, missing and
mass-assigned fields, huge and odd strings, malformed ids, bad pagination and
headers.

Every answer is a 4xx JSON error carrying X-Request-ID, never a 5xx, in the
error shape the operation documents: the service's own (`Error`), or that of the
provider format the inference API speaks at /v1 (`OpenAIError`, `AnthropicError`),
each checked by its own shape. A few odd strings are legitimate text (an emoji in
a chat message, a quote in a title): those may be accepted and must then come
back exactly as sent. The provider formats ignore unknown body fields and query
parameters, as SDKs send many: there such a probe must be accepted as a valid
call, billed to the caller alone. No refused request moves money, touches
another user's rows or stores an injected field. A new endpoint is probed as
soon as it is documented."""
import base64
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import quote

import jwt
import pytest
from psycopg2 import sql

from app import close_app, create_app
from database.catalog_file import load_catalog, validated
from tests.conftest import clean_database
from tests.support import PASSWORD, bearer, login, register, settings_for

JSON = "application/json"
OTHER_KEY = "another-signing-key-that-is-not-the-service-key"
MAIN = {"email": "mallory@example.com", "username": "mallory"}
VICTIM = {"email": "victim@example.com", "username": "victim"}
# The user the main user, an admin too, acts on through the admin operations (never the victim).
TARGET = {"email": "target@example.com", "username": "target"}
MAIN_KEY = "sk-proj-hostile-0000000000001234"
VICTIM_KEY = "sk-proj-victim-00000000000005678"
INJECTED_ID = "00000000-0000-4000-8000-00000000beef"
INJECTED_MONEY = "987654.32"
INJECTED_ROLE = "admin-injected"
ERROR_CODE = re.compile(r"^[a-z]+(_[a-z]+)*$")

# Values of each JSON type, tried wherever the schema wants another type.
WRONG_TYPES = {"number": 12345, "fraction": 1.5, "bool": True, "null": None, "list": ["x"],
               "object": {"x": 1}, "string": "text"}
# Never valid anywhere: every string field is shorter, holds no NUL, and is UTF-8.
BAD_STRINGS = {"one-mebibyte-minus-a-bit": "a" * (1024 * 1024 - 4096), "nul": "a\x00b",
               "lone-surrogate": "password\ud800text"}
# Odd but possibly legitimate text: refused, or accepted and kept exactly.
ODD_STRINGS = {"10k-chars": "x" * 10_000, "rtl-override": "abc\u202edcba",
               "zero-width-joiner": "\U0001F469\u200d\U0001F4BB", "emoji": "\U0001F525\U0001F4B8\U0001F680",
               "combining-marks": "e\u0301\u0308\u0327", "sql-or": "' OR 1=1 --",
               "sql-drop": "\"; DROP TABLE users; --"}
# (body, content type, status, code)
RAW_BODIES = {
    "json-array": ("[]", JSON, 400, "validation_error"),
    "json-string": ('"text"', JSON, 400, "validation_error"),
    "json-number": ("42", JSON, 400, "validation_error"),
    "json-null": ("null", JSON, 400, "validation_error"),
    "empty": ("", JSON, 400, "validation_error"),
    "malformed": ('{"a": ', JSON, 400, "invalid_json"),
    "bare-nan": ("NaN", JSON, 400, "invalid_json"),
    "deeply-nested": ("[" * 100_000 + "]" * 100_000, JSON, 400, "invalid_json"),
    "text-plain": ('{"a": 1}', "text/plain", 415, "unsupported_media_type"),
    "form": ("a=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
}
MALFORMED_IDS = {"not-a-uuid": "not-a-uuid", "sql": quote("' OR '1'='1", safe=""), "traversal": "../../etc/passwd",
                 "nul": "%00", "very-long": "a" * 5000}
BAD_LIMITS = ["0", "-1", "101", "abc", "1e3", "2.5", ""]


def cursor(text):
    """A cursor wrapped as the service wraps its own (base64url, no padding)."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


BAD_CURSORS = {
    "random-base64": "q83vASNFZ4mrze8BI0VniQ",
    "not-base64": "!!not base64!!",
    "forged-text": cursor("v1|' OR 1=1 --"),
    "forged-zero": cursor("v1|0"),
    "forged-overflow": cursor("v1|99999999999999999999999"),
    "forged-too-many-parts": cursor("v1|1|2|3|4"),
    "forged-bad-date": cursor("v1|9999-99-99|message|1"),
    "forged-bad-uuid": cursor("v1|2026-01-01T00:00:00|not-a-uuid"),
    "forged-negative": cursor("v1|2026-01-01T00:00:00|transaction|-5"),
    "wrong-version": cursor("v9|1"),
}
BAD_IDEMPOTENCY_KEYS = {"empty": "", "too-long": "k" * 256, "space": "has space", "non-ascii": "cl\u00e9"}
INJECTABLE_TABLES = ("users", "user_balance", "transactions", "api_keys", "access_keys", "chat_sessions",
                     "model_ratings", "user_preferences")
# Every row another user owns, by table and owner column.
OWNED_TABLES = {"users": "id", "user_balance": "user_id", "transactions": "user_id", "api_keys": "user_id",
                "access_keys": "user_id",
                "chat_sessions": "user_id", "chat_history": "user_id", "model_ratings": "user_id",
                "user_preferences": "user_id"}


# ------------------------------------------------------------ the document

def _served_document():
    """/openapi.json as the service serves it (built without a database)."""
    app = create_app(settings_for("postgresql://unused@127.0.0.1:1/unused"))
    try:
        return app.test_client().get("/openapi.json").get_json()
    finally:
        close_app(app)


DOCUMENT = _served_document()
SCHEMAS = DOCUMENT["components"]["schemas"]
OPERATIONS = [pytest.param(method.upper(), path, operation, id=f"{method.upper()} {path}")
              for path, item in DOCUMENT["paths"].items() for method, operation in item.items()]


def _where(predicate):
    return [param for param in OPERATIONS if predicate(param.values[2])]


def parameters(operation, where):
    return [p for p in operation.get("parameters", []) if p["in"] == where]


def resolve(schema):
    while "$ref" in schema:
        schema = SCHEMAS[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def request_schema(operation):
    return resolve(operation["requestBody"]["content"][JSON]["schema"])


def json_types(schema):
    """The JSON types a schema admits."""
    schema = resolve(schema)
    if "anyOf" in schema:
        return set().union(*(json_types(option) for option in schema["anyOf"]))
    if "type" in schema:
        return {schema["type"]} if isinstance(schema["type"], str) else set(schema["type"])
    if "enum" in schema:
        return {json_type(value) for value in schema["enum"]}
    return {"string", "number", "integer", "boolean", "null", "array", "object"}


def json_type(value):
    for kind, python in (("null", type(None)), ("boolean", bool), ("integer", int), ("number", float),
                         ("string", str), ("array", list), ("object", dict)):
        if isinstance(value, python):
            return kind


def admits(schema, value):
    types, kind = json_types(schema), json_type(value)
    return kind in types or (kind == "integer" and "number" in types)


def string_slot(schema):
    """How a string goes into a property: as itself, inside a list, or not at all."""
    if "string" in json_types(schema):
        return lambda text: text
    items = [option.get("items") for option in [resolve(schema), *resolve(schema).get("anyOf", [])]]
    if any(item and "string" in json_types(item) for item in items):
        return lambda text: [text]
    return None


def error_body(operation):
    """The component schema the operation's error answers refer to: `Error`,
    `OpenAIError` or `AnthropicError` (test_hardening checks there is one)."""
    refs = {response["content"][JSON]["schema"]["$ref"].rsplit("/", 1)[1]
            for status, response in operation["responses"].items() if int(status) >= 400}
    assert len(refs) == 1, f"{operation['operationId']} has error bodies {refs}"
    return refs.pop()


def speaks_provider_format(operation):
    """Whether the operation is of a provider's format, whose SDKs send fields
    and query parameters this service does not know (ignored, not refused)."""
    return error_body(operation) != "Error"


AUTH_OPERATIONS = _where(lambda op: op["security"])
BODY_OPERATIONS = _where(lambda op: "requestBody" in op)
PATH_OPERATIONS = _where(lambda op: parameters(op, "path"))
HEADER_OPERATIONS = _where(lambda op: parameters(op, "header"))


# ------------------------------------------------------------ probes

@dataclass
class Probe:
    name: str
    method: str
    url: str
    headers: dict = field(default_factory=dict)
    body: str | None = None
    content_type: str | None = None
    query: dict | None = None
    status: int | None = None      # the exact status wanted, else any 4xx
    codes: tuple = ()              # the error codes allowed, else any
    names: str | tuple | None = None  # a validation error must name this field (or one of these)
    echo: tuple | None = None      # legitimate odd text (field, value): a 2xx may accept it, unchanged
    accepted: bool = False         # an ignored field or parameter: a 2xx is wanted


# Anthropic's error type for each status, as its API documents them; another 4xx is an invalid request.
ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                         403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                         429: "rate_limit_error", 500: "api_error", 504: "timeout_error"}
# The fields a provider format's message names, as "... (field: problem; field: problem)".
NAMED_FIELD = re.compile(r"(?:\(|; )([^\s:;()]+): ")


@dataclass
class ErrorAnswer:
    """What the probes check of an error, whatever its shape: its code (the
    service's code, or for Anthropic, whose errors carry none, the error type)
    and the fields it names."""
    code: str
    fields: list


def _error_object(body, keys):
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(error) != keys or not isinstance(error["message"], str) \
            or not error["message"]:
        return None
    return error


def service_error(body):
    error = _error_object(body, {"code", "message", "details"})
    if error is None or set(body) != {"error"} or not isinstance(error["details"], dict):
        return None
    return ErrorAnswer(error["code"], list(error["details"]))


def openai_error(body):
    error = _error_object(body, {"message", "type", "code", "param"})
    if error is None or set(body) != {"error"} or not ERROR_CODE.match(str(error["type"])) \
            or not (error["param"] is None or isinstance(error["param"], str)):
        return None
    return ErrorAnswer(error["code"], [error["param"]] * (error["param"] is not None)
                       + NAMED_FIELD.findall(error["message"]))


def anthropic_error(body):
    error = _error_object(body, {"type", "message"})
    if error is None or set(body) != {"type", "error"} or body["type"] != "error":
        return None
    return ErrorAnswer(error["type"], NAMED_FIELD.findall(error["message"]))


ERROR_READERS = {"Error": service_error, "OpenAIError": openai_error, "AnthropicError": anthropic_error}


def read_error(shape, body):
    """The error answer in `shape` (a component's name), or None when it is not that shape."""
    answer = ERROR_READERS[shape](body)
    return answer if answer and ERROR_CODE.match(str(answer.code)) else None


def anthropic_type(status):
    return ANTHROPIC_ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def found(document, name):
    """Every value stored under key `name` anywhere in a JSON document."""
    if isinstance(document, dict):
        own = [document[name]] if name in document else []
        return own + [v for value in document.values() for v in found(value, name)]
    if isinstance(document, list):
        return [v for value in document for v in found(value, name)]
    return []


def verdict(probe, response, shape):
    """What is wrong with the answer to a probe, or None; errors must be in `shape`."""
    status = response.status_code
    if not response.headers.get("X-Request-ID"):
        return f"{status} without X-Request-ID"
    if status < 400:
        if probe.accepted:
            return None
        if probe.echo is None:
            return f"accepted with {status}"
        echoed = found(response.get_json(silent=True), probe.echo[0])
        if echoed and probe.echo[1] not in echoed:
            return f"accepted with {status} but changed the text: {str(echoed)[:200]}"
        return None
    body = response.get_json(silent=True)
    if status >= 500:
        return f"server error {status}: {str(body)[:200]}"
    if response.mimetype != JSON:
        return f"{status} as {response.mimetype}"
    error = read_error(shape, body)
    if error is None:
        return f"not the {shape} shape: {str(body)[:200]}"
    if probe.accepted:
        return f"refused with {status}, wanted the field or parameter ignored: {body}"
    if probe.status and status != probe.status:
        return f"status {status}, wanted {probe.status}: {body}"
    if shape == "AnthropicError":
        # No code to check: the error type must be the one for the status, and
        # a validation error is told by the fields its message names.
        if error.code != anthropic_type(status):
            return f"type {error.code} for {status}, wanted {anthropic_type(status)}: {body}"
        validation = probe.codes == ("validation_error",) or error.fields
    else:
        if probe.codes and error.code not in probe.codes:
            return f"code {error.code}, wanted one of {probe.codes}: {body}"
        validation = error.code == "validation_error"
    wanted = (probe.names,) if isinstance(probe.names, str) else probe.names
    if wanted and validation and not any(
            name == want or name.startswith(want + ".") for name in error.fields for want in wanted):
        return f"does not name {probe.names}: {body}"
    return None


# ------------------------------------------------------------ the world

def forge(claims, key, algorithm="HS256"):
    return jwt.encode(claims, key, algorithm=algorithm)


ADMIN_MODEL = {"id": "local/admin-probe", "provider": "local", "name": "Admin probe", "context_window": 1024,
               "max_output_tokens": 256, "input_price_per_mtok": "0.01", "output_price_per_mtok": "0.02",
               "prices_as_of": "2026-12-07"}
ADMIN_ALIAS_LIST = {"alias": "admin-probe-mix", "models": [ADMIN_MODEL["id"]]}
# A public address written as one, so that registering it needs no DNS.
PUBLIC_WEBHOOK = "https://93.184.216.34/hook"


class World:
    """One funded user (with a key, a local/echo session, and access keys: one
    live, one revoked, one expired), a victim holding rows of their own, and an
    owner connection to watch the database."""

    def __init__(self, client, owner, config):
        self.client, self.owner, self.config = client, owner, config
        self.victim_id = register(client, password=PASSWORD, **VICTIM)["id"]
        victim = bearer(login(client, VICTIM["email"])["access_token"])
        self.victim_ids = {"key_id": self._post("/api/v1/keys", {"provider": "openai", "api_key": VICTIM_KEY}, victim),
                           "session_id": self._post("/api/v1/chat/sessions", {"model_id": "local/echo"}, victim),
                           "access_key_id": self._post("/api/v1/access-keys", {"name": "victim's"}, victim),
                           "webhook_id": self._post("/api/v1/webhooks", {"url": PUBLIC_WEBHOOK}, victim)}
        self.main_id = register(client, password=PASSWORD, **MAIN)["id"]
        self.revoked_token = self._logged_out_token()
        pair = login(client, MAIN["email"])
        self.token, self.refresh_token = pair["access_token"], pair["refresh_token"]
        self.auth = bearer(self.token)
        # An admin, so that the admin operations reach their bodies and ids (acting on the victim).
        self._rows("INSERT INTO admins (user_id) VALUES (%s) RETURNING user_id", (self.main_id,))
        assert client.post("/api/v1/balance/funds", json={"amount": "100"}, headers=self.auth).status_code == 201
        access_key = self._create("/api/v1/access-keys", {"name": "main"}, self.auth)
        self.access_key = access_key["key"]
        self.ids = {"key_id": self._post("/api/v1/keys", {"provider": "openai", "api_key": MAIN_KEY}, self.auth),
                    "session_id": self._post("/api/v1/chat/sessions", {"model_id": "local/echo"}, self.auth),
                    "access_key_id": access_key["id"], "provider": "local", "name": "echo",
                    "alias": ADMIN_ALIAS_LIST["alias"],
                    "webhook_id": self._post("/api/v1/webhooks", {"url": PUBLIC_WEBHOOK}, self.auth),
                    "user_id": register(client, password=PASSWORD, **TARGET)["id"]}
        # What the admin probes act on: a model of the harness's own (a probe accepted may disable it) and
        # a user with money to debit.
        with self.owner.cursor() as cur:
            load_catalog(cur, validated({"models": [ADMIN_MODEL]}))  # each statement commits: the model first
            load_catalog(cur, validated({"models": [ADMIN_MODEL], "alias_lists": [ADMIN_ALIAS_LIST]}))
        assert client.post(f"/api/v1/admin/users/{self.ids['user_id']}/credit", headers=self.auth,
                           json={"amount": "500", "reason": "funds to debit"}).status_code == 201
        self.revoked_access_key, self.expired_access_key = self._revoked_access_key(), self._expired_access_key()
        self.victim_before = self.victim_rows()

    def _revoked_access_key(self):
        key = self._create("/api/v1/access-keys", {"name": "revoked"}, self.auth)
        assert self.client.delete(f"/api/v1/access-keys/{key['id']}", headers=self.auth).status_code == 204
        return key["key"]

    def _expired_access_key(self):
        key = self._create("/api/v1/access-keys", {"name": "expired", "expires_at": "2099-01-01T00:00:00Z"},
                           self.auth)
        self._rows("UPDATE access_keys SET expires_at = now() - interval '1 second' WHERE id = %s RETURNING id",
                   (key["id"],))
        return key["key"]

    def _logged_out_token(self):
        """An access token of the main user, revoked by a logout: the user's later
        tokens work, so only the revocation check stands between it and their rows."""
        token = login(self.client, MAIN["email"])["access_token"]
        assert self.client.post("/api/v1/auth/logout", headers=bearer(token)).status_code == 204
        return token

    def _create(self, path, body, headers):
        response = self.client.post(path, json=body, headers=headers)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def _post(self, path, body, headers):
        return self._create(path, body, headers)["id"]

    # What a probe is sent with.

    def url(self, path, **replaced):
        admin_model = {"name": ADMIN_MODEL["id"].split("/", 1)[1]} if path.startswith("/api/v1/admin/models/") else {}
        values = {**self.ids, **admin_model, **replaced}
        return re.sub(r"\{([a-z_]+)\}", lambda match: str(values[match.group(1)]), path)

    def headers(self, operation):
        """The caller's credential: an access key for a provider's format, as SDKs send it."""
        if not operation["security"]:
            return {}
        return bearer(self.access_key) if speaks_provider_format(operation) else dict(self.auth)

    def valid_body(self, operation):
        """A valid body for the operation's request schema, to mutate one part at a time."""
        if "requestBody" not in operation:
            return None
        bodies = {
            "RegisterRequest": {"email": "newcomer@example.com", "username": "newcomer", "password": PASSWORD},
            "LoginRequest": {"email": MAIN["email"], "password": PASSWORD},
            "RefreshRequest": {"refresh_token": self.refresh_token},
            "TopUpRequest": {"amount": "5.00"},
            "NewKeyRequest": {"provider": "openai", "api_key": MAIN_KEY, "label": "work"},
            "NewAccessKeyRequest": {"name": "ci", "allowed_models": ["local/echo"], "spend_limit": "5.00",
                                    "spend_limit_period": "day"},
            "NewSessionRequest": {"model_id": "local/echo", "title": "plans"},
            "NewMessageRequest": {"content": "hello"},
            "RatingRequest": {"rating": 4, "review": "fine"},
            "RecommendRequest": {"task": "write python code", "capabilities": ["coding"], "limit": 3},
            "PreferencesBody": {"theme": "dark", "preferred_providers": ["local"]},
            "ChatCompletionRequest": {"model": "local/echo", "messages": [{"role": "user", "content": "hello"}],
                                      "max_tokens": 16, "temperature": 0.5, "stop": "never"},
            "MessagesRequest": {"model": "local/echo", "messages": [{"role": "user", "content": "hello"}],
                                "max_tokens": 16, "system": "be brief", "stop_sequences": ["never"]},
            "ResponsesRequest": {"model": "local/echo", "input": "hello", "instructions": "be brief",
                                 "max_output_tokens": 16},
            "CountTokensRequest": {"model": "local/echo", "messages": [{"role": "user", "content": "hello"}],
                                   "system": "be brief"},
            "NewWebhookRequest": {"url": PUBLIC_WEBHOOK},
            "ReasonRequest": {"reason": "support ticket 7"},
            "MoneyAdjustmentRequest": {"amount": "1.00", "reason": "support ticket 7"},
            "NewModelRequest": {"model": {"id": "local/probe", "provider": "local", "name": "Probe",
                                          "context_window": 1024, "max_output_tokens": 256,
                                          "input_price_per_mtok": "0.01", "output_price_per_mtok": "0.02",
                                          "prices_as_of": "2026-12-07"}, "reason": "support ticket 7"},
            "ModelChangeRequest": {"changes": {"description": "probed"}, "reason": "support ticket 7"},
            "NewAliasListRequest": {"alias": "probe-mix", "models": [ADMIN_MODEL["id"]], "reason": "support ticket 7"},
            "AliasListChangeRequest": {"models": [ADMIN_MODEL["id"]], "reason": "support ticket 7"},
            "PriceScheduleRequest": {"input_price_per_mtok": "1.00", "output_price_per_mtok": "2.00",
                                     "effective_from": "2099-01-01T00:00:00Z", "reason": "support ticket 7"},
        }
        name = request_schema(operation)["title"]
        assert name in bodies, f"add a valid {name} body to World.valid_body"
        return bodies[name]

    def valid_probe_body(self, operation):
        body = self.valid_body(operation)
        return (None, None) if body is None else (json.dumps(body), JSON)

    def bad_authorizations(self, operation):
        """Request headers with credentials of every wrong kind, and the codes each may get."""
        claims = jwt.decode(self.token, options={"verify_signature": False})
        now, key = int(time.time()), self.config["SECRET_KEY"]
        any_401 = ("unauthorized", "invalid_token", "token_expired")
        unknown_access_key = "qm-" + base64.urlsafe_b64encode(b"\x07" * 32).decode().rstrip("=")
        bad = {
            "missing": (None, any_401),
            "scheme-only": ("Bearer", any_401),
            "garbage": ("Bearer garbage", any_401),
            "refresh-token": (f"Bearer {self.refresh_token}", any_401),
            "expired": (f"Bearer {forge({**claims, 'iat': now - 3600, 'exp': now - 60}, key)}", ("token_expired",)),
            "other-key": (f"Bearer {forge(claims, OTHER_KEY)}", any_401),
            "alg-none": (f"Bearer {forge(claims, None, 'none')}", any_401),
            "basic-scheme": ("Basic x", any_401),
            "logged-out": (f"Bearer {self.revoked_token}", ("invalid_token",)),
            "unknown access key": (f"Bearer {unknown_access_key}", ("invalid_token",)),
            "revoked access key": (f"Bearer {self.revoked_access_key}", ("invalid_token",)),
            "expired access key": (f"Bearer {self.expired_access_key}", ("invalid_token",)),
        }
        headers = {kind: ({} if value is None else {"Authorization": value}, codes)
                   for kind, (value, codes) in bad.items()}
        # Anthropic's clients send the key as x-api-key; elsewhere that header is no credential at all.
        for kind in ("unknown access key", "revoked access key", "expired access key"):
            value = bad[kind][0].removeprefix("Bearer ")
            headers[f"{kind} as x-api-key"] = ({"x-api-key": value}, ("unauthorized", "invalid_token"))
        if not speaks_provider_format(operation):
            # An access key opens only the inference API.
            headers["live access key"] = ({"Authorization": f"Bearer {self.access_key}"}, any_401)
        return headers

    def mass_assignment(self):
        return {"balance": INJECTED_MONEY, "role": INJECTED_ROLE, "is_admin": True, "user_id": self.victim_id,
                "total_balance": INJECTED_MONEY, "id": INJECTED_ID}

    # What the database holds.

    def _rows(self, statement, params=None):
        with self.owner.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()

    def balance(self):
        """The main user's available balance."""
        return self._rows("SELECT total_balance - spent_balance FROM user_balance WHERE user_id = %s",
                          (self.main_id,))[0][0]

    def money(self):
        return self._rows("SELECT (SELECT json_agg(t ORDER BY id) FROM transactions t),"
                          "       (SELECT json_agg(b ORDER BY user_id) FROM user_balance b)")

    def victim_rows(self):
        return {table: self._rows(sql.SQL("SELECT to_jsonb(t)::text FROM {} t WHERE {} = %s ORDER BY 1").format(
                    sql.Identifier(table), sql.Identifier(column)), (self.victim_id,))
                for table, column in OWNED_TABLES.items()}

    def injected_rows(self):
        markers = [f"%{marker}%" for marker in (INJECTED_ID, INJECTED_MONEY, INJECTED_ROLE)]
        return {table: self._rows(sql.SQL("SELECT to_jsonb(t)::text FROM {} t WHERE to_jsonb(t)::text LIKE ANY(%s)")
                                  .format(sql.Identifier(table)), (markers,))
                for table in INJECTABLE_TABLES}

    # Sending.

    def send(self, probe):
        return self.client.open(probe.url, method=probe.method, headers=probe.headers, data=probe.body,
                                content_type=probe.content_type, query_string=probe.query)

    def billing_problem(self, response, money_before, balance_before):
        """What is wrong with what an accepted call took: the cost it answered,
        from the caller's balance, or nothing when it answered none."""
        cost = found(response.get_json(silent=True), "cost")
        if not cost:
            return None if self.money() == money_before else "answered no cost but moved money"
        taken = balance_before - self.balance()
        return None if taken == Decimal(cost[0]) else f"answered a cost of {cost[0]} but took {taken}"

    def check(self, operation, probes):
        """Sends every probe; fails listing each wrong answer, each refused probe
        that moved money, each accepted call billed otherwise than its own usage
        to the caller, and any change to the victim's rows or injected value."""
        problems, sent, shape = [], 0, error_body(operation)
        for probe in probes:
            before, balance = self.money(), self.balance()
            response = self.send(probe)
            sent += 1
            problem = verdict(probe, response, shape)
            if response.status_code >= 400 and self.money() != before:
                problem = f"refused with {response.status_code} but moved money"
            if probe.accepted and response.status_code < 400:
                problem = problem or self.billing_problem(response, before, balance)
            if problem:
                problems.append(f"{probe.name}: {problem}")
        assert sent, "no probe was sent"
        assert not problems, "\n".join(problems)
        assert self.victim_rows() == self.victim_before
        assert self.injected_rows() == {table: [] for table in INJECTABLE_TABLES}


@pytest.fixture(scope="module")
def world(pg_server, template_db):
    with clean_database(pg_server, template_db) as database:
        # Hundreds of failed logins: the per-email lockout would hide what comes after it.
        app = create_app(settings_for(database.app_url, LOGIN_LOCKOUT_THRESHOLD=10_000))
        owner = database.owner()
        try:
            yield World(app.test_client(), owner, app.config)
        finally:
            owner.close()
            close_app(app)


# ------------------------------------------------------------ probe sets

def auth_probes(world, method, path, operation):
    """Each wrong token, and where the operation takes an Idempotency-Key, each
    again with a fresh key (a keyed request takes another path to the view)."""
    body, content_type = world.valid_probe_body(operation)
    keyed = "Idempotency-Key" in {p["name"] for p in parameters(operation, "header")}
    for kind, (headers, codes) in world.bad_authorizations(operation).items():
        yield Probe(f"authorization {kind}", method, world.url(path), headers, body, content_type,
                    status=401, codes=codes)
        if keyed:
            yield Probe(f"authorization {kind} with an Idempotency-Key", method, world.url(path),
                        {**headers, "Idempotency-Key": uuid.uuid4().hex}, body, content_type, status=401, codes=codes)


def body_probes(world, method, path, operation):
    schema, base = request_schema(operation), world.valid_body(operation)
    url, headers = world.url(path), world.headers(operation)
    # A provider format's prompt is its messages (the Responses API's input) and system prompt (instructions)
    # together: too long a prompt names messages (input).
    prompt = ("messages", "input") if speaks_provider_format(operation) else ()

    def probe(name, body, raw=None, content_type=JSON, **expect):
        return Probe(name, method, url, headers, json.dumps(body) if raw is None else raw, content_type, **expect)

    for prop, prop_schema in schema["properties"].items():
        for label, value in WRONG_TYPES.items():
            if not admits(prop_schema, value):
                yield probe(f"{prop} as {label}", {**base, prop: value}, status=400, codes=("validation_error",),
                            names=prop)
        slot = string_slot(prop_schema)
        if slot:
            for label, text in BAD_STRINGS.items():
                yield probe(f"{prop} {label}", {**base, prop: slot(text)}, names=prop)
            for label, text in ODD_STRINGS.items():
                yield probe(f"{prop} {label}", {**base, prop: slot(text)}, names=(prop, *prompt),
                            echo=(prop, slot(text)))
    for prop in schema.get("required", []):
        yield probe(f"missing {prop}", {k: v for k, v in base.items() if k != prop}, status=400,
                    codes=("validation_error",), names=prop)
    for extra, value in world.mass_assignment().items():
        if speaks_provider_format(operation):
            yield probe(f"extra {extra} ignored", {**base, extra: value}, accepted=True)
        else:
            yield probe(f"extra {extra}", {**base, extra: value}, status=400, codes=("validation_error",),
                        names=extra)
    for label, (raw, content_type, status, code) in RAW_BODIES.items():
        yield probe(f"body {label}", None, raw=raw, content_type=content_type, status=status, codes=(code,))


def path_probes(world, method, path, operation):
    body, content_type = world.valid_probe_body(operation)
    for param in (p["name"] for p in parameters(operation, "path")):
        values = dict(MALFORMED_IDS)
        if param in world.victim_ids:
            values["another-users-id"] = world.victim_ids[param]
        for label, value in values.items():
            yield Probe(f"{param} {label}", method, world.url(path, **{param: value}), world.headers(operation),
                        body, content_type, status=404, codes=("not_found",))


def query_probes(world, method, path, operation):
    body, content_type = world.valid_probe_body(operation)

    def probe(name, query, **expect):
        return Probe(name, method, world.url(path), world.headers(operation), body, content_type, query=query,
                     status=400, codes=("validation_error",), **expect)

    declared = {param["name"] for param in parameters(operation, "query")}
    for name, value in {"unknown": "1", "limt": "5", "user_id": world.victim_id}.items():
        if name in declared:  # an admin's filter by user, say
            continue
        if speaks_provider_format(operation):
            yield probe(f"unknown parameter {name} ignored", {name: value}, accepted=True)
        else:
            yield probe(f"unknown parameter {name}", {name: value}, names=name)
    if speaks_provider_format(operation):
        yield probe("unknown parameter with NUL", {"unknown": "a\x00b"}, names="query")
    for param in parameters(operation, "query"):
        name = param["name"]
        yield probe(f"{name} with NUL", {name: "a\x00b"})
        if name == "limit":
            for value in BAD_LIMITS:
                yield probe(f"limit={value!r}", {name: value}, names=name)
        if name == "cursor":
            for label, value in BAD_CURSORS.items():
                yield probe(f"cursor {label}", {name: value}, names=name)
        if "enum" in param["schema"]:
            yield probe(f"{name} outside its enum", {name: "bogus' OR 1=1 --"}, names=name)


def header_probes(world, method, path, operation):
    body, content_type = world.valid_probe_body(operation)
    for name in (p["name"] for p in parameters(operation, "header")):
        for label, value in BAD_IDEMPOTENCY_KEYS.items() if name == "Idempotency-Key" else ():
            yield Probe(f"{name} {label}", method, world.url(path), {**world.headers(operation), name: value},
                        body, content_type, status=400, codes=("validation_error",), names=name)


# ------------------------------------------------------------ tests

def test_every_operation_of_the_served_document_is_probed(world):
    assert len(OPERATIONS) >= 26
    assert world.client.get("/openapi.json").get_json()["paths"] == DOCUMENT["paths"]
    assert {param.id for param in BODY_OPERATIONS} >= {"POST /api/v1/balance/funds", "PUT /api/v1/preferences",
                                                       "POST /v1/chat/completions", "POST /v1/messages"}
    assert {error_body(param.values[2]) for param in OPERATIONS} == set(ERROR_READERS)


@pytest.mark.parametrize("method, path, operation", AUTH_OPERATIONS)
def test_wrong_tokens_are_401(world, method, path, operation):
    world.check(operation, auth_probes(world, method, path, operation))


@pytest.mark.parametrize("method, path, operation", BODY_OPERATIONS)
def test_hostile_bodies_are_refused(world, method, path, operation):
    world.check(operation, body_probes(world, method, path, operation))


@pytest.mark.parametrize("method, path, operation", PATH_OPERATIONS)
def test_malformed_and_foreign_ids_are_not_found(world, method, path, operation):
    world.check(operation, path_probes(world, method, path, operation))


@pytest.mark.parametrize("method, path, operation", OPERATIONS)
def test_bad_query_parameters_are_refused(world, method, path, operation):
    world.check(operation, query_probes(world, method, path, operation))


@pytest.mark.parametrize("method, path, operation", HEADER_OPERATIONS)
def test_bad_idempotency_keys_are_refused(world, method, path, operation):
    world.check(operation, header_probes(world, method, path, operation))
