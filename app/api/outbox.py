"""What waits to be written to one streaming client: a few events, never more
than its byte limit, so a client that reads slowly or not at all costs the
worker that much memory and no more."""
import threading
import time
from collections import deque

# Far above a burst of events, far below what a stalled client could make the worker hold.
OUTBOX_BYTES = 64 * 1024


class Outbox:
    """Filled by the stream's relay, emptied by the server writing to the
    client. A client too slow for the stream is given up on (`put` and
    `wait_until_closed` answer False) once it has kept the relay waiting for
    room `idle_seconds` in all (so it never holds the provider's stream back
    longer than that), or has taken nothing for `idle_seconds` while the
    server had something to write (it is stuck writing what it took): a client
    waiting for the provider is never idle. `deadline` (a time.monotonic()
    value) ends every wait for the client, but one: a stream that finished
    only at or past its deadline (its last event, an error, came late) leaves
    the client `idle_seconds` to take that last event."""

    def __init__(self, idle_seconds, deadline, limit=OUTBOX_BYTES):
        self.limit, self.idle_seconds, self.deadline = limit, idle_seconds, deadline
        self.peak_bytes = 0
        self.held_back_seconds = 0.0
        self._items, self._size = deque(), 0
        self._finished = self._closed = self._server_waiting = False
        self.delivered = False  # the server took everything after `finish`
        self._last_taken = time.monotonic()
        self._changed = threading.Condition()

    def put(self, data):
        """Adds `data` once there is room; False, dropping it, when the client
        was idle or the deadline came first, or nothing is taken any more."""
        with self._changed:
            while self._size and self._size + len(data) > self.limit and not self._closed:
                began = time.monotonic()
                waited = self._wait_for_client(began + self.idle_seconds - self.held_back_seconds)
                self.held_back_seconds += time.monotonic() - began
                if not waited:
                    return False
            if self._closed:
                return False
            self._items.append(data)
            self._size += len(data)
            self.peak_bytes = max(self.peak_bytes, self._size)
            self._changed.notify_all()
            return True

    def finish(self):
        """Nothing more will be put."""
        with self._changed:
            self._finished = True
            now = time.monotonic()
            if now >= self.deadline:  # the last event came late: the client may still take it
                self.deadline = now + self.idle_seconds
            self._changed.notify_all()

    def take(self):
        """The next data for the client; None once everything was taken after
        `finish`, or once the outbox is closed."""
        with self._changed:
            while not self._items and not self._finished and not self._closed:
                self._server_waiting = True
                self._changed.wait()
            self._server_waiting = False
            self._last_taken = time.monotonic()
            if self._closed or not self._items:
                self.delivered = not self._closed
                return None
            data = self._items.popleft()
            self._size -= len(data)
            self._changed.notify_all()
            return data

    def close(self):
        """Nothing more is taken (the response ended, or the client is cut off):
        what waits is dropped, and so is whatever is put from now on. False
        when it was closed already."""
        with self._changed:
            was_open, self._closed = not self._closed, True
            self._items.clear()
            self._size = 0
            self._changed.notify_all()
            return was_open

    def wait_until_closed(self):
        """After `finish`: True once the server has written everything and
        closed; False when the client was idle or the deadline came first."""
        with self._changed:
            while not self._closed:
                if not self._wait_for_client():
                    return False
            return True

    def _wait_for_client(self, until=float("inf")):
        """Waits (holding the condition) for the next change; False when the
        client is idle, or `until` or the deadline has passed."""
        until = min(until, self.deadline)
        if not self._server_waiting:
            until = min(until, self._last_taken + self.idle_seconds)
        left = until - time.monotonic()
        if left <= 0:
            return False
        self._changed.wait(left)
        return True
