"""The inference API at /v1, where the providers' SDKs look for it: the
catalog as OpenAI's model list, and one call operation per wire format
(OpenAI's Chat Completions at /v1/chat/completions, Anthropic's Messages at
/v1/messages, OpenAI's Responses API at /v1/responses), each the same view parameterised by its format
(app/api/formats). A call is billed through the same hold → call → settle as
a chat message; no message text is stored."""
from datetime import datetime, timezone

from flask import current_app

from app import billing
from app.api.answers import answer_call
from app.api.callers import access_key_subject
from app.api.contract import (ACCOUNT_OR_KEY, body, caller, idempotent, other_responses, rate_limit, response,
                              speaks_provider_format, streams)
from app.api.formats import anthropic, openai, responses
from app.api.pipeline import OperationBlueprint
from app.errors import register_error_shape
from app.extensions import db
from app.schemas.catalog import prices_of
from app.schemas.anthropic_format import CountTokensRequest, TokenCount
from app.schemas.openai_format import ModelListing, ModelObject

# One blueprint per format, named for it: its operations' ids and tags in /openapi.json.
blueprints = {wire_format: OperationBlueprint(wire_format.NAME, __name__, url_prefix="/v1")
              for wire_format in (openai, anthropic, responses)}


def register(app):
    for blueprint in blueprints.values():
        app.register_blueprint(blueprint)
    # Errors in each format's shape: Anthropic's at its path, OpenAI's at the rest of /v1 (Responses too).
    register_error_shape(app, "/v1" + anthropic.PATH, anthropic.error)
    register_error_shape(app, "/v1/", openai.error)


def access_key_limit():
    return current_app.config["RATE_LIMIT_ACCESS_KEY"]


@blueprints[openai].get("/models")
@speaks_provider_format(openai.ERROR_BODY)
@response(ModelListing)
@caller(ACCOUNT_OR_KEY)
def list_models(caller):
    """The catalog, as OpenAI's model list (an access key's own models only)"""
    allowed = caller.access_key and caller.access_key["allowed_models"]
    return ModelListing(data=[_model_object(row) for row in db.catalog() if not allowed or row["id"] in allowed])


def _model_object(row):
    created = datetime(*row["prices_as_of"].timetuple()[:3], tzinfo=timezone.utc)
    return ModelObject(id=row["id"], created=int(created.timestamp()), owned_by=row["provider"],
                       context_window=row["context_window"], max_output_tokens=row["max_output_tokens"],
                       **prices_of(row), features=row["features"], input_modalities=row["input_modalities"],
                       aliases=row["aliases"])


@blueprints[anthropic].post("/messages/count_tokens")
@speaks_provider_format(anthropic.ERROR_BODY)
@rate_limit(access_key_limit, access_key_subject)
@response(TokenCount)
@other_responses(403, 404, 502, 504)
@caller(ACCOUNT_OR_KEY)
@body(CountTokensRequest)
def count_tokens(caller, request_body):
    """Count a message's input tokens (Anthropic's format), free: the provider's own count for Anthropic models,
    an estimate for the others"""
    call = anthropic.call_of(request_body)
    return TokenCount(input_tokens=billing.count_prompt_tokens(caller.user_id, call, caller.access_key,
                                                               anthropic.FIELDS))


def call_operation(wire_format):
    """The call operation of `wire_format`: its request made a ModelCall, held
    for the caller, made, and answered (whole or streamed) in that format."""
    def create(caller, request_body, idempotency):
        call = wire_format.call_of(request_body)
        hold = billing.hold_call(caller.user_id, call, wire_format.FIELDS, access_key=caller.access_key)
        return answer_call(hold, lambda served: wire_format.renderer(served, request_body), call.stream, idempotency)

    create.__name__ = create.__qualname__ = f"create_{wire_format.NAME}"  # its own rate-limit counter
    create.__doc__ = wire_format.SUMMARY
    declarations = (speaks_provider_format(wire_format.ERROR_BODY), rate_limit(access_key_limit, access_key_subject),
                    response(wire_format.Answer), streams(wire_format), other_responses(402, 403, 404, 422, 502, 504),
                    caller(ACCOUNT_OR_KEY), idempotent(), body(wire_format.Request))
    for declare in declarations:
        declare(create)
    return create


for _format, _blueprint in blueprints.items():
    _blueprint.add_url_rule(_format.PATH, endpoint=_format.ENDPOINT, view_func=call_operation(_format),
                            methods=["POST"])
