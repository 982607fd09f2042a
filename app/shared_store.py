"""The Redis that the circuit breakers and the deployments' health share
across workers and instances (RATELIMIT_STORAGE_URI). Every call touches them,
so a Redis that does not answer must not cost every call its timeout: after a
failure a worker leaves Redis alone for RETRY_AFTER_SECONDS and uses its own
figures, as flask-limiter does for the limits. The outage is logged once, and
so is Redis answering again."""
import logging
import time

import redis

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 0.2  # a request waits at most this for Redis, connecting or answering
RETRY_AFTER_SECONDS = 5.0


def shared_store(uri, what):
    """A SharedStore for `uri` when it names Redis, else None (each worker keeps its own)."""
    return SharedStore(uri, what) if uri.startswith(("redis://", "rediss://")) else None


class SharedStore:
    """`client` is used only while `ready()`: call `failed(exc)` on a
    redis.RedisError, `answered()` after a command that worked."""

    def __init__(self, uri, what):
        self.client = redis.Redis.from_url(uri, socket_timeout=TIMEOUT_SECONDS,
                                           socket_connect_timeout=TIMEOUT_SECONDS)
        self._what = what  # the log's name for the figures kept there
        self._resting_until = 0.0
        self._down = False

    def ready(self):
        return time.monotonic() >= self._resting_until

    def failed(self, exc):
        self._resting_until = time.monotonic() + RETRY_AFTER_SECONDS
        if not self._down:
            self._down = True
            log.error("%s: Redis cannot be reached (%s); this worker keeps its own, trying Redis again every %s s",
                      self._what, exc, RETRY_AFTER_SECONDS)

    def answered(self):
        if self._down:
            self._down = False
            log.warning("%s: Redis answers again", self._what)
