"""What a provider call gives back, and how it fails, whatever the wire format:
billing charges from a Completion and maps each error to its answer."""
import json
import logging
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)
# A character outside the BMP that came as two pieces' halves of a JSON escape pair.
SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")


@dataclass(frozen=True)
class Ending:
    """Why a reply ended, in words common to the providers: "stop" (the model
    was done, or a stop sequence the provider does not name), "length"
    (max_tokens), "stop_sequence" (then `stop_sequence` says which), or
    "tool_calls" (the model called tools and waits for their results)."""
    reason: str
    stop_sequence: str | None = None


# The token counts of a reply's usage, in no format's words (see Completion).
USAGE_COUNTS = ("prompt_tokens", "completion_tokens", "cache_read_tokens", "cache_write_tokens",
                "cache_write_1h_tokens", "reasoning_tokens")


@dataclass(frozen=True)
class Completion:
    """A whole reply. `prompt_tokens` counts every input token, those read
    from the provider's prompt cache (`cache_read_tokens`) and written to it
    (`cache_write_tokens` for 5 minutes, `cache_write_1h_tokens` for an hour)
    included, as OpenAI counts them. `reasoning_tokens` are part of
    `completion_tokens` (None: not reported). `thinking`: the reply's
    ThinkingBlocks (app/providers/reasoning.py), before its text."""
    content: str
    prompt_tokens: int | None
    completion_tokens: int | None
    ending: Ending | None = None  # None: the provider did not say
    tool_calls: tuple = ()        # ToolCall (app/providers/tools.py), in the order the model made them
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int | None = None
    thinking: tuple = ()

    @property
    def has_usage(self):
        return self.prompt_tokens is not None and self.completion_tokens is not None


def completion_of(content, counts, ending=None, tool_calls=(), thinking=()):
    """A Completion from a usage's counts ({name in USAGE_COUNTS: count or None});
    a cache count not reported is none."""
    caches = {name: counts.get(name) or 0 for name in USAGE_COUNTS[2:5]}
    return Completion(content, counts.get("prompt_tokens"), counts.get("completion_tokens"), ending, tuple(tool_calls),
                      **caches, reasoning_tokens=counts.get("reasoning_tokens"), thinking=tuple(thinking))


class ProviderError(Exception):
    """The provider answered with an error status or an unusable body. For an
    error status: `retry_after`, the seconds its Retry-After header asked
    (None: none), and `message`, what its error body said (None: nothing
    readable), cut to MAX_PROVIDER_MESSAGE characters."""

    def __init__(self, provider, status, reason, retry_after=None, message=None):
        super().__init__(f"{provider} answered {status}: {reason}")
        self.provider, self.status, self.reason = provider, status, reason
        self.retry_after, self.message = retry_after, message


# The most of a provider's error message passed on; its body is read up to MAX_ERROR_BODY bytes.
MAX_PROVIDER_MESSAGE = 500
MAX_ERROR_BODY = 64 * 1024
# The longest Retry-After honoured, in seconds: a call's deadline bounds it anyway.
MAX_RETRY_AFTER = 3600


def error_status(provider, status, headers, body):
    """The ProviderError of an error answer: its status, Retry-After (delta
    seconds; an HTTP date is not honoured) and the message of its JSON error
    body in either format ({"error": {"message"}} or {"error": "…"})."""
    retry_after = None
    try:
        retry_after = min(max(float(headers.get("retry-after", "")), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        pass
    message = None
    try:
        error = json.loads(body).get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        pass
    if isinstance(message, str) and message.strip():
        message = _storable(" ".join(message.split()))[:MAX_PROVIDER_MESSAGE]
    else:
        message = None
    return ProviderError(provider, status, "error status", retry_after, message)


class ProviderUnreachable(ProviderError):
    """No answer at all: the connection could not be made, or broke before the
    reply. `cause` says why in words that carry no URL or secret; `error` is the
    client's exception type."""

    def __init__(self, provider, cause, error):
        super().__init__(provider, None, cause)
        self.cause, self.error = cause, error


class ProviderTimeout(Exception):
    def __init__(self, provider):
        super().__init__(f"{provider} did not answer in time")
        self.provider = provider


class ProviderStreamCut(ProviderError):
    """A streamed reply that ended early after some of its text was delivered:
    the connection closed before the end, the provider sent an error event or
    a malformed one, or the stream's deadline passed."""

    def __init__(self, provider, reason):
        super().__init__(provider, 200, reason)
        self.args = (f"{provider} stream cut short: {reason}",)


def clean_text(provider, text):
    """The reply as PostgreSQL can store it: without NUL characters and with
    unpaired surrogates (which UTF-8 cannot encode) replaced."""
    cleaned = _storable(text)
    if cleaned != text:
        _warn_removed(provider)
    return cleaned


class TextCleaner:
    """clean_text for a reply arriving in pieces, cleaning the pieces joined as
    it would the whole reply: a high surrogate ending one piece waits for the
    next, which may hold its pair, and a pair makes its one character, as JSON
    would have made it. Warns once per reply."""

    def __init__(self, provider):
        self.provider, self._held, self._warned = provider, "", False

    def clean(self, piece):
        text = self._held + piece
        split = len(text) - 1 if text and "\ud800" <= text[-1] <= "\udbff" else len(text)
        text, self._held = text[:split], text[split:]
        return self._cleaned(SURROGATE_PAIR.sub(_joined_pair, text))

    def finish(self):
        text, self._held = self._held, ""
        return self._cleaned(text)

    def _cleaned(self, text):
        cleaned = _storable(text)
        if cleaned != text and not self._warned:
            self._warned = True
            _warn_removed(self.provider)
        return cleaned


def _joined_pair(pair):
    return pair.group().encode("utf-16-le", "surrogatepass").decode("utf-16-le")


def _storable(text):
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


def _warn_removed(provider):
    log.warning("%s reply carried NUL characters or unpaired surrogates; removed", provider)


def usage_part(usage, name):
    """A usage object's nested object `name` ({} when absent or not an object)."""
    part = usage.get(name) if isinstance(usage, dict) else None
    return part if isinstance(part, dict) else {}


def token_count(value):
    """A token count from a provider's usage, or None when absent or unusable."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
