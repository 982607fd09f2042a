"""How many tokens a prompt may be, before any provider counts it: an upper
bound, which the hold is made from, and an estimate, for a count where no
provider gives one."""
import json

from app.providers.conversation import images, texts

# The upper bound is made offline: a byte-level tokenizer
# never makes more tokens than the text has UTF-8 bytes, plus what each message
# and the request add around the text.
MESSAGE_OVERHEAD_TOKENS = 8
REQUEST_OVERHEAD_TOKENS = 16
# Offering tools makes the provider add instructions of its own to the prompt,
# billed as input: Anthropic documents 313–346 tokens for them; OpenAI does not
# say. This bounds them, and each tool's wrapping around its own schema.
TOOL_USE_OVERHEAD_TOKENS = 1024
TOOL_OVERHEAD_TOKENS = 32
# An answer asked as JSON (a ResponseFormat) sends its schema too: for
# Anthropic's models as a tool the reply must call, for OpenAI's as a schema
# its instructions carry. It is bounded as one more tool.


def message_tokens_upper_bound(content):
    return len(content.encode("utf-8")) + MESSAGE_OVERHEAD_TOKENS


def prompt_tokens_upper_bound(messages, tool_use=None, response_format=None, image_tokens=None):
    """The most tokens the prompt can be: its text's (text_tokens_upper_bound)
    and each image at `image_tokens(image)` (an int; a conversation with
    images needs it: see app/providers/images.py)."""
    return (text_tokens_upper_bound(messages, tool_use, response_format)
            + sum(image_tokens(image) for image in images(messages)))


def text_tokens_upper_bound(messages, tool_use=None, response_format=None):
    """The most tokens the prompt's text can be, whichever provider reads it:
    the UTF-8 bytes of everything sent as text (texts, tool calls with their
    ids and arguments, tools' results, earlier thinking sent back, tool
    definitions, the answer's schema) and the overheads around them."""
    bound = REQUEST_OVERHEAD_TOKENS + sum(message_tokens_upper_bound(_sent_text(m)) for m in messages)
    described = _described(tool_use, response_format)
    if described:
        bound += TOOL_USE_OVERHEAD_TOKENS + sum(TOOL_OVERHEAD_TOKENS + _utf8_bytes(name, description or "",
                                                                                   json.dumps(schema))
                                                for name, description, schema in described)
    return bound


def _described(tool_use, response_format=None):
    """(name, description, schema) of each tool the call offers, the answer's schema among them."""
    described = [(tool.name, tool.description, tool.parameters) for tool in tool_use.tools] if tool_use else []
    if response_format is not None:
        described.append((response_format.name, response_format.description, response_format.schema))
    return described


# A prompt's tokens where no provider counts them: OpenAI's rule of thumb of
# four bytes of English a token, and its cookbook's three tokens around each
# message and three more priming the reply. An estimate, not a bound: the hold
# never uses it.
ESTIMATE_BYTES_PER_TOKEN = 4
ESTIMATE_MESSAGE_TOKENS = 3


def estimated_prompt_tokens(messages, tool_use=None, image_tokens=None):
    """The estimate, each image at `image_tokens(image)` (needed when there are images)."""
    sent = sum(_utf8_bytes(_sent_text(message)) for message in messages)
    sent += sum(_utf8_bytes(name, description or "", json.dumps(schema))
                for name, description, schema in _described(tool_use))
    return (-(-sent // ESTIMATE_BYTES_PER_TOKEN) + ESTIMATE_MESSAGE_TOKENS * (len(messages) + 1)
            + sum(image_tokens(image) for image in images(messages)))


def _sent_text(message):
    calls = message.get("tool_calls") or ()
    thinking = message.get("thinking") or ()
    return "".join([*texts(message["content"]), message.get("tool_call_id") or ""]
                   + [call.id + call.name + call.arguments for call in calls]
                   + [block.text + block.signature + (block.redacted or "") for block in thinking])


def _utf8_bytes(*parts):
    return sum(len(part.encode("utf-8")) for part in parts)
