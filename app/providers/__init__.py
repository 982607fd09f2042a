"""AI providers behind one interface: `complete(provider, model_name, messages,
max_tokens, temperature, api_key, deadline)` → Completion, and `stream(...,
first_byte_deadline, deadline)` → Stream, the same reply delivered as it is written.

- `local`: built in, no key, no network, deterministic, with real token counts.
- `openai`: Chat Completions at OPENAI_BASE_URL (any compatible server works).
- `anthropic`: the Messages API at ANTHROPIC_BASE_URL.

Each wire format is one module; they share the transport (`transport.py`),
which bounds every remote call by its deadline."""
import json

from app.providers.anthropic import MESSAGES
from app.providers.completion import (Completion, Ending, ProviderError, ProviderStreamCut, ProviderTimeout,
                                      ProviderUnreachable)
from app.providers.conversation import images, texts
from app.providers.local import LOCAL, local_tokens
from app.providers.openai import CHAT_COMPLETIONS
from app.providers.streamed_reply import Stream
from app.providers.transport import Transport

__all__ = ["Completion", "Ending", "MESSAGE_OVERHEAD_TOKENS", "ProviderError", "ProviderStreamCut", "ProviderTimeout",
           "ProviderUnreachable", "Providers", "REQUEST_OVERHEAD_TOKENS", "Stream", "local_tokens",
           "message_tokens_upper_bound", "prompt_tokens_upper_bound"]

# The prompt estimate is an upper bound made offline: a byte-level tokenizer
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

WIRE_FORMATS = {wire.name: wire for wire in (LOCAL, CHAT_COMPLETIONS, MESSAGES)}


def message_tokens_upper_bound(content):
    return len(content.encode("utf-8")) + MESSAGE_OVERHEAD_TOKENS


def prompt_tokens_upper_bound(messages, tool_use=None, response_format=None, image_tokens=None):
    """The most tokens the prompt can be: the UTF-8 bytes of everything sent
    as text (texts, tool calls with their ids and arguments, tools' results,
    tool definitions, the answer's schema) and the overheads around them, and
    each image at `image_tokens(image)` (an int; a conversation with images
    needs it: see app/providers/images.py)."""
    bound = REQUEST_OVERHEAD_TOKENS + sum(message_tokens_upper_bound(_sent_text(m)) for m in messages)
    described = [(tool.name, tool.description, tool.parameters) for tool in tool_use.tools] if tool_use else []
    if response_format is not None:
        described.append((response_format.name, response_format.description, response_format.schema))
    if described:
        bound += TOOL_USE_OVERHEAD_TOKENS + sum(TOOL_OVERHEAD_TOKENS + _utf8_bytes(name, description or "",
                                                                                   json.dumps(schema))
                                                for name, description, schema in described)
    return bound + sum(image_tokens(image) for image in images(messages))


def _sent_text(message):
    calls = message.get("tool_calls") or ()
    return "".join([*texts(message["content"]), message.get("tool_call_id") or ""]
                   + [call.id + call.name + call.arguments for call in calls])


def _utf8_bytes(*texts):
    return sum(len(text.encode("utf-8")) for text in texts)


class Providers:
    """Every provider by name, sharing one transport made for the app."""

    def __init__(self, config):
        self.transport = Transport({name: config[wire.base_url_setting].rstrip("/")
                                    for name, wire in WIRE_FORMATS.items() if wire.base_url_setting})

    def close(self):
        self.transport.close()

    def complete(self, provider, model_name, messages, max_tokens, temperature, api_key, deadline, stop=None,
                 tool_use=None, response_format=None):
        """The provider's Completion; `deadline` (a time.monotonic() value) ends a
        remote call: ProviderTimeout once it passes. `stop`: sequences that end
        the reply (not included in it). `messages`, `tool_use` and
        `response_format`: the conversation (app/providers/conversation.py), its
        tools (app/providers/tools.py) and the JSON the answer must be, if any."""
        return WIRE_FORMATS[provider].complete(self.transport, model_name, messages, max_tokens, temperature,
                                               api_key, deadline, stop, tool_use, response_format)

    def stream(self, provider, model_name, messages, max_tokens, temperature, api_key, first_byte_deadline,
               deadline, stop=None, tool_use=None, response_format=None):
        """The provider's reply as a Stream of text and tool-call deltas. Until the first
        delta (which must come by `first_byte_deadline`) it fails as `complete`
        does; after it, with ProviderStreamCut. Nothing of it outlasts
        `deadline` (both time.monotonic() values)."""
        return WIRE_FORMATS[provider].stream(self.transport, model_name, messages, max_tokens, temperature, api_key,
                                             first_byte_deadline, deadline, stop, tool_use, response_format)

    @staticmethod
    def image_tokens(provider, model_name):
        """image → ImageTokens: the most `provider` bills for one image sent
        to `model_name`, and the most it takes of the context window."""
        wire = WIRE_FORMATS[provider]
        return lambda image: wire.image_tokens(model_name, image)

    @staticmethod
    def answers_json_with_tools(provider):
        """Whether `provider` can be asked for a JSON answer while it is offered tools."""
        return WIRE_FORMATS[provider].answers_json_with_tools
