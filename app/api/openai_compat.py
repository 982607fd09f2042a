"""OpenAI's format at /v1, for the `openai` SDK and its kin (base URL
http://host:port/v1): the catalog as models, and chat completions billed like
any call."""
import time
from datetime import datetime, timezone

from flask import Blueprint, g

from app import billing
from app.api import inference
from app.api.contract import body, other_responses, response, speaks_provider_format
from app.api.guards import access_key_subject, authenticate_caller, idempotent, rate_limited, respond
from app.extensions import db
from app.money import format_money
from app.schemas.openai_format import (AssistantMessage, ChatCompletion, ChatCompletionRequest, Choice, ModelListing,
                                       ModelObject, OpenAIUsage)

bp = Blueprint("openai", __name__, url_prefix="/v1")
FIELDS = {"max_tokens": "max_tokens", "prompt": "messages"}
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@bp.get("/models")
@speaks_provider_format("OpenAIError")
@response(ModelListing)
@authenticate_caller
def list_models():
    """The catalog, as OpenAI's model list (an access key's own models only)"""
    allowed = g.access_key and g.access_key["allowed_models"]
    return ModelListing(data=[_model_object(row) for row in db.catalog() if not allowed or row["id"] in allowed])


def _model_object(row):
    created = datetime(*row["prices_as_of"].timetuple()[:3], tzinfo=timezone.utc)
    return ModelObject(id=row["id"], created=int(created.timestamp()), owned_by=row["provider"],
                       context_window=row["context_window"], max_output_tokens=row["max_output_tokens"],
                       input_price_per_mtok=format_money(row["input_price_per_mtok"]),
                       output_price_per_mtok=format_money(row["output_price_per_mtok"]))


@bp.post("/chat/completions")
@speaks_provider_format("OpenAIError")
@rate_limited(inference.access_key_limit, key_func=access_key_subject)
@response(ChatCompletion)
@other_responses(402, 403, 404, 422, 502, 504)
@authenticate_caller
@idempotent
@body(ChatCompletionRequest)
def chat_completions(request):
    """Create a chat completion (OpenAI's format), billed per token"""
    messages = [{"role": ROLES[message.role], "content": inference.text_of(message.content)}
                for message in request.messages]
    hold = inference.hold(request.model, messages, request.max_completion_tokens or request.max_tokens,
                          request.temperature, FIELDS)
    reply = billing.call(hold)
    with billing.settling(hold) as tx:
        exchange = billing.settle(hold, reply, tx)
        return respond(ChatCompletion(
            id=f"chatcmpl-{hold.id}", created=int(time.time()), model=hold.model_id,
            choices=[Choice(message=AssistantMessage(content=reply.content),
                            finish_reason="length" if inference.finished_by_length(hold, reply) else "stop")],
            usage=OpenAIUsage(prompt_tokens=exchange.prompt_tokens, completion_tokens=exchange.completion_tokens,
                              total_tokens=exchange.prompt_tokens + exchange.completion_tokens,
                              cost=format_money(exchange.cost)),
        ), 200, tx)
