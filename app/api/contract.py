"""What each operation states once, in decorators that only declare: who may
call it (`caller`), its body (`body`), its answers (`response`), its query
parameters (`query`), its other error statuses (`other_responses`), whether
it is idempotent (`idempotent`), its rate limit (`rate_limit`), whether it
streams (`streams`) and its wire format's error shape (`speaks_provider_format`).

Each records its part on the view's Operation and returns the view as it
was, so they stack in any order. One wrapper reads the Operation and runs it:
app/api/pipeline.py. The same declarations describe the operation in
/openapi.json (app/api/openapi.py). The view's docstring is its summary."""
from dataclasses import dataclass, field

from pydantic import BaseModel

# Who may call an operation (`caller`); an operation that declares none is open to anyone.
ACCOUNT = "account"                # an account's access token (a JWT from /auth/login)
ACCOUNT_OR_KEY = "account or key"  # that, or an access key (`qm-…`), as a bearer token or in x-api-key
ADMIN = "admin"                    # an account's access token whose user is an admin at this request


@dataclass
class Operation:
    """A view's contract, as its declarations state it."""
    summary: str = ""
    responses: dict = field(default_factory=dict)  # status → pydantic model, JSON schema dict, or None (no body)
    request: type[BaseModel] | None = None
    errors: tuple = ()
    callers: str | None = None           # ACCOUNT, ACCOUNT_OR_KEY, ADMIN, or None (anyone)
    query: list = field(default_factory=list)
    idempotent: bool = False
    claims_in_view: bool = False          # its view claims the Idempotency-Key record in its own transaction
    limit: object = None                  # its rate limit: a limit string, or a function giving one
    limit_key: object = None              # the function naming whose counter a request counts against
    uses_database: bool = True
    open_query: bool = False              # unknown query parameters are ignored, not refused
    stream_status: int | None = None      # the status of its text/event-stream answer, if it streams
    stream_format: object = None          # the format (app/api/formats) its streams and replays are in
    error_body: str = "Error"             # the component schema of its error answers

    @property
    def auth(self):
        return self.callers is not None

    @property
    def rate_limited(self):
        return self.limit is not None


def operation_of(view):
    """The view's Operation, made on first use."""
    if "operation" not in view.__dict__:
        view.operation = Operation(summary=(view.__doc__ or "").strip().split("\n\n")[0].replace("\n", " "))
    return view.operation


def _declaring(**parts):
    def declare(view):
        declared = operation_of(view)
        for name, value in parts.items():
            setattr(declared, name, value)
        return view
    return declare


def caller(kind):
    """Who may call: ACCOUNT, ACCOUNT_OR_KEY or ADMIN. The view gets the Caller as its first argument."""
    return _declaring(callers=kind)


def body(model):
    """The JSON body, validated against `model`; the view gets it after the Caller."""
    return _declaring(request=model)


def response(schema, status=200):
    """Declares an answer. The view returns a `schema` instance (or None for a
    body-less answer), optionally with headers and, when it declares more than
    one answer, the status: (instance, 201, {"Location": ...}). A ready
    Response passes as it is."""
    def declare(view):
        operation_of(view).responses[status] = schema
        return view
    return declare


def query(*parameters):
    """Declares the query parameters the view reads; any other is refused (a 400)."""
    def declare(view):
        operation_of(view).query.extend(parameters)
        return view
    return declare


def other_responses(*statuses):
    """Declares the error statuses particular to this view (the common ones,
    such as 400, 401 or 503, follow from the rest of its contract)."""
    def declare(view):
        operation_of(view).errors += statuses
        return view
    return declare


def idempotent(claims_in_view=False):
    """Honours an Idempotency-Key header (app/api/idempotency.py): the view
    gets the request's Idempotency after its body. `claims_in_view`: the view
    makes no call to another service, so it claims the record itself, in the
    transaction of its effect (one commit; a duplicate waits for it)."""
    return _declaring(idempotent=True, claims_in_view=claims_in_view)


def rate_limit(limit, key=None):
    """flask-limiter's limit (a string, or a function giving one), counted per
    `key()` (default: the client's address); 429 with Retry-After."""
    return _declaring(limit=limit, limit_key=key)


def streams(stream_format, status=200):
    """Declares that the view may answer with server-sent events in
    `stream_format`, which also replays a stored answer as a stream."""
    return _declaring(stream_status=status, stream_format=stream_format)


def speaks_provider_format(error_body):
    """Declares a view of a provider's format (the inference API): unknown query
    parameters are ignored, as SDKs send many, and errors take that format's
    shape, the component schema `error_body`."""
    return _declaring(open_query=True, error_body=error_body)


def without_database(view):
    """Declares that the view answers without the database (so never 503)."""
    return _declaring(uses_database=False)(view)
