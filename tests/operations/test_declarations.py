"""An operation's declarations only declare: applied in any order they give
the same contract, and the one pipeline serves it the same way."""
import types

from app.api.callers import access_key_subject
from app.api.contract import (ACCOUNT_OR_KEY, body, caller, idempotent, operation_of, other_responses, query,
                              rate_limit, response, speaks_provider_format, streams)
from app.api.formats import openai
from app.api.openapi import LIMIT
from app.api.pipeline import serve
from app.schemas.openai_format import ChatCompletion, ChatCompletionRequest
from tests.support import bearer, user


def _declared_in(order, view=None):
    if view is None:
        def view(caller, request, idempotency):
            """Do a thing"""
    else:  # a copy, so that each order declares on a function of its own
        view = types.FunctionType(view.__code__, view.__globals__, view.__name__)
    for declare in order:
        view = declare(view)
    return view


PARTS = [caller(ACCOUNT_OR_KEY), body(ChatCompletionRequest), response(ChatCompletion), response(None, 204),
         idempotent(), rate_limit("5 per minute", key=access_key_subject), streams(openai),
         speaks_provider_format(openai.ERROR_BODY), other_responses(402, 404), query(LIMIT)]


def test_every_order_of_the_declarations_gives_the_same_contract():
    first = operation_of(_declared_in(PARTS))
    assert (first.callers, first.request, first.responses, first.idempotent, first.limit, first.stream_format,
            first.error_body, first.open_query, first.query) == (
        ACCOUNT_OR_KEY, ChatCompletionRequest, {200: ChatCompletion, 204: None}, True, "5 per minute", openai,
        "OpenAIError", True, [LIMIT])
    for order in (list(reversed(PARTS)), PARTS[3:] + PARTS[:3], PARTS[1::2] + PARTS[::2]):
        assert operation_of(_declared_in(order)) == first
    assert sorted(first.errors) == [402, 404]


def test_a_declaration_returns_the_view_itself():
    def view(caller):
        """Do a thing"""
    for declare in PARTS:
        assert declare(view) is view


def test_the_pipeline_serves_each_order_alike(app, client):
    """The same steps run for two views declared in opposite orders: the same
    refusals in the same order (401 before 400), the same answer."""
    def seen(caller, request):
        """What the view was given"""
        return {"user": str(caller.user_id), "model": request.model}

    steps = [caller(ACCOUNT_OR_KEY), body(ChatCompletionRequest), response({"type": "object"})]
    for name, order in (("forwards", steps), ("backwards", steps[::-1])):
        view = _declared_in(order, seen)
        app.add_url_rule(f"/test/{name}", endpoint=name, view_func=serve(view), methods=["POST"])
    token = user(client)
    valid = {"model": "local/echo", "messages": [{"role": "user", "content": "hi"}]}
    answers = [[(answer.status_code, answer.get_json()) for answer in (
        client.post(f"/test/{name}", json={}),
        client.post(f"/test/{name}", json={}, headers=bearer(token)),
        client.post(f"/test/{name}", json=valid, headers=bearer(token)))] for name in ("forwards", "backwards")]
    assert answers[0] == answers[1]
    assert [status for status, _ in answers[0]] == [401, 400, 200]
    assert answers[0][2][1]["model"] == "local/echo"
