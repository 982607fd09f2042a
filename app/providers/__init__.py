"""AI providers behind one interface: `complete(provider, model_name, messages,
max_tokens, temperature, api_key, deadline)` → Completion, and `stream(...,
first_byte_deadline, deadline)` → Stream, the same reply delivered as it is written.

- `local`: built in, no key, no network, deterministic, with real token counts.
- `openai`: Chat Completions at OPENAI_BASE_URL (any compatible server works).
- `anthropic`: the Messages API at ANTHROPIC_BASE_URL.
- whatever else PROVIDERS_FILE configures, each speaking one of the two
  remote formats at its own base URL (app/providers/registry.py).

Each wire format is one module; they share the transport (`transport.py`),
which bounds every remote call by its deadline."""
from app.providers.anthropic import MESSAGES
from app.providers.completion import (Completion, Ending, ProviderError, ProviderStreamCut, ProviderTimeout,
                                      ProviderUnreachable)
from app.providers.local import LOCAL, local_tokens
from app.providers.openai import CHAT_COMPLETIONS
from app.providers.registry import KeyPool
from app.providers.prompt_size import (MESSAGE_OVERHEAD_TOKENS, REQUEST_OVERHEAD_TOKENS, estimated_prompt_tokens,
                                       message_tokens_upper_bound, prompt_tokens_upper_bound)
from app.providers.streamed_reply import Stream
from app.providers.transport import Transport

__all__ = ["Completion", "Ending", "MESSAGE_OVERHEAD_TOKENS", "ProviderError", "ProviderStreamCut", "ProviderTimeout",
           "ProviderUnreachable", "Providers", "REQUEST_OVERHEAD_TOKENS", "Stream", "local_tokens",
           "estimated_prompt_tokens", "message_tokens_upper_bound", "prompt_tokens_upper_bound"]

WIRE_FORMATS = {wire.name: wire for wire in (LOCAL, CHAT_COMPLETIONS, MESSAGES)}


class Providers:
    """Every configured provider by name (app/providers/registry.py), each
    speaking its wire format, sharing one transport made for the app."""

    def __init__(self, config):
        self.configured = config["PROVIDERS"]
        self.transport = Transport({name: provider.base_url for name, provider in self.configured.items()
                                    if provider.remote})
        self.house_keys = {name: KeyPool(provider.keys) for name, provider in self.configured.items()}

    def _wire(self, provider):
        return WIRE_FORMATS[self.configured[provider].format], self.transport.endpoint(provider)

    def close(self):
        self.transport.close()

    def complete(self, provider, model_name, messages, max_tokens, temperature, api_key, deadline, stop=None,
                 tool_use=None, response_format=None, reasoning=None):
        """The provider's Completion; `deadline` (a time.monotonic() value) ends a
        remote call: ProviderTimeout once it passes. `stop`: sequences that end
        the reply (not included in it). `messages`, `tool_use` and
        `response_format`: the conversation (app/providers/conversation.py), its
        tools (app/providers/tools.py) and the JSON the answer must be, if any.
        `reasoning`: a reasoning model's Reasoning (app/providers/reasoning.py),
        None for a model that does not reason."""
        wire, endpoint = self._wire(provider)
        return wire.complete(endpoint, model_name, messages, max_tokens, temperature, api_key, deadline, stop,
                             tool_use, response_format, reasoning)

    def count_tokens(self, provider, model_name, messages, api_key, deadline, tool_use=None):
        """The prompt's input tokens: the provider's own count where it has
        one, else the local models' exact count or `estimated_prompt_tokens`."""
        wire, endpoint = self._wire(provider)
        return wire.count_tokens(endpoint, model_name, messages, api_key, deadline, tool_use)

    def stream(self, provider, model_name, messages, max_tokens, temperature, api_key, first_byte_deadline,
               deadline, stop=None, tool_use=None, response_format=None, reasoning=None):
        """The provider's reply as a Stream of text, tool-call and thinking deltas. Until the first
        delta (which must come by `first_byte_deadline`) it fails as `complete`
        does; after it, with ProviderStreamCut. Nothing of it outlasts
        `deadline` (both time.monotonic() values)."""
        wire, endpoint = self._wire(provider)
        return wire.stream(endpoint, model_name, messages, max_tokens, temperature, api_key, first_byte_deadline,
                           deadline, stop, tool_use, response_format, reasoning)

    def image_tokens(self, provider, model_name):
        """image → ImageTokens: the most `provider` bills for one image sent
        to `model_name`, and the most it takes of the context window."""
        wire, _ = self._wire(provider)
        return lambda image: wire.image_tokens(model_name, image)

    def answers_json_with_tools(self, provider):
        """Whether `provider` can be asked for a JSON answer while it is offered tools."""
        return self._wire(provider)[0].answers_json_with_tools
