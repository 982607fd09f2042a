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

WIRE_FORMATS = {wire.name: wire for wire in (LOCAL, CHAT_COMPLETIONS, MESSAGES)}


def message_tokens_upper_bound(content):
    return len(content.encode("utf-8")) + MESSAGE_OVERHEAD_TOKENS


def prompt_tokens_upper_bound(messages, tool_use=None):
    """The most tokens the prompt can be: the UTF-8 bytes of everything sent
    (texts, tool calls with their ids and arguments, tools' results, tool
    definitions) and the overheads around them."""
    bound = REQUEST_OVERHEAD_TOKENS + sum(message_tokens_upper_bound(_sent_text(m)) for m in messages)
    if tool_use is not None:
        bound += TOOL_USE_OVERHEAD_TOKENS + sum(TOOL_OVERHEAD_TOKENS + _utf8_bytes(tool.name, tool.description or "",
                                                                                    json.dumps(tool.parameters))
                                                for tool in tool_use.tools)
    return bound


def _sent_text(message):
    calls = message.get("tool_calls") or ()
    return "".join([message["content"], message.get("tool_call_id") or ""]
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
                 tool_use=None):
        """The provider's Completion; `deadline` (a time.monotonic() value) ends a
        remote call: ProviderTimeout once it passes. `stop`: sequences that end
        the reply (not included in it). `messages` and `tool_use`: the
        conversation and its tools, as app/providers/tools.py says."""
        return WIRE_FORMATS[provider].complete(self.transport, model_name, messages, max_tokens, temperature,
                                               api_key, deadline, stop, tool_use)

    def stream(self, provider, model_name, messages, max_tokens, temperature, api_key, first_byte_deadline,
               deadline, stop=None, tool_use=None):
        """The provider's reply as a Stream of text and tool-call deltas. Until the first
        delta (which must come by `first_byte_deadline`) it fails as `complete`
        does; after it, with ProviderStreamCut. Nothing of it outlasts
        `deadline` (both time.monotonic() values)."""
        return WIRE_FORMATS[provider].stream(self.transport, model_name, messages, max_tokens, temperature, api_key,
                                             first_byte_deadline, deadline, stop, tool_use)
