"""OpenAI's Chat Completions format: its request as a ModelCall, its answer
(a chat.completion), its stream (chat.completion.chunk events, the usage
chunk when asked for, then [DONE]) and its errors."""
import time

from app.api.formats import (CacheMarks, ToolCallsSeen, ending_of, image_url_part, replay_events, response_format_of,
                             sentence, sse, text_of, tool_of, tool_use_of)
from app.errors import ValidationFailed
from app.money import format_money
from app.providers.conversation import ModelCall, cached, text_part, user_content
from app.providers.reasoning import Reasoning, ThinkingBlock
from app.providers.tools import ToolCall
from app.schemas.openai_format import (AssistantMessage, CalledFunction, CalledTool, ChatCompletion,
                                       ChatCompletionRequest, Choice, CompletionTokensDetails, OpenAIUsage,
                                       PromptTokensDetails)

NAME = "openai"
ENDPOINT = "chat_completions"
PATH = "/chat/completions"
SUMMARY = "Create a chat completion (OpenAI's format), billed per token; `stream` for server-sent events"
Request, Answer, ERROR_BODY = ChatCompletionRequest, ChatCompletion, "OpenAIError"
# The request's fields in this format's words, for validation errors.
FIELDS = {"max_tokens": "max_tokens", "prompt": "messages", "tools": "tools", "response_format": "response_format"}
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
FINISH_REASONS = {"length": "length", "tool_calls": "tool_calls"}  # any other ending is "stop"
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "insufficient_quota",
               403: "permission_error", 404: "not_found_error", 409: "conflict_error", 429: "rate_limit_error"}


def call_of(body):
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    seen, marks = ToolCallsSeen(), CacheMarks()
    messages = [_message(message, f"messages.{index}", seen, marks) for index, message in enumerate(body.messages)]
    tools = [tool_of(tool.function.name, tool.function.description, tool.function.parameters)
             for tool in body.tools or ()]
    named = hasattr(body.tool_choice, "function")
    choice = body.tool_choice.function.name if named else body.tool_choice
    tool_use = tool_use_of(tools, choice, body.parallel_tool_calls, {
        "tools": "tools.{}.function.name", "choice": "tool_choice.function.name" if named else "tool_choice"})
    effort = body.reasoning_effort
    return ModelCall(body.model, messages, body.max_completion_tokens or body.max_tokens, body.temperature, stop,
                     body.stream, tool_use, _response_format(body.response_format),
                     None if effort is None else Reasoning(effort=effort), marks.first_field,
                     None if effort is None else "reasoning_effort", tuple(body.models or ()),
                     body.provider and body.provider.sort)


def _response_format(asked):
    if asked is None or asked.type != "json_schema":
        return response_format_of(asked.type if asked else "text")
    schema = asked.json_schema
    return response_format_of("json_schema", schema.name, schema.schema_, schema.strict, schema.description)


def _message(message, field, seen, marks):
    """One message of the request, in no format's words; a user's may hold
    images, a user's or a system's text parts cache marks."""
    if message.role in ("user", "system", "developer") and isinstance(message.content, list):
        if message.role != "user":
            _no_images(message.content, field)
        return {"role": ROLES[message.role], "content": user_content(
            [_part(part, f"{field}.content.{index}", marks) for index, part in enumerate(message.content)])}
    if message.role == "tool":
        if message.tool_call_id is None:
            raise ValidationFailed(details={f"{field}.tool_call_id": "is required"})
        seen.check(message.tool_call_id, f"{field}.tool_call_id")
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": _text(message, field),
                "is_error": False}
    if message.role != "assistant" or not message.tool_calls:
        return {"role": ROLES[message.role], "content": _text(message, field)}
    calls = [seen.made(call.id, call.function.name, call.function.arguments,
                       f"{field}.tool_calls.{index}.function.arguments")
             for index, call in enumerate(message.tool_calls)]
    _no_images(message.content, field)
    return {"role": "assistant", "content": text_of(message.content or ""), "tool_calls": calls}


def _part(part, field, marks):
    if part.type == "text":
        return cached(text_part(part.text), marks.of(part.cache_control, field))
    return image_url_part(part.image_url.url, part.image_url.detail, f"{field}.image_url.url",
                          f"{field}.image_url.detail")


def _text(message, field):
    if message.content is None:
        raise ValidationFailed(details={f"{field}.content": "is required"})
    _no_images(message.content, field)
    return text_of(message.content)


def _no_images(content, field):
    for index, part in enumerate(content if isinstance(content, list) else ()):
        if part.type != "text":
            raise ValidationFailed(details={f"{field}.content.{index}": "an image goes in a user's message only"})


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
    message = answer.choices[0].message
    calls = [ToolCall(call.id, call.function.name, call.function.arguments) for call in message.tool_calls or ()]
    thinking = [ThinkingBlock(message.reasoning_content)] if message.reasoning_content else []
    return replay_events(chunks, answer, message.content or "", calls, thinking)


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

    def thinking_delta(self, delta):
        """Thinking's text as LiteLLM streams it (its signature has no place here)."""
        if not delta.text:
            return ""
        return self._chunk([{"index": 0, "delta": {"reasoning_content": delta.text}, "finish_reason": None}])

    def tool_delta(self, delta):
        call = {"index": delta.index, "function": {"arguments": delta.arguments}}
        if delta.id is not None:
            call = {"index": delta.index, "id": delta.id, "type": "function",
                    "function": {"name": delta.name, "arguments": delta.arguments}}
        return self._chunk([{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}])

    def closing(self, answer):
        text = self._chunk([{"index": 0, "delta": {}, "finish_reason": answer.choices[0].finish_reason}])
        if self.include_usage:
            text += self._chunk([], usage=answer.usage.model_dump(mode="json"))
        return text + "data: [DONE]\n\n"

    def failure(self, failed):
        return sse(error(failed.code, failed.message, failed.status, failed.details))

    def answer(self, hold, reply, exchange):
        calls = [CalledTool(id=call.id, function=CalledFunction(name=call.name, arguments=call.arguments))
                 for call in reply.tool_calls]
        thinking = "".join(block.text for block in reply.thinking)
        message = AssistantMessage(content=reply.content or (None if calls else ""), tool_calls=calls or None,
                                   reasoning_content=thinking or None)
        return ChatCompletion(
            id=self.head["id"], created=self.head["created"], model=self.head["model"],
            choices=[Choice(message=message,
                            finish_reason=FINISH_REASONS.get(ending_of(hold, reply).reason, "stop"))],
            usage=usage_of(exchange.charge))


def usage_of(charge):
    """A Charge (app/pricing.py) as this format's usage: prompt_tokens count the cached ones too."""
    return OpenAIUsage(
        prompt_tokens=charge.prompt_tokens, completion_tokens=charge.completion_tokens,
        total_tokens=charge.prompt_tokens + charge.completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=charge.cache_read_tokens),
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=charge.reasoning_tokens or 0),
        cache_creation_input_tokens=charge.cache_write_tokens + charge.cache_write_1h_tokens,
        cost=format_money(charge.cost))
