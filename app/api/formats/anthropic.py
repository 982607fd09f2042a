"""Anthropic's Messages format: its request as a ModelCall, its answer (a
message), its stream (message_start, one text block, message_delta with the
usage, message_stop) and its errors."""
from app.api.formats import ModelCall, ending_of, replay_events, sentence, sse, text_of
from app.money import format_money
from app.schemas.anthropic_format import AnswerBlock, AnthropicUsage, Message, MessagesRequest

NAME = "anthropic"
ENDPOINT = "create_message"
PATH = "/messages"
SUMMARY = "Create a message (Anthropic's format), billed per token; `stream` for server-sent events"
Request, Answer, ERROR_BODY = MessagesRequest, Message, "AnthropicError"
# The request's fields in this format's words, for validation errors.
FIELDS = {"max_tokens": "max_tokens", "prompt": "messages"}
# A reply's ending (app.providers.Ending) in this format's words.
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence"}
ERROR_TYPES = {401: "authentication_error", 402: "billing_error", 403: "permission_error", 404: "not_found_error",
               413: "request_too_large", 429: "rate_limit_error", 504: "timeout_error"}


def call_of(body):
    system = [] if body.system is None else [{"role": "system", "content": text_of(body.system)}]
    messages = system + [{"role": message.role, "content": text_of(message.content)} for message in body.messages]
    return ModelCall(body.model, messages, body.max_tokens, body.temperature, body.stop_sequences,
                     body.stream)


def asks_for_stream(body):
    return body.stream


def error(code, message, status, details):
    error_type = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": error_type, "message": sentence(message, details)}}


def renderer(hold, body):
    return Events(f"msg_{hold.id}", hold.model_id)


def replay(stored_text, body):
    answer = Message.model_validate_json(stored_text)
    return replay_events(Events(answer.id, answer.model), answer, answer.content[0].text)


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

    def failure(self, failed):
        return sse(error(failed.code, failed.message, failed.status, failed.details), "error")

    def answer(self, hold, reply, exchange):
        ending = ending_of(hold, reply)
        return Message(
            id=self.message_id, model=self.model, content=[AnswerBlock(text=reply.content)],
            stop_reason=STOP_REASONS[ending.reason], stop_sequence=ending.stop_sequence,
            usage=AnthropicUsage(input_tokens=exchange.prompt_tokens, output_tokens=exchange.completion_tokens,
                                 cost=format_money(exchange.cost)))
