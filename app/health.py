"""Each deployment's health as measured by this worker: over the last 5
minutes and the last hour, its attempts, errors, time to first token (p50,
p95; a plain call's whole answer) and output tokens per second. Shown on a
model's page, and what `provider.sort` orders routes by (app/routing.py).

Kept in one-minute buckets per deployment, each with at most MAX_SAMPLES
first-token times, so the figures cost a bounded, small memory."""
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field

WINDOWS = {"5m": 300, "1h": 3600}
BUCKET_SECONDS = 60
MAX_SAMPLES = 64


@dataclass
class Bucket:
    minute: int
    attempts: int = 0
    errors: int = 0
    first_token_seconds: list = field(default_factory=list)
    output_tokens: int = 0
    generating_seconds: float = 0.0


class Health:
    def __init__(self):
        self._buckets, self._lock = {}, threading.Lock()

    def attempted(self, deployment, ok, first_token_seconds=None):
        """One attempt on `deployment`: whether it answered, and how soon."""
        with self._lock:
            bucket = self._bucket(deployment)
            bucket.attempts += 1
            bucket.errors += not ok
            if ok and first_token_seconds is not None and len(bucket.first_token_seconds) < MAX_SAMPLES:
                bucket.first_token_seconds.append(first_token_seconds)

    def generated(self, deployment, tokens, seconds):
        """An answer's output tokens and the seconds it took."""
        if seconds <= 0:
            return
        with self._lock:
            bucket = self._bucket(deployment)
            bucket.output_tokens += tokens
            bucket.generating_seconds += seconds

    def figures(self, deployment):
        """{"5m": …, "1h": …}, each {attempts, errors, first_token_p50_ms,
        first_token_p95_ms, output_tokens_per_second} (None where unmeasured)."""
        return {name: self._window(deployment, seconds) for name, seconds in WINDOWS.items()}

    def latency(self, deployment):
        """The last 5 minutes' median time to first token (inf: unmeasured), for an ascending sort."""
        p50 = self._window(deployment, WINDOWS["5m"])["first_token_p50_ms"]
        return math.inf if p50 is None else p50

    def throughput(self, deployment):
        """The last 5 minutes' output tokens per second, negated for an ascending sort (0: unmeasured)."""
        return -(self._window(deployment, WINDOWS["5m"])["output_tokens_per_second"] or 0)

    def _bucket(self, deployment):
        minute = int(time.time() // BUCKET_SECONDS)
        buckets = self._buckets.setdefault(deployment, deque(maxlen=WINDOWS["1h"] // BUCKET_SECONDS + 1))
        if not buckets or buckets[-1].minute != minute:
            buckets.append(Bucket(minute))
        return buckets[-1]

    def _window(self, deployment, seconds):
        since = int((time.time() - seconds) // BUCKET_SECONDS)
        with self._lock:
            buckets = [bucket for bucket in self._buckets.get(deployment, ()) if bucket.minute > since]
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
