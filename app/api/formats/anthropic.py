"""Anthropic's Messages format: its request as a ModelCall, its answer (a
message), its stream (message_start, one text block, message_delta with the
usage, message_stop) and its errors."""
import json
import logging

from app.api.formats import (CacheMarks, ToolCallsSeen, ending_of, image_at, replay_events, sentence, sse, text_of,
                             tool_use_of)
from app.errors import ValidationFailed
from app.money import format_money
from app.providers.conversation import ModelCall, cached, image_part, text_part, user_content
from app.providers.images import MEDIA_TYPES, image_of_base64, image_of_url
from app.providers.reasoning import Reasoning, ThinkingBlock
from app.providers.tools import Tool, ToolCall, arguments_text
from app.schemas.anthropic_format import (AnswerBlock, AnthropicUsage, CacheCreation, Message, MessagesRequest,
                                          RedactedThinkingAnswer, ThinkingAnswer, ToolUseAnswer)

log = logging.getLogger(__name__)
NAME = "anthropic"
ENDPOINT = "create_message"
PATH = "/messages"
SUMMARY = "Create a message (Anthropic's format), billed per token; `stream` for server-sent events"
Request, Answer, ERROR_BODY = MessagesRequest, Message, "AnthropicError"
# The request's fields in this format's words, for validation errors.
FIELDS = {"max_tokens": "max_tokens", "prompt": "messages", "tools": "tools"}
# A reply's ending (app.providers.Ending) in this format's words.
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence",
                "tool_calls": "tool_use"}
# tool_choice's types in no format's words (a "tool" is chosen by its name).
TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
ERROR_TYPES = {401: "authentication_error", 402: "billing_error", 403: "permission_error", 404: "not_found_error",
               413: "request_too_large", 429: "rate_limit_error", 504: "timeout_error"}


def call_of(body):
    marks, seen = CacheMarks(), ToolCallsSeen()
    messages = _system(body.system, marks) + [
        converted for index, message in enumerate(body.messages)
        for converted in _messages(message, f"messages.{index}", seen, marks)]
    tools = [Tool(tool.name, tool.description, tool.input_schema, marks.of(tool.cache_control, f"tools.{index}"))
             for index, tool in enumerate(body.tools or ())]
    choice = body.tool_choice
    tool_use = tool_use_of(
        tools, None if choice is None else choice.name if choice.type == "tool" else TOOL_CHOICES[choice.type],
        None if choice is None or choice.disable_parallel_tool_use is None else not choice.disable_parallel_tool_use,
        {"tools": "tools.{}.name", "choice": "tool_choice.name" if choice and choice.type == "tool" else "tool_choice"})
    reasoning = None if body.thinking is None else Reasoning(thinking=body.thinking.model_dump(exclude_none=True))
    return ModelCall(body.model, messages, body.max_tokens, body.temperature, body.stop_sequences, body.stream,
                     tool_use, reasoning=reasoning, cache_field=marks.first_field,
                     reasoning_field=None if reasoning is None else "thinking", fallbacks=tuple(body.models or ()),
                     sort=body.provider and body.provider.sort)


def _system(system, marks):
    """The system prompt as a system message: its text, or its text parts
    where some carry cache marks."""
    if system is None:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    return [{"role": "system", "content": user_content(
        [cached(text_part(block.text), marks.of(block.cache_control, f"system.{index}"))
         for index, block in enumerate(system)])}]


