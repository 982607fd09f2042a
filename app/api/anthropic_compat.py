"""Anthropic's Messages format at /v1/messages, for the `anthropic` SDK (base
URL http://host:port): any catalog model, billed like any call."""
from flask import Blueprint
from flask import request as flask_request

from app.api import inference
from app.api.contract import body, other_responses, response, speaks_provider_format, streams
from app.api.guards import access_key_subject, authenticate_caller, rate_limited
from app.api.idempotency import idempotent
from app.api.streaming import answer_call, event_stream, sse
from app.money import format_money
from app.schemas.anthropic_format import AnswerBlock, AnthropicUsage, Message, MessagesRequest

bp = Blueprint("anthropic", __name__, url_prefix="/v1")
FIELDS = {"max_tokens": "max_tokens", "prompt": "messages"}
# A reply's ending (app.providers.Ending) in this format's words.
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence"}


@bp.post("/messages")
@speaks_provider_format("AnthropicError")
@rate_limited(inference.access_key_limit, key_func=access_key_subject)
@response(Message)
@streams()
@other_responses(402, 403, 404, 422, 502, 504)
@authenticate_caller
@idempotent(replay=lambda stored: _replay(stored))
@body(MessagesRequest)
def create_message(request):
    """Create a message (Anthropic's format), billed per token; `stream` for server-sent events"""
    system = [] if request.system is None else [{"role": "system", "content": inference.text_of(request.system)}]
    messages = system + [{"role": message.role, "content": inference.text_of(message.content)}
                         for message in request.messages]
    hold = inference.hold(request.model, messages, request.max_tokens, request.temperature, FIELDS,
                          stream=request.stream, stop=request.stop_sequences)
    return answer_call(hold, Events(f"msg_{hold.id}", hold.model_id), request.stream)


def message_of(hold, reply, exchange):
    ending = inference.ending_of(hold, reply)
    return Message(
        id=f"msg_{hold.id}", model=hold.model_id, content=[AnswerBlock(text=reply.content)],
        stop_reason=STOP_REASONS[ending.reason], stop_sequence=ending.stop_sequence,
        usage=AnthropicUsage(input_tokens=exchange.prompt_tokens, output_tokens=exchange.completion_tokens,
                             cost=format_money(exchange.cost)))


class Events:
    """A message as Anthropic streams it: message_start, one text block's
    start, deltas and stop, message_delta with the usage (and its cost), then
    message_stop. The usage is known at the end only, so message_start carries
    zeros and message_delta the totals, as the SDKs read them."""
    status = 200

    def __init__(self, message_id, model):
        self.message_id, self.model = message_id, model

    def opening(self):
        message = {"id": self.message_id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                   "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}
        return (sse({"type": "message_start", "message": message}, "message_start")
                + sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                      "content_block_start"))

    def delta(self, text):
        if not text:
            return ""
        return sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
                   "content_block_delta")

    def closing(self, answer):
        usage = answer.usage.model_dump(mode="json")
        return (sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
                + sse({"type": "message_delta",
                       "delta": {"stop_reason": answer.stop_reason, "stop_sequence": answer.stop_sequence},
                       "usage": usage}, "message_delta")
                + sse({"type": "message_stop"}, "message_stop"))

    def failure(self, error):
        return sse(inference.anthropic_error(error.code, error.message, error.status, error.details), "error")

    def answer(self, hold, reply, exchange):
        return message_of(hold, reply, exchange)


def _replay(stored):
    """A retried stream, answered from the stored message: one delta, the usage, the end."""
    if not MessagesRequest.model_validate_json(flask_request.get_data()).stream:
        return None
    answer = Message.model_validate_json(stored)
    writer = Events(answer.id, answer.model)
    return event_stream([writer.opening() + writer.delta(answer.content[0].text) + writer.closing(answer)])
