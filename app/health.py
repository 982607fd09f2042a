"""Each deployment's health: over the last 5 minutes and the last hour, its
attempts, errors, time to first token (p50, p95; a plain call's whole answer)
and output tokens per second. Shown on a model's page, and what
`provider.sort` orders routes by (app/routing.py).

Kept in one-minute buckets per deployment, each with at most MAX_SAMPLES
first-token times, so the figures cost a bounded, small memory.

Where RATELIMIT_STORAGE_URI is Redis, the buckets live there too, summed over
every worker and instance: a worker adds what it measured once a second (so a
call costs no round trip) and trusts what it read for a second. Each worker
also keeps its own buckets, which stand in while Redis cannot be reached
(app/shared_store.py)."""
import logging
import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import redis

from app.shared_store import shared_store

log = logging.getLogger(__name__)

WINDOWS = {"5m": 300, "1h": 3600}
BUCKET_SECONDS = 60
MAX_SAMPLES = 64
SHARE_EVERY = 1.0  # seconds between a worker's writes to Redis, and how long it trusts a read
PREFIX = "qm:health:"


@dataclass
class Bucket:
    minute: int
    attempts: int = 0
    errors: int = 0
    first_token_seconds: list = field(default_factory=list)
    output_tokens: int = 0
    generating_seconds: float = 0.0

    def attempted(self, ok, first_token_seconds):
        self.attempts += 1
        self.errors += not ok
        if ok and first_token_seconds is not None and len(self.first_token_seconds) < MAX_SAMPLES:
            self.first_token_seconds.append(first_token_seconds)

    def generated(self, tokens, seconds):
        self.output_tokens += tokens
        self.generating_seconds += seconds


