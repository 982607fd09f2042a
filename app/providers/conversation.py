"""A call's conversation in no provider's words, and what its answer must be.

A conversation is a list of messages, each a dict with a `role`:
- "system": `content`, a text, or a list of text parts when some carry
  cache marks;
- "user": `content`, a text, or, when it holds images or cache marks, a list
  of parts in order: `{"type": "text", "text": …}` and
  `{"type": "image", "image": Image}`;
- "assistant": `content`, a text (maybe empty), `tool_calls`, a list of
  ToolCall (app/providers/tools.py) when it called tools, and `thinking`, the
  ThinkingBlocks (app/providers/reasoning.py) the reply showed before them;
- "tool": the result of one call: `tool_call_id`, `content` (a text) and
  `is_error`.
A message of text alone keeps its content a plain string, whatever format it
came in. Each provider's module turns this into its wire format and back.

A cache mark says where a prompt cache's prefix ends (Anthropic's
cache_control, as the client sent it: `{"type": "ephemeral"}`, with a `ttl`
of "5m" or "1h"): the `cache` of a part, of a Tool, or of an assistant's or a
tool's message (on its last block). A provider that caches by itself drops them.

`ResponseFormat` says that the answer must be JSON: any object, or one
following a schema. No format's answer is text-only when none is asked."""
from dataclasses import dataclass

from app.providers.reasoning import Reasoning
from app.providers.tools import ToolUse


# The schema of an answer asked as "any JSON object".
ANY_OBJECT = {"type": "object"}


@dataclass(frozen=True)
class ResponseFormat:
    """The answer as JSON: `kind` "json_object" (any object) or "json_schema"
    (one following `schema`, named `name`; `schema`, `strict` and
    `description` as the client gave them, None when not: no schema is any
    object, ANY_OBJECT)."""
    kind: str
    name: str
    schema: dict | None
    strict: bool | None = None
    description: str | None = None


def image_part(image):
    return {"type": "image", "image": image}


def text_part(text):
    return {"type": "text", "text": text}


def cached(part, cache):
    """The part with the cache mark `cache` (None: none)."""
    return part if cache is None else {**part, "cache": cache}


def user_content(parts):
    """A user's (or system's) content from its parts: a plain text when it
    holds no image and no cache mark (the texts joined), else the parts,
    neighbouring texts joined where neither carries a mark (a mark ends its block)."""
    if all(part["type"] == "text" and not part.get("cache") for part in parts):
        return "".join(part["text"] for part in parts)
    content = []
    for part in parts:
        last = content[-1] if content else None
        if part["type"] == "text" and last and last["type"] == "text" and not (last.get("cache") or part.get("cache")):
            content[-1] = text_part(last["text"] + part["text"])
        elif part["type"] != "text" or part["text"]:
            content.append(part)
    return content


def cache_marks(messages, tool_use=None):
    """Every cache mark of the conversation and its tools, in order."""
    marks = [tool.cache for tool in (tool_use.tools if tool_use else ()) if tool.cache]
    for message in messages:
        marks += [part["cache"] for part in message["content"] if part.get("cache")] \
            if not isinstance(message["content"], str) else []
        marks += [message["cache"]] if message.get("cache") else []
    return marks


def texts(content):
    """The texts of a message's content (a text, or a list of parts)."""
    if isinstance(content, str):
        return [content]
    return [part["text"] for part in content if part["type"] == "text"]


def images(messages):
    """Every Image of the conversation, in order."""
    return [part["image"] for message in messages if not isinstance(message["content"], str)
            for part in message["content"] if part["type"] == "image"]


@dataclass(frozen=True)
class ModelCall:
    """What a request of an inference format asks a model for, in no format's
    words: the conversation, its tools (app/providers/tools.py), the JSON its
    answer must be, and its reasoning (app/providers/reasoning.py), if any.
    `cache_field` and `reasoning_field` name, in the request's own words, its
    first cache mark and what asked for reasoning (None: nothing), for the
    error that refuses them on a model without them."""
    model: str
    messages: list
    max_tokens: int | None
    temperature: object
    stop: list | None
    stream: bool
    tool_use: ToolUse | None = None
    response_format: ResponseFormat | None = None
    reasoning: Reasoning | None = None
    cache_field: str | None = None
    reasoning_field: str | None = None
    fallbacks: tuple = ()  # the models to try, in order, when the model's routes all fail (`models`)
    sort: str | None = None  # how routes are ordered (`provider.sort`; None: as declared)
