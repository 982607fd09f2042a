"""A streamed reply's body as it arrives, bounded by its deadlines."""
import queue
import socket
import threading
import time
from contextlib import suppress

from app.providers.completion import MAX_ERROR_BODY, ProviderError, ProviderTimeout, error_status
from app.providers.network import MAX_REPLY_BYTES, network_errors, time_left

# Chunks read ahead of the caller; each is what one socket read gave (at most 64 KiB).
QUEUED_CHUNKS = 8


class ReplyBody:
    """A streamed reply's body in chunks, read by a thread of its own into a
    queue that the caller waits on only for the time left: until the first
    delta is out (the caller then calls `delivering()`), the first-byte
    deadline, then the stream's. Every network operation (connecting, each
    read) may also wait only what was left of the first-byte time, so a
    silence that long ends the stream too. `close()`, which the caller makes
    when it gives up, shuts the socket so the reading thread ends at once.
    The queue holds at most QUEUED_CHUNKS chunks: a caller that stops taking
    them stops the reading too, so the provider waits (TCP's own flow
    control) instead of the worker buffering its reply."""

    def __init__(self, client, provider, url, body, headers, first_byte_deadline, deadline):
        self.provider = provider
        self._wait_until, self._deadline = min(first_byte_deadline, deadline), deadline
        self._chunks = queue.Queue(QUEUED_CHUNKS)
        self._socket, self._closed, self._lock = None, False, threading.Lock()
        threading.Thread(target=self._read, args=(client, url, body, headers), daemon=True,
                         name="provider-stream").start()

    def __iter__(self):
        while True:
            try:
                item = self._chunks.get(timeout=max(self._wait_until - time.monotonic(), 0))
            except queue.Empty:
                raise ProviderTimeout(self.provider) from None
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    def delivering(self):
        self._wait_until = self._deadline

    def close(self):
        with self._lock:
            self._closed = True
            if self._socket is not None:
                with suppress(OSError):  # the provider may have closed it already
                    self._socket.shutdown(socket.SHUT_RDWR)
                self._socket = None
        # A reading thread waiting for room sees it closed once it gets some.
        with suppress(queue.Empty):
            while True:
                self._chunks.get_nowait()

    def _read(self, client, url, body, headers):
        """On the stream's thread: chunks into the queue, then None or the error."""
        try:
            with network_errors(self.provider), client.stream(
                    "POST", url, json=body, headers=headers,
                    timeout=time_left(self.provider, self._wait_until)) as response:
                if response.status_code >= 400:
                    raise error_status(self.provider, response.status_code, response.headers,
                                       _error_body(response, self._wait_until))
                self._read_body(response)
            self._put(None)
        except Exception as error:  # all of them, for the caller to raise
            self._put(error)

    def _put(self, item):
        """Queues `item` once there is room; False when the caller gave up
        (closed) or the deadline passed first, since nobody will take it then."""
        try:
            self._chunks.put(item, timeout=max(self._deadline - time.monotonic(), 0))
        except queue.Full:
            return False
        return not self._closed

    def _read_body(self, response):
        with self._lock:
            if self._closed:
                return
            self._socket = response.extensions["network_stream"].get_extra_info("socket")
        try:
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_REPLY_BYTES:
                    raise ProviderError(self.provider, response.status_code, "reply too large")
                if time.monotonic() >= self._deadline:
                    raise ProviderTimeout(self.provider)
                if not self._put(chunk):
                    return
        finally:
            with self._lock:
                self._socket = None  # back to the pool: never to be shut from here again


def _error_body(response, deadline):
    """Up to MAX_ERROR_BODY bytes of an error answer's body, read by `deadline`."""
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_ERROR_BODY or time.monotonic() >= deadline:
            break
    return b"".join(chunks)[:MAX_ERROR_BODY]
