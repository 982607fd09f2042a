"""How the HTTP client's failures and a call's deadline become the provider
errors callers handle, for every way of reading a reply."""
import time
from contextlib import contextmanager

import httpx

from app.providers.completion import ProviderError, ProviderTimeout, ProviderUnreachable

# Far above any reply a max_tokens allows; a longer one is refused, not buffered.
MAX_REPLY_BYTES = 16 * 1024 * 1024


@contextmanager
def network_errors(provider):
    """The client's exceptions as the provider errors callers handle; kept apart
    from the exchange so that any other way of reading a reply maps them alike."""
    try:
        yield
    except httpx.TimeoutException:
        raise ProviderTimeout(provider) from None
    except httpx.DecodingError:
        raise ProviderError(provider, 200, "malformed response") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise ProviderUnreachable(provider, _network_cause(exc), type(exc).__name__) from None


def time_left(provider, deadline):
    """An httpx timeout allowing each operation only what is left of the call."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise ProviderTimeout(provider)
    return httpx.Timeout(left, connect=min(left, 10.0))


def _network_cause(exc):
    """The operating system's description when there is one ("Connection refused")."""
    error = exc
    while error is not None:
        if isinstance(error, OSError) and error.strerror:
            return error.strerror
        error = error.__cause__ or error.__context__
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the connection was closed before a reply"
    return type(exc).__name__
