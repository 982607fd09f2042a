"""The HTTP side of every remote provider, shared by all wire formats so that
each format only says what to send and how to read the answer.

One httpx client per process reuses connections to each provider. A remote
call ends by its deadline (the caller's, PROVIDER_TIMEOUT after it began), all
of it: connecting, sending and every read. httpx's own timeouts bound each network
operation, not the call, so a provider sending one byte at a time could keep a
call open for ever; here the exchange runs on a worker thread, the caller waits
for it no longer than the deadline, and the worker reads the reply in chunks
and gives up at the deadline too, so a dripping provider holds neither the
request nor a thread past it."""
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx

from app.providers.completion import ProviderError, ProviderTimeout, ProviderUnreachable

MAX_IN_FLIGHT_CONNECTIONS = 512
# Far above any reply a max_tokens allows; a longer one is refused, not buffered.
MAX_REPLY_BYTES = 16 * 1024 * 1024


class Transport:
    """One HTTP client and one pool of worker threads, made on first use in
    each process, for the providers whose base URLs it is given."""

    def __init__(self, base_urls):
        self.base_urls = base_urls
        self._client = None
        self._workers = None
        self._lock = threading.Lock()

    def client(self):
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = httpx.Client(
                        limits=httpx.Limits(max_connections=MAX_IN_FLIGHT_CONNECTIONS,
                                            max_keepalive_connections=64))
        return self._client

    def workers(self):
        if self._workers is None:
            with self._lock:
                if self._workers is None:
                    self._workers = ThreadPoolExecutor(MAX_IN_FLIGHT_CONNECTIONS, thread_name_prefix="provider-call")
        return self._workers

    def close(self):
        if self._workers is not None:
            self._workers.shutdown(wait=False, cancel_futures=True)
            self._workers = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def post_json(self, provider, path, body, headers, deadline):
        """The provider's JSON object, read whole before `deadline` (a
        time.monotonic() value): ProviderTimeout once it passes."""
        exchange = self.workers().submit(self._exchange, provider, self.base_urls[provider] + path, body, headers,
                                         deadline)
        try:
            status, data = exchange.result(timeout=max(deadline - time.monotonic(), 0))
        except TimeoutError:
            exchange.cancel()  # if it never started; else it stops at its next read
            raise ProviderTimeout(provider) from None
        if status >= 400:
            raise ProviderError(provider, status, "error status")
        try:
            reply = json.loads(data)
        except ValueError:
            raise ProviderError(provider, status, "malformed response") from None
        if not isinstance(reply, dict):
            raise ProviderError(provider, status, "malformed response")
        return reply

    def _exchange(self, provider, url, body, headers, deadline):
        """On a worker thread: (status, body bytes; empty for an error status).
        Each network operation may wait only the time left, and the body is read
        in chunks with the deadline checked between them."""
        with network_errors(provider), self.client().stream("POST", url, json=body, headers=headers,
                                                            timeout=_time_left(provider, deadline)) as response:
            if response.status_code >= 400:
                return response.status_code, b""
            return response.status_code, _read_before(provider, response, deadline)


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


def _time_left(provider, deadline):
    """An httpx timeout allowing each operation only what is left of the call."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise ProviderTimeout(provider)
    return httpx.Timeout(left, connect=min(left, 10.0))


def _read_before(provider, response, deadline):
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        if time.monotonic() >= deadline:
            raise ProviderTimeout(provider)
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            raise ProviderError(provider, response.status_code, "reply too large")
        chunks.append(chunk)
    return b"".join(chunks)


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
