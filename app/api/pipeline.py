"""The one way a request reaches a view: `serve` wraps each declared view
(app/api/contract.py) in the steps its Operation asks for, always in this
order:

1. the rate limit, read from the credential without the database;
2. authentication, into a Caller;
3. the body, parsed and validated;
4. the Idempotency-Key claim, whose replay is the same caller's answer;
5. the view, called as view(caller, body, idempotency, **path), with only
   the arguments its operation declares;
6. the record: the answer serialised as declared, and the Idempotency-Key
   record released if the view neither stored nor handed it over.

Every blueprint under app/api is an OperationBlueprint, which serves each of
its views this way."""
import functools

import flask
from flask import current_app

from app.api.bodies import json_body
from app.api.callers import authenticate
from app.api.contract import operation_of
from app.api.formats import event_stream
from app.api.idempotency import Idempotency, replayed, serialise
from app.extensions import limiter
from app.observability import note_user


def serve(view):
    """`view` behind the pipeline its declarations ask for."""
    operation = operation_of(view)

    @functools.wraps(view)
    def pipeline(**path):
        caller = authenticate(operation.callers) if operation.auth else None
        if caller is not None:
            note_user(caller.user_id)
        body = json_body(operation.request) if operation.request is not None else None
        arguments = [value for value, declared in ((caller, operation.auth), (body, operation.request is not None))
                     if declared]
        if not operation.idempotent:
            return _serialised(operation, view(*arguments, **path))
        asks_for_stream = operation.stream_format is not None and operation.stream_format.asks_for_stream(body)
        idempotency = Idempotency.of_request(caller, asks_for_stream)
        if not operation.claims_in_view:
            stored = idempotency.claim()
            if stored is not None:
                if asks_for_stream:
                    return replayed(event_stream(operation.stream_format.replay(stored.text, body)))
                return stored.response()
        try:
            answer = view(*arguments, idempotency, **path)
        except BaseException:
            idempotency.close(failed=True)
            raise
        idempotency.close(failed=False)
        return _serialised(operation, answer)

    if operation.rate_limited:
        pipeline = limiter.limit(operation.limit, key_func=operation.limit_key)(pipeline)
    pipeline.operation = operation
    return pipeline


def _serialised(operation, result):
    """The view's answer as Flask takes it: a ready Response as it is; else the
    declared model's JSON, with the status (the operation's first, unless the
    view gave one) and headers the view returned with it."""
    if isinstance(result, current_app.response_class):
        return result
    value, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    status = rest[0] if rest and isinstance(rest[0], int) else min(operation.responses, default=200)
    headers = rest[-1] if rest and isinstance(rest[-1], dict) else {}
    return serialise(value), status, headers


class OperationBlueprint(flask.Blueprint):
    """A blueprint whose every declared view is served through the pipeline
    (one that declares nothing, such as a second address of a document, is
    left as it is and left out of /openapi.json)."""

    def add_url_rule(self, rule, endpoint=None, view_func=None, **options):
        if view_func is not None and "operation" in view_func.__dict__:
            view_func = serve(view_func)
        super().add_url_rule(rule, endpoint, view_func, **options)
