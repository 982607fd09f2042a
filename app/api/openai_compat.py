"""OpenAI's format at /v1, for the `openai` SDK and its kin (base URL
http://host:port/v1): the catalog as models, and chat completions billed like
any call."""
import time
from datetime import datetime, timezone

from flask import Blueprint, g
from flask import request as flask_request

from app.api import inference
from app.api.contract import body, other_responses, response, speaks_provider_format, streams
from app.api.guards import access_key_subject, authenticate_caller, rate_limited
from app.api.idempotency import idempotent
from app.api.streaming import answer_call, event_stream, sse
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
@streams()
@other_responses(402, 403, 404, 422, 502, 504)
@authenticate_caller
@idempotent(replay=lambda stored: _replay(stored))
@body(ChatCompletionRequest)
def chat_completions(request):
    """Create a chat completion (OpenAI's format), billed per token; `stream` for server-sent events"""
    messages = [{"role": ROLES[message.role], "content": inference.text_of(message.content)}
                for message in request.messages]
    stop = [request.stop] if isinstance(request.stop, str) else request.stop
    hold = inference.hold(request.model, messages, request.max_completion_tokens or request.max_tokens,
                          request.temperature, FIELDS, stream=request.stream, stop=stop)
    writer = Chunks(f"chatcmpl-{hold.id}", hold.model_id, int(time.time()), _wants_usage(request))
    return answer_call(hold, writer, request.stream)


def completion_of(hold, reply, exchange, created):
    return ChatCompletion(
        id=f"chatcmpl-{hold.id}", created=created, model=hold.model_id,
        choices=[Choice(message=AssistantMessage(content=reply.content),
                        finish_reason="length" if inference.ending_of(hold, reply).reason == "length" else "stop")],
        usage=OpenAIUsage(prompt_tokens=exchange.prompt_tokens, completion_tokens=exchange.completion_tokens,
                          total_tokens=exchange.prompt_tokens + exchange.completion_tokens,
                          cost=format_money(exchange.cost)))


def _wants_usage(request):
    return request.stream_options is not None and request.stream_options.include_usage


class Chunks:
    """A completion as OpenAI streams it: chat.completion.chunk events, the
    usage chunk (empty choices) when the client asked for it, then [DONE]."""
    status = 200

    def __init__(self, completion_id, model, created, include_usage):
        self.head = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
        self.include_usage = include_usage

    def _chunk(self, choices, **extra):
        return sse({**self.head, "choices": choices, **extra})

    def opening(self):
        return self._chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])

    def delta(self, text):
        return self._chunk([{"index": 0, "delta": {"content": text}, "finish_reason": None}]) if text else ""

    def closing(self, answer):
        text = self._chunk([{"index": 0, "delta": {}, "finish_reason": answer.choices[0].finish_reason}])
        if self.include_usage:
            text += self._chunk([], usage=answer.usage.model_dump(mode="json"))
        return text + "data: [DONE]\n\n"

    def failure(self, error):
        return sse(inference.openai_error(error.code, error.message, error.status, error.details))

    def answer(self, hold, reply, exchange):
        return completion_of(hold, reply, exchange, self.head["created"])


def _replay(stored):
    """A retried stream, answered from the stored completion: one delta, the usage, the end."""
    asked = ChatCompletionRequest.model_validate_json(flask_request.get_data())
    if not asked.stream:
        return None
    answer = ChatCompletion.model_validate_json(stored)
    writer = Chunks(answer.id, answer.model, answer.created, _wants_usage(asked))
    return event_stream([writer.opening() + writer.delta(answer.choices[0].message.content) + writer.closing(answer)])
