"""Anthropic's Messages format: its request as a ModelCall, its answer (a
message), its stream (message_start, one text block, message_delta with the
usage, message_stop) and its errors."""
import json
import logging

from app.api.formats import (ModelCall, ToolCallsSeen, ending_of, image_at, replay_events, sentence, sse, text_of,
                             tool_use_of)
from app.errors import ValidationFailed
from app.money import format_money
from app.providers.conversation import image_part, text_part, user_content
from app.providers.images import MEDIA_TYPES, image_of_base64, image_of_url
from app.providers.tools import Tool, ToolCall, arguments_text
from app.schemas.anthropic_format import AnswerBlock, AnthropicUsage, Message, MessagesRequest, ToolUseAnswer

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
    system = [] if body.system is None else [{"role": "system", "content": text_of(body.system)}]
    seen = ToolCallsSeen()
    messages = system + [converted for index, message in enumerate(body.messages)
                         for converted in _messages(message, f"messages.{index}", seen)]
    tools = [Tool(tool.name, tool.description, tool.input_schema) for tool in body.tools or ()]
    choice = body.tool_choice
    tool_use = tool_use_of(
        tools, None if choice is None else choice.name if choice.type == "tool" else TOOL_CHOICES[choice.type],
        None if choice is None or choice.disable_parallel_tool_use is None else not choice.disable_parallel_tool_use,
        {"tools": "tools.{}.name", "choice": "tool_choice.name" if choice and choice.type == "tool" else "tool_choice"})
    return ModelCall(body.model, messages, body.max_tokens, body.temperature, body.stop_sequences,
                     body.stream, tool_use)


def _messages(message, field, seen):
    """A message of the request as messages in no format's words: a user's
    turn may carry tools' results, each its own message, and text and images
    around them; an assistant's turn, text and tool calls."""
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    if message.role == "assistant":
        calls = []
        for index, block in enumerate(message.content):
            if block.type == "tool_use":
                seen.add(block.id)
                calls.append(ToolCall(block.id, block.name, arguments_text(block.input)))
            elif block.type in ("tool_result", "image"):
                raise _misplaced(f"{field}.content.{index}")
        text = "".join(block.text for block in message.content if block.type == "text")
        return [{"role": "assistant", "content": text, **({"tool_calls": calls} if calls else {})}]
    converted, parts = [], []
    for index, block in enumerate(message.content):
        if block.type == "tool_use":
            raise _misplaced(f"{field}.content.{index}")
        if block.type == "text":
            parts.append(text_part(block.text))
            continue
        if block.type == "image":
            parts.append(image_part(_image(block.source, f"{field}.content.{index}.source")))
            continue
        seen.check(block.tool_use_id, f"{field}.content.{index}.tool_use_id")
        for place, part in enumerate(block.content if isinstance(block.content, list) else ()):
            if part.type == "image":
                raise ValidationFailed(details={f"{field}.content.{index}.content.{place}":
                                                "an image in a tool's result is not supported; "
                                                "send it in the user's turn beside the result"})
        converted.append({"role": "tool", "tool_call_id": block.tool_use_id,
                          "content": text_of(block.content or ""), "is_error": block.is_error})
    return converted + ([{"role": "user", "content": user_content(parts)}] if parts or not converted else [])


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
    return replay_events(Events(answer.id, answer.model), answer, text, calls)


class Events:
    """A message as Anthropic streams it: message_start; each content block
    (text, or a tool's use with its input as pieces of JSON) opened, its
    deltas, closed; message_delta with the usage (and its cost); then
    message_stop. The usage is known at the end only, so message_start
    carries zeros and message_delta the totals, as the SDKs read them."""
    status = 200

    def __init__(self, message_id, model):
        self.message_id, self.model = message_id, model
        self.blocks, self.open_kind = 0, None  # blocks opened so far; the open one's type

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
        content = [AnswerBlock(text=reply.content)] if reply.content or not reply.tool_calls else []
        content += [ToolUseAnswer(id=call.id, name=call.name, input=_input(call)) for call in reply.tool_calls]
        return Message(
            id=self.message_id, model=self.model, content=content,
            stop_reason=STOP_REASONS[ending.reason], stop_sequence=ending.stop_sequence,
            usage=AnthropicUsage(input_tokens=exchange.prompt_tokens, output_tokens=exchange.completion_tokens,
                                 cost=format_money(exchange.cost)))


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
