"""The wire formats a call is answered in, one module each: `session` (the
chat API's own events), `openai` (Chat Completions), `anthropic` (Messages)
and `responses` (OpenAI's Responses API).
Each is a pure renderer behind one small protocol:

- `asks_for_stream(body)`: whether the request wants server-sent events;
- `renderer(hold, body)`: the call's Renderer, with `status` (a whole
  answer's), `answer(hold, reply, exchange)` (the response model of a settled
  call, or the APIError to report), and the stream's text: `opening()`,
  `delta(text)`, `tool_delta(delta)` (a ToolCallDelta) and
  `thinking_delta(delta)` (a ThinkingDelta; the inference formats only),
  `closing(answer)`, `failure(error)`;
- `replay(stored_text, body)`: a stored answer as the events of a stream.

The inference formats (`openai`, `anthropic`, `responses`) also turn their request into a
provider-neutral ModelCall (`call_of(body)`) and shape their errors (`error`)."""
import json

from flask import current_app

from app.errors import ValidationFailed
from app.providers import Ending
from app.providers.conversation import ANY_OBJECT, ResponseFormat, image_part
from app.providers.images import DETAILS, ImageRefused, image_of_url
from app.providers.reasoning import ThinkingDelta
from app.providers.tools import TOOL_CHOICES, Tool, ToolCall, ToolCallDelta, ToolUse

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(data, event=None):
    """One server-sent event."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def event_stream(events):
    """A text/event-stream response of `events` (an iterable of text or bytes)."""
    return current_app.response_class(events, mimetype="text/event-stream", headers=HEADERS)


def image_at(field, make, *args):
    """The Image `make(*args)` gives, or 400 naming `field` with why it cannot be sent."""
    try:
        return make(*args)
    except ImageRefused as refused:
        raise ValidationFailed(details={field: str(refused)}) from None


def image_url_part(url, detail, url_field, detail_field):
    """The image part of an image given by URL (https: or data:) with an
    OpenAI `detail`, each named by its field for a 400."""
    if detail not in (None, *DETAILS):
        raise ValidationFailed(details={detail_field: f"must be one of {', '.join(DETAILS)}"})
    return image_part(image_at(url_field, image_of_url, url, detail))


def response_format_of(kind, name=None, schema=None, strict=None, description=None):
    """The JSON an answer must be, from OpenAI's format `kind` and its schema's
    parts: None for "text" (the default), any object for "json_object"."""
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat("json_object", "json_object", None)
    return ResponseFormat("json_schema", name, schema, strict, description)


def tool_of(name, description, parameters):
    """A function tool offered; one that declares no parameters takes any object."""
    return Tool(name, description, ANY_OBJECT if parameters is None else parameters)


def text_of(content):
    """A message's text: a string, or the concatenation of its text parts."""
    return content if isinstance(content, str) else "".join(part.text for part in content)


def replay_events(renderer, answer, text, tool_calls=(), thinking=()):
    """A stored answer as a stream: its opening, each thinking block whole,
    all its text as one delta, each tool call whole, its end. Renderers
    number their blocks and events as they make them, so they are made in the
    stream's order."""
    events = renderer.opening()
    events += "".join(renderer.thinking_delta(ThinkingDelta(index, block.text, block.signature, block.redacted))
                      for index, block in enumerate(thinking))
    events += renderer.delta(text)
    events += "".join(renderer.tool_delta(ToolCallDelta(index, call.id, call.name, call.arguments))
                      for index, call in enumerate(tool_calls))
    return [events + renderer.closing(answer)]


class CacheMarks:
    """A request's cache marks (cache_control) as the conversation keeps them
    (app/providers/conversation.py), the first one's field kept for the 400
    that refuses them on a model without a prompt cache."""

    def __init__(self):
        self.first_field = None

    def of(self, cache_control, field):
        """The mark of `cache_control` (None: none), at `field` of the request."""
        if cache_control is None:
            return None
        self.first_field = self.first_field or f"{field}.cache_control"
        return cache_control.model_dump(exclude_none=True)


class ToolCallsSeen:
    """The ids of the tool calls a conversation has made so far, so that each
    tool's result answers one of them."""

    def __init__(self):
        self.ids = set()

    def add(self, call_id):
        self.ids.add(call_id)

    def made(self, call_id, name, arguments, field):
        """The ToolCall of a call the conversation made, whose `arguments`
        (named `field`) must be a JSON object as text."""
        arguments_object(arguments, field)
        self.add(call_id)
        return ToolCall(call_id, name, arguments)

    def check(self, call_id, field):
        if call_id not in self.ids:
            raise ValidationFailed(details={field: "answers no tool call made before it"})


def tool_use_of(tools, choice, parallel, fields):
    """The ToolUse of a request's tools (None without any), refusing two tools
    of one name and a choice of a tool not offered. `fields`: the request's
    field names, {"tools": …, "choice": …} ("tools" gets the tool's index)."""
    if not tools:
        if choice not in (None, "auto", "none"):
            raise ValidationFailed(details={fields["choice"]: "needs tools to choose from"})
        return None
    names = set()
    for index, tool in enumerate(tools):
        if tool.name in names:
            raise ValidationFailed(details={fields["tools"].format(index): "is the name of another tool"})
        names.add(tool.name)
    if choice not in (None, *TOOL_CHOICES) and choice not in names:
        raise ValidationFailed(details={fields["choice"]: "names no tool of tools"})
    return ToolUse(tuple(tools), choice or "auto", parallel)


def arguments_object(text, field):
    """A tool call's arguments, which must be a JSON object as text."""
    try:
        parsed = json.loads(text or "{}")
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ValidationFailed(details={field: "must be a JSON object, as text"})
    return parsed


def ending_of(hold, reply):
    """Why the answer ended (app.providers.Ending): as its provider said, else
    "tool_calls" when it called tools, "length" when it used all of max_tokens
    and "stop" when not."""
    if reply.ending is not None:
        return reply.ending
    if reply.tool_calls:
        return Ending("tool_calls")
    return Ending("length" if reply.has_usage and reply.completion_tokens >= hold.max_tokens else "stop")


def sentence(message, details):
    """The message with each named field's problem, for formats that carry no details."""
    fields = "; ".join(f"{name}: {problem}" for name, problem in details.items() if isinstance(problem, str))
    return f"{message} ({fields})" if fields else message
