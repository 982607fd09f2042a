"""OpenAI's Chat Completions format: its request as a ModelCall, its answer
(a chat.completion), its stream (chat.completion.chunk events, the usage
chunk when asked for, then [DONE]) and its errors."""
import time

from app.api.formats import ModelCall, ending_of, replay_events, sentence, sse, text_of
from app.money import format_money
from app.schemas.openai_format import (AssistantMessage, ChatCompletion, ChatCompletionRequest, Choice,
                                       OpenAIUsage)

NAME = "openai"
ENDPOINT = "chat_completions"
PATH = "/chat/completions"
SUMMARY = "Create a chat completion (OpenAI's format), billed per token; `stream` for server-sent events"
Request, Answer, ERROR_BODY = ChatCompletionRequest, ChatCompletion, "OpenAIError"
# The request's fields in this format's words, for validation errors.
FIELDS = {"max_tokens": "max_tokens", "prompt": "messages"}
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "insufficient_quota",
               403: "permission_error", 404: "not_found_error", 409: "conflict_error", 429: "rate_limit_error"}


def call_of(body):
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    messages = [{"role": ROLES[message.role], "content": text_of(message.content)} for message in body.messages]
    return ModelCall(body.model, messages, body.max_completion_tokens or body.max_tokens,
                     body.temperature, stop, body.stream)


def asks_for_stream(body):
    return body.stream


def error(code, message, status, details):
    error_type = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    param = next(iter(details), None) if code == "validation_error" else None
    return {"error": {"message": sentence(message, details), "type": error_type, "code": code, "param": param}}


def renderer(hold, body):
    return Chunks(f"chatcmpl-{hold.id}", hold.model_id, int(time.time()), _wants_usage(body))


def replay(stored_text, body):
    answer = ChatCompletion.model_validate_json(stored_text)
    chunks = Chunks(answer.id, answer.model, answer.created, _wants_usage(body))
    return replay_events(chunks, answer, answer.choices[0].message.content)


def _wants_usage(body):
    return body.stream_options is not None and body.stream_options.include_usage


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

    def failure(self, failed):
        return sse(error(failed.code, failed.message, failed.status, failed.details))

    def answer(self, hold, reply, exchange):
        return ChatCompletion(
            id=self.head["id"], created=self.head["created"], model=self.head["model"],
            choices=[Choice(message=AssistantMessage(content=reply.content),
                            finish_reason="length" if ending_of(hold, reply).reason == "length" else "stop")],
            usage=OpenAIUsage(prompt_tokens=exchange.prompt_tokens, completion_tokens=exchange.completion_tokens,
                              total_tokens=exchange.prompt_tokens + exchange.completion_tokens,
                              cost=format_money(exchange.cost)))