def _messages(message, field, seen, marks):
    """A message of the request as messages in no format's words: a user's
    turn may carry tools' results, each its own message, and text and images
    around them; an assistant's turn, its earlier thinking, text and tool
    calls. A block's cache mark goes on its part, or on its message."""
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    if message.role == "assistant":
        return [_assistant(message.content, field, seen, marks)]
    converted, parts = [], []
    for index, block in enumerate(message.content):
        place = f"{field}.content.{index}"
        if block.type in ("tool_use", "thinking", "redacted_thinking"):
            raise _misplaced(place)
        cache = marks.of(block.cache_control, place)
        if block.type == "text":
            parts.append(cached(text_part(block.text), cache))
            continue
        if block.type == "image":
            parts.append(cached(image_part(_image(block.source, f"{place}.source")), cache))
            continue
        seen.check(block.tool_use_id, f"{place}.tool_use_id")
        for part_index, part in enumerate(block.content if isinstance(block.content, list) else ()):
            if part.type == "image":
                raise ValidationFailed(details={f"{place}.content.{part_index}":
                                                "an image in a tool's result is not supported; "
                                                "send it in the user's turn beside the result"})
        converted.append({"role": "tool", "tool_call_id": block.tool_use_id,
                          "content": text_of(block.content or ""), "is_error": block.is_error,
                          **({"cache": cache} if cache else {})})
    return converted + ([{"role": "user", "content": user_content(parts)}] if parts or not converted else [])


def _assistant(blocks, field, seen, marks):
    """An assistant's turn: its text, its tool calls, the thinking blocks it
    showed (sent back as they came), and the last cache mark of its blocks."""
    calls, thinking, cache = [], [], None
    for index, block in enumerate(blocks):
        if block.type in ("tool_result", "image"):
            raise _misplaced(f"{field}.content.{index}")
        if block.type == "thinking":
            thinking.append(ThinkingBlock(block.thinking, block.signature))
        elif block.type == "redacted_thinking":
            thinking.append(ThinkingBlock(redacted=block.data))
        else:
            cache = marks.of(block.cache_control, f"{field}.content.{index}") or cache
        if block.type == "tool_use":
            seen.add(block.id)
            calls.append(ToolCall(block.id, block.name, arguments_text(block.input)))
    text = "".join(block.text for block in blocks if block.type == "text")
    return {"role": "assistant", "content": text, **({"tool_calls": calls} if calls else {}),
            **({"thinking": thinking} if thinking else {}), **({"cache": cache} if cache else {})}


def _image(source, field):
    """The Image of an image block's source: base64 data of a type both
    providers take, or an https: URL."""
    if source.type == "url":
        return image_at(f"{field}.url", image_of_url, source.url)
    if source.media_type not in MEDIA_TYPES:
        return image_at(f"{field}.media_type", image_of_base64, source.media_type, source.data)
    return image_at(f"{field}.data", image_of_base64, source.media_type, source.data)


def _misplaced(field):
    return ValidationFailed(details={field: "is not a block of this role's turn"})


def asks_for_stream(body):
    return body.stream


def error(code, message, status, details):
    error_type = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": error_type, "message": sentence(message, details)}}


def renderer(hold, body):
    return Events(f"msg_{hold.id}", hold.model_id)


def replay(stored_text, body):
    answer = Message.model_validate_json(stored_text)
    text = "".join(block.text for block in answer.content if block.type == "text")
    calls = [ToolCall(block.id, block.name, arguments_text(block.input))
             for block in answer.content if block.type == "tool_use"]
    thinking = [ThinkingBlock(redacted=block.data) if block.type == "redacted_thinking"
                else ThinkingBlock(block.thinking, block.signature)
                for block in answer.content if block.type in ("thinking", "redacted_thinking")]
    return replay_events(Events(answer.id, answer.model), answer, text, calls, thinking)


