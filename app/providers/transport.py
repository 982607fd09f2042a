"""The HTTP side of every remote provider, shared by all wire formats so that
each format only says what to send and how to read the answer.

One httpx client per process reuses connections to each provider. A remote
call ends by its deadline (the caller's, PROVIDER_TIMEOUT after it began), all
of it: connecting, sending and every read. httpx's own timeouts bound each network
operation, not the call, so a provider sending one byte at a time could keep a
call open for ever; here the exchange runs on a worker thread, the caller waits
for it no longer than the deadline, and the worker reads the reply in chunks
and gives up at the deadline too, so a dripping provider holds neither the
request nor a thread past it. A streamed reply is read alike, by a thread of
its own (reply_body.py)."""
import json
import select
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpcore._backends.sync
import httpx
from gevent import monkey

from app.providers.completion import MAX_ERROR_BODY, ProviderError, ProviderTimeout, error_status
from app.providers.network import MAX_REPLY_BYTES, network_errors, time_left
from app.providers.reply_body import ReplyBody

MAX_IN_FLIGHT_CONNECTIONS = 512
# Plain calls (one per worker) and streamed replies together, about 1,000 of those.
MAX_CONNECTIONS = 2048


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
                    _check_idle_connections_without_the_hub()
                    self._client = httpx.Client(
                        limits=httpx.Limits(max_connections=MAX_CONNECTIONS,
                                            max_keepalive_connections=64))
        return self._client

    def workers(self):
        if self._workers is None:
            with self._lock:
                if self._workers is None:
                    self._workers = ThreadPoolExecutor(MAX_IN_FLIGHT_CONNECTIONS, thread_name_prefix="provider-call")
        return self._workers

    def endpoint(self, provider):
        """The transport as one provider's calls use it."""
        return Endpoint(self, provider)

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
            status, data, headers = exchange.result(timeout=max(deadline - time.monotonic(), 0))
        except TimeoutError:
            exchange.cancel()  # if it never started; else it stops at its next read
            raise ProviderTimeout(provider) from None
        if status >= 400:
            raise error_status(provider, status, headers, data)
        try:
            reply = json.loads(data)
        except ValueError:
            raise ProviderError(provider, status, "malformed response") from None
        if not isinstance(reply, dict):
            raise ProviderError(provider, status, "malformed response")
        return reply

    def open_stream(self, provider, path, body, headers, first_byte_deadline, deadline):
        """The reply's body as it arrives (a ReplyBody), its first byte by
        `first_byte_deadline` and all of it by `deadline`."""
        return ReplyBody(self.client(), provider, self.base_urls[provider] + path, body, headers,
                           first_byte_deadline, deadline)

    def _exchange(self, provider, url, body, headers, deadline):
        """On a worker thread: (status, body bytes, headers; for an error
        status, at most MAX_ERROR_BODY bytes of its body). Each network
        operation may wait only the time left, and the body is read in chunks
        with the deadline checked between them."""
        with network_errors(provider), self.client().stream("POST", url, json=body, headers=headers,
                                                            timeout=time_left(provider, deadline)) as response:
            limit = MAX_ERROR_BODY if response.status_code >= 400 else MAX_REPLY_BYTES
            return response.status_code, _read_before(provider, response, deadline, limit), response.headers


class Endpoint:
    """One provider's side of a Transport: its name, for errors, and its calls."""

    def __init__(self, transport, name):
        self.transport, self.name = transport, name

    def post_json(self, path, body, headers, deadline):
        return self.transport.post_json(self.name, path, body, headers, deadline)

    def open_stream(self, path, body, headers, first_byte_deadline, deadline):
        return self.transport.open_stream(self.name, path, body, headers, first_byte_deadline, deadline)


def _read_before(provider, response, deadline, limit):
    """The body, read by `deadline`: a reply over `limit` bytes is refused,
    an error's body cut there (only its message is wanted)."""
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        if time.monotonic() >= deadline:
            raise ProviderTimeout(provider)
        size += len(chunk)
        if size > limit:
            if response.status_code >= 400:
                break
            raise ProviderError(provider, response.status_code, "reply too large")
        chunks.append(chunk)
    return b"".join(chunks)[:limit]


def _check_idle_connections_without_the_hub():
    """Before every request httpcore asks each idle connection of the pool
    whether the provider has closed it: a poll of its socket with timeout 0,
    which cannot block. Under gevent's patched `select` that poll goes through
    the hub, and costs more than the request itself once a few dozen calls
    keep as many connections (BENCHMARKS.md, "Capacity"); the poll gevent
    left unpatched answers the same question without a switch."""
    if not monkey.is_module_patched("select") or not hasattr(httpcore._backends.sync, "is_socket_readable"):
        return
    poll = monkey.get_original("select", "poll")

    def is_socket_readable(sock):
        descriptor = None if sock is None else sock.fileno()
        if descriptor is None or descriptor < 0:
            return True  # as httpcore's: gone, so the next read would return its end
        check = poll()
        check.register(descriptor, select.POLLIN)
        return bool(check.poll(0))

    httpcore._backends.sync.is_socket_readable = is_socket_readable
