"""A call's conversation in no provider's words, and what its answer must be.

A conversation is a list of messages, each a dict with a `role`:
- "system": `content`, a text;
- "user": `content`, a text, or, when it holds images, a list of parts in
  order: `{"type": "text", "text": …}` and `{"type": "image", "image": Image}`;
- "assistant": `content`, a text (maybe empty), and `tool_calls`, a list of
  ToolCall (app/providers/tools.py) when it called tools;
- "tool": the result of one call: `tool_call_id`, `content` (a text) and
  `is_error`.
A message of text alone keeps its content a plain string, whatever format it
came in. Each provider's module turns this into its wire format and back.

`ResponseFormat` says that the answer must be JSON: any object, or one
following a schema. No format's answer is text-only when none is asked."""
from dataclasses import dataclass


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


def user_content(parts):
    """A user's content from its parts: a plain text when it holds no image
    (the texts joined), else the parts, neighbouring texts joined."""
    if all(part["type"] == "text" for part in parts):
        return "".join(part["text"] for part in parts)
    content = []
    for part in parts:
        if part["type"] == "text" and content and content[-1]["type"] == "text":
            content[-1] = text_part(content[-1]["text"] + part["text"])
        elif part["type"] != "text" or part["text"]:
            content.append(part)
    return content


def texts(content):
    """The texts of a message's content (a text, or a list of parts)."""
    if isinstance(content, str):
        return [content]
    return [part["text"] for part in content if part["type"] == "text"]


def images(messages):
    """Every Image of the conversation, in order."""
    return [part["image"] for message in messages if not isinstance(message["content"], str)
            for part in message["content"] if part["type"] == "image"]
