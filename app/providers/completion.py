"""What a provider call gives back, and how it fails, whatever the wire format:
the gateway bills from a Completion and maps each error to its answer."""
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completion:
    content: str
    prompt_tokens: int | None
    completion_tokens: int | None

    @property
    def has_usage(self):
        return self.prompt_tokens is not None and self.completion_tokens is not None


class ProviderError(Exception):
    """The provider answered with an error status or an unusable body."""

    def __init__(self, provider, status, reason):
        super().__init__(f"{provider} answered {status}: {reason}")
        self.provider, self.status, self.reason = provider, status, reason


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


def clean_text(provider, text):
    """The reply as PostgreSQL can store it: without NUL characters and with
    unpaired surrogates (which UTF-8 cannot encode) replaced."""
    cleaned = text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")
    if cleaned != text:
        log.warning("%s reply carried NUL characters or unpaired surrogates; removed", provider)
    return cleaned


def token_count(value):
    """A token count from a provider's usage, or None when absent or unusable."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
