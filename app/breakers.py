"""Circuit breakers, one per deployment (a provider and the model's name
there): a deployment that keeps failing is left alone for a while, so that a
call goes to the next one at once instead of waiting on it.

A breaker opens after BREAKER_FAILURES failures in a row, or when at least
half of the calls of a BREAKER_WINDOW-second window failed (once it saw
BREAKER_MIN_CALLS). It stays open for BREAKER_COOLDOWN seconds, then lets one
call through (half-open): its success closes it, its failure opens it again.
Only failures that move a call on count (app/routing.py): a provider's
refusal of a request says nothing of its health.

Where RATELIMIT_STORAGE_URI is Redis, the breakers live there, shared by every
worker and instance; else in each worker. A worker reads a breaker from Redis
at most once a second, so a closed circuit costs a call no round trip; if
Redis cannot be reached, the worker's own breakers stand in for a while
(app/shared_store.py), said in the log."""
import logging
import threading
import time
from dataclasses import dataclass

import redis

from app.shared_store import shared_store

log = logging.getLogger(__name__)

# How long a worker trusts what it read of a shared breaker.
READ_TTL = 1.0
PREFIX = "qm:breaker:"
FAILING_SHARE = 0.5
# What `allows` answers for the call that probes a breaker after its cooldown.
PROBE = "probe"


@dataclass
class State:
    """A breaker: failures in a row, when it reopens for a probe (0: closed),
    since when a probe is out (0: none), and the current window's calls and failures."""
    failures: int = 0
    open_until: float = 0.0
    probing: float = 0.0
    window_start: float = 0.0
    window_calls: int = 0
    window_failures: int = 0


class Breakers:
    """The breakers of a worker: `allows(key)` before a call, then
    `succeeded(key)` or `failed(key)`; `retry_in()` is how long until the
    soonest open one lets a probe through."""

    def __init__(self, config):
        self.failures, self.cooldown = config["BREAKER_FAILURES"], config["BREAKER_COOLDOWN"]
        self.window, self.min_calls = config["BREAKER_WINDOW"], config["BREAKER_MIN_CALLS"]
        self._local, self._lock = {}, threading.Lock()
        self._shared = shared_store(config["RATELIMIT_STORAGE_URI"], "circuit breakers")
        self._read = {}  # key → (when read, open_until) of the shared breakers

    def allows(self, key):
        """Whether a call may go to the deployment: True while its breaker is
        closed; PROBE when its cooldown is over and this call is its one probe
        (which `release` gives back if the call makes no attempt after all)."""
        now = time.time()
        open_until = self._open_until(key, now)
        if not open_until:
            return True
        if open_until > now:
            return False
        return PROBE if self._claim_probe(key, now) else False

    def is_open(self, key):
        """Whether calls pass the deployment over now (read only: it claims no probe)."""
        return self._open_until(key, time.time()) > time.time()

    def succeeded(self, key):
        self._record(key, ok=True)

    def failed(self, key):
        self._record(key, ok=False)

    def retry_in(self, keys):
        """Seconds until the soonest of `keys` lets a probe through, at least
        one (a probe may be out now: its answer decides)."""
        now = time.time()
        return max(min(self._open_until(key, now) for key in keys) - now, 1.0)

    # ------------------------------------------------------------ state, local or shared

    def _open_until(self, key, now):
        if self._sharing():
            read = self._read.get(key)
            if read is not None and now - read[0] < READ_TTL:
                return read[1]
            try:
                value = float(self._shared.client.hget(PREFIX + key, "open_until") or 0)
                self._shared.answered()
                self._read[key] = (now, value)
                return value
            except redis.RedisError as exc:
                self._shared.failed(exc)
        with self._lock:
            return self._local.get(key, State()).open_until

    def _claim_probe(self, key, now):
        if self._sharing():
            try:
                return bool(self._shared.client.set(PREFIX + key + ":probe", "1", nx=True,
                                                    px=int(self.cooldown * 1000)))
            except redis.RedisError as exc:
                self._shared.failed(exc)
        with self._lock:
            state = self._local.setdefault(key, State())
            if state.probing and now - state.probing < self.cooldown:  # one out; a lost one expires as Redis's does
                return False
            state.probing = now
            return True

    def release(self, key):
        """Gives back a probe claimed by a call that made no attempt after all."""
        if self._sharing():
            try:
                self._shared.client.delete(PREFIX + key + ":probe")
                return
            except redis.RedisError as exc:
                self._shared.failed(exc)
        with self._lock:
            self._local.setdefault(key, State()).probing = 0.0

    def _record(self, key, ok):
        now = time.time()
        if self._sharing():
            try:
                self._record_shared(key, ok, now)
                self._shared.answered()
                return
            except redis.RedisError as exc:
                self._shared.failed(exc)
        with self._lock:
            state = self._local.setdefault(key, State())
            state.probing = 0.0
            state.open_until = self._next_open_until(key, state, ok, now)

    def _next_open_until(self, key, state, ok, now):
        """Counts one call on `state` and gives its breaker's open_until after it."""
        if now - state.window_start >= self.window:
            state.window_start, state.window_calls, state.window_failures = now, 0, 0
        state.window_calls += 1
        if ok:
            state.failures = 0
            return 0.0
        state.failures += 1
        state.window_failures += 1
        failing = (state.window_calls >= self.min_calls
                   and state.window_failures >= FAILING_SHARE * state.window_calls)
        if state.failures >= self.failures or failing or state.open_until:
            if not state.open_until or state.open_until <= now:
                log.warning("the circuit of %s opened for %s s", key, self.cooldown)
            return now + self.cooldown
        return 0.0

    def _record_shared(self, key, ok, now):
        """The shared breaker updated as one transaction (WATCH, MULTI): a
        success on a closed breaker with no failures writes nothing."""
        name = PREFIX + key
        with self._shared.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(name)
                    stored = {field.decode(): float(value) for field, value in pipe.hgetall(name).items()}
                    state = State(int(stored.get("failures", 0)), stored.get("open_until", 0.0), 0.0,
                                  stored.get("window_start", 0.0), int(stored.get("window_calls", 0)),
                                  int(stored.get("window_failures", 0)))
                    if ok and not state.failures and not state.open_until:
                        pipe.unwatch()
                        return
                    open_until = self._next_open_until(key, state, ok, now)
                    pipe.multi()
                    pipe.hset(name, mapping={"failures": state.failures, "open_until": open_until,
                                             "window_start": state.window_start,
                                             "window_calls": state.window_calls,
                                             "window_failures": state.window_failures})
                    pipe.expire(name, int(max(self.window, self.cooldown) * 10))
                    if ok or open_until:
                        pipe.delete(name + ":probe")
                    pipe.execute()
                    self._read[key] = (now, open_until)
                    return
                except redis.WatchError:
                    continue

    def _sharing(self):
        """Whether the breakers are in Redis and Redis is not resting after a failure."""
        return self._shared is not None and self._shared.ready()