class Health:
    def __init__(self, config):
        self._buckets, self._lock = {}, threading.Lock()
        store = shared_store(config["RATELIMIT_STORAGE_URI"], "health")
        self._shared = SharedBuckets(store) if store is not None else None

    def attempted(self, deployment, ok, first_token_seconds=None):
        """One attempt on `deployment`: whether it answered, and how soon."""
        self._update(deployment, lambda bucket: bucket.attempted(ok, first_token_seconds))

    def generated(self, deployment, tokens, seconds):
        """An answer's output tokens and the seconds it took."""
        if seconds > 0:
            self._update(deployment, lambda bucket: bucket.generated(tokens, seconds))

    def figures(self, deployment):
        """{"5m": …, "1h": …}, each {attempts, errors, first_token_p50_ms,
        first_token_p95_ms, output_tokens_per_second} (None where unmeasured)."""
        buckets = self._recent(deployment)
        return {name: _window(buckets, seconds) for name, seconds in WINDOWS.items()}

    def latency(self, deployment):
        """The last 5 minutes' median time to first token (inf: unmeasured), for an ascending sort."""
        p50 = _window(self._recent(deployment), WINDOWS["5m"])["first_token_p50_ms"]
        return math.inf if p50 is None else p50

    def throughput(self, deployment):
        """The last 5 minutes' output tokens per second, negated for an ascending sort (0: unmeasured)."""
        return -(_window(self._recent(deployment), WINDOWS["5m"])["output_tokens_per_second"] or 0)

    def _update(self, deployment, change):
        minute = int(time.time() // BUCKET_SECONDS)
        with self._lock:
            buckets = self._buckets.setdefault(deployment, deque(maxlen=WINDOWS["1h"] // BUCKET_SECONDS + 1))
            if not buckets or buckets[-1].minute != minute:
                buckets.append(Bucket(minute))
            change(buckets[-1])
        if self._shared is not None:
            self._shared.add(deployment, minute, change)

    def _recent(self, deployment):
        """The deployment's buckets of the last hour: everyone's when shared, else this worker's."""
        if self._shared is not None:
            shared = self._shared.read(deployment)
            if shared is not None:
                return shared
        with self._lock:
            return [Bucket(bucket.minute, bucket.attempts, bucket.errors, list(bucket.first_token_seconds),
                           bucket.output_tokens, bucket.generating_seconds)
                    for bucket in self._buckets.get(deployment, ())]


class SharedBuckets:
    """The buckets in Redis: a hash of counts and a list of first-token times
    per deployment and minute, expiring after the hour. A worker gathers what
    it measured and adds it once a second from a thread of its own."""

    def __init__(self, store):
        self._store = store  # app/shared_store.py
        self._pending, self._lock = {}, threading.Lock()
        self._read = {}  # deployment → (when read, buckets)
        self._writer_pid = None

    def add(self, deployment, minute, change):
        with self._lock:
            change(self._pending.setdefault((deployment, minute), Bucket(minute)))
            if self._writer_pid != os.getpid():  # the first measurement of this (forked) worker
                self._writer_pid = os.getpid()
                threading.Thread(target=self._keep_writing, name="health-writer", daemon=True).start()

    def read(self, deployment):
        """The deployment's buckets of the last hour, None while Redis cannot be reached."""
        now = time.time()
        cached = self._read.get(deployment)
        if cached is not None and now - cached[0] < SHARE_EVERY:
            return cached[1]
        if not self._store.ready():
            return None
        minutes = range(int(now // BUCKET_SECONDS) - WINDOWS["1h"] // BUCKET_SECONDS, int(now // BUCKET_SECONDS) + 1)
        try:
            with self._store.client.pipeline(transaction=False) as pipe:
                for minute in minutes:
                    pipe.hgetall(_key(deployment, minute))
                    pipe.lrange(_key(deployment, minute) + ":ft", 0, MAX_SAMPLES - 1)
                answers = pipe.execute()
            self._store.answered()
        except redis.RedisError as exc:
            self._store.failed(exc)
            return None
        buckets = [_bucket(minute, counts, samples)
                   for minute, counts, samples in zip(minutes, answers[::2], answers[1::2]) if counts]
        self._read[deployment] = (now, buckets)
        return buckets

    def _keep_writing(self):
        while True:
            time.sleep(SHARE_EVERY)
            with self._lock:
                pending, self._pending = self._pending, {}
            if pending:
                self._write(pending)

    def _write(self, pending):
        expires = WINDOWS["1h"] + 2 * BUCKET_SECONDS
        if not self._store.ready():
            return  # these figures are lost to the others; the worker's own stay
        try:
            with self._store.client.pipeline(transaction=False) as pipe:
                for (deployment, minute), bucket in pending.items():
                    key = _key(deployment, minute)
                    pipe.hincrby(key, "attempts", bucket.attempts)
                    pipe.hincrby(key, "errors", bucket.errors)
                    pipe.hincrby(key, "output_tokens", bucket.output_tokens)
                    pipe.hincrbyfloat(key, "generating_seconds", bucket.generating_seconds)
                    pipe.expire(key, expires)
                    if bucket.first_token_seconds:
                        pipe.rpush(key + ":ft", *bucket.first_token_seconds)
                        pipe.ltrim(key + ":ft", 0, MAX_SAMPLES - 1)
                        pipe.expire(key + ":ft", expires)
                pipe.execute()
            self._store.answered()
        except redis.RedisError as exc:  # these figures are lost to the others; the worker's own stay
            self._store.failed(exc)


def _key(deployment, minute):
    return f"{PREFIX}{deployment}:{minute}"


def _bucket(minute, counts, samples):
    counts = {name.decode(): value for name, value in counts.items()}
    return Bucket(minute, int(counts.get("attempts", 0)), int(counts.get("errors", 0)),
                  [float(value) for value in samples], int(counts.get("output_tokens", 0)),
                  float(counts.get("generating_seconds", 0)))


def _window(buckets, seconds):
    since = int((time.time() - seconds) // BUCKET_SECONDS)
    buckets = [bucket for bucket in buckets if bucket.minute > since]
    samples = sorted(value for bucket in buckets for value in bucket.first_token_seconds)
    tokens = sum(bucket.output_tokens for bucket in buckets)
    generating = sum(bucket.generating_seconds for bucket in buckets)
    return {"attempts": sum(bucket.attempts for bucket in buckets),
            "errors": sum(bucket.errors for bucket in buckets),
            "first_token_p50_ms": _percentile_ms(samples, 0.50),
            "first_token_p95_ms": _percentile_ms(samples, 0.95),
            "output_tokens_per_second": round(tokens / generating, 1) if generating else None}


def _percentile_ms(samples, share):
    """The nearest-rank percentile of sorted `samples` (seconds), in ms."""
    if not samples:
        return None
    return round(samples[min(len(samples) - 1, math.ceil(share * len(samples)) - 1)] * 1000, 1)