class Events:
    """A message as Anthropic streams it: message_start; each content block
    (thinking with its signature, text, or a tool's use with its input as
    pieces of JSON) opened, its deltas, closed; message_delta with the usage
    (and its cost); then message_stop. The usage is known at the end only, so
    message_start carries zeros and message_delta the totals, as the SDKs
    read them."""
    status = 200

    def __init__(self, message_id, model):
        self.message_id, self.model = message_id, model
        self.blocks, self.open_kind = 0, None  # blocks opened so far; the open one's type
        self.thinking_index = None  # the open thinking block's place among the reply's thinking blocks

    def opening(self):
        message = {"id": self.message_id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                   "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}
        return sse({"type": "message_start", "message": message}, "message_start")

    def delta(self, text):
        if not text:
            return ""
        opened = self._open({"type": "text", "text": ""}) if self.open_kind != "text" else ""
        return opened + sse({"type": "content_block_delta", "index": self.blocks - 1,
                             "delta": {"type": "text_delta", "text": text}}, "content_block_delta")

    def thinking_delta(self, delta):
        if delta.redacted is not None:
            return self._open({"type": "redacted_thinking", "data": delta.redacted})
        opened = ""
        if self.open_kind != "thinking" or self.thinking_index != delta.index:
            opened = self._open({"type": "thinking", "thinking": "", "signature": ""})
            self.thinking_index = delta.index
        pieces = [("thinking_delta", "thinking", delta.text), ("signature_delta", "signature", delta.signature)]
        return opened + "".join(sse({"type": "content_block_delta", "index": self.blocks - 1,
                                     "delta": {"type": kind, field: piece}}, "content_block_delta")
                                for kind, field, piece in pieces if piece)

    def tool_delta(self, delta):
        opened = ""
        if delta.id is not None:
            opened = self._open({"type": "tool_use", "id": delta.id, "name": delta.name, "input": {}})
        if not delta.arguments:
            return opened
        return opened + sse({"type": "content_block_delta", "index": self.blocks - 1,
                             "delta": {"type": "input_json_delta", "partial_json": delta.arguments}},
                            "content_block_delta")

    def closing(self, answer):
        # A reply with no content at all still has its (empty) text block, as the API sends it.
        text = self._close() if self.blocks else self._open({"type": "text", "text": ""}) + self._close()
        usage = answer.usage.model_dump(mode="json")
        return (text + sse({"type": "message_delta",
                            "delta": {"stop_reason": answer.stop_reason, "stop_sequence": answer.stop_sequence},
                            "usage": usage}, "message_delta")
                + sse({"type": "message_stop"}, "message_stop"))

    def _open(self, block):
        text = self._close() + sse({"type": "content_block_start", "index": self.blocks, "content_block": block},
                                   "content_block_start")
        self.blocks, self.open_kind = self.blocks + 1, block["type"]
        return text

    def _close(self):
        if self.open_kind is None:
            return ""
        self.open_kind = None
        return sse({"type": "content_block_stop", "index": self.blocks - 1}, "content_block_stop")

    def failure(self, failed):
        return sse(error(failed.code, failed.message, failed.status, failed.details), "error")

    def answer(self, hold, reply, exchange):
        ending = ending_of(hold, reply)
        content = [RedactedThinkingAnswer(data=block.redacted) if block.redacted is not None
                   else ThinkingAnswer(thinking=block.text, signature=block.signature) for block in reply.thinking]
        content += [AnswerBlock(text=reply.content)] if reply.content or not reply.tool_calls else []
        content += [ToolUseAnswer(id=call.id, name=call.name, input=_input(call)) for call in reply.tool_calls]
        return Message(id=self.message_id, model=self.model, content=content,
                       stop_reason=STOP_REASONS[ending.reason], stop_sequence=ending.stop_sequence,
                       usage=usage_of(exchange.charge))


def usage_of(charge):
    """A Charge (app/pricing.py) as this format's usage: input_tokens without
    the cached ones, which are counted apart."""
    written = charge.cache_write_tokens + charge.cache_write_1h_tokens
    return AnthropicUsage(
        input_tokens=charge.uncached_tokens, cache_creation_input_tokens=written,
        cache_read_input_tokens=charge.cache_read_tokens,
        cache_creation=CacheCreation(ephemeral_5m_input_tokens=charge.cache_write_tokens,
                                     ephemeral_1h_input_tokens=charge.cache_write_1h_tokens),
        output_tokens=charge.completion_tokens, cost=format_money(charge.cost))


def _input(call):
    """A tool call's arguments as the object a tool_use block's input is. A
    model that wrote no JSON object there gets an empty input, said in the log."""
    try:
        parsed = json.loads(call.arguments or "{}")
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        log.warning("tool call %s: its arguments are no JSON object; answered with an empty input", call.id)
        return {}
    return parsed
