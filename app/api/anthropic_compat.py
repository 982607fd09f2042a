"""Anthropic's Messages format at /v1/messages, for the `anthropic` SDK (base
URL http://host:port): any catalog model, billed like any call."""
from flask import Blueprint

from app import billing
from app.api import inference
from app.api.contract import body, other_responses, response, speaks_provider_format
from app.api.guards import access_key_subject, authenticate_caller, idempotent, rate_limited, respond
from app.money import format_money
from app.schemas.anthropic_format import AnswerBlock, AnthropicUsage, Message, MessagesRequest

bp = Blueprint("anthropic", __name__, url_prefix="/v1")
FIELDS = {"max_tokens": "max_tokens", "prompt": "messages"}


@bp.post("/messages")
@speaks_provider_format("AnthropicError")
@rate_limited(inference.access_key_limit, key_func=access_key_subject)
@response(Message)
@other_responses(402, 403, 404, 422, 502, 504)
@authenticate_caller
@idempotent
@body(MessagesRequest)
def create_message(request):
    """Create a message (Anthropic's format), billed per token"""
    system = [] if request.system is None else [{"role": "system", "content": inference.text_of(request.system)}]
    messages = system + [{"role": message.role, "content": inference.text_of(message.content)}
                         for message in request.messages]
    hold = inference.hold(request.model, messages, request.max_tokens, request.temperature, FIELDS)
    reply = billing.call(hold)
    with billing.settling(hold) as tx:
        exchange = billing.settle(hold, reply, tx)
        return respond(Message(
            id=f"msg_{hold.id}", model=hold.model_id, content=[AnswerBlock(text=reply.content)],
            stop_reason="max_tokens" if inference.finished_by_length(hold, reply) else "end_turn",
            usage=AnthropicUsage(input_tokens=exchange.prompt_tokens, output_tokens=exchange.completion_tokens,
                                 cost=format_money(exchange.cost)),
        ), 200, tx)
