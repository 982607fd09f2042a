"""AI providers behind one interface: `complete(provider, model_name, messages,
max_tokens, temperature, api_key, deadline)` → Completion.

- `local`: built in, no key, no network, deterministic, with real token counts.
- `openai`: Chat Completions at OPENAI_BASE_URL (any compatible server works).
- `anthropic`: the Messages API at ANTHROPIC_BASE_URL.

One httpx client per process reuses connections to each provider. A remote
call ends by its deadline (the caller's, PROVIDER_TIMEOUT after it began), all
of it: connecting, sending and every read. httpx's own timeouts bound each network
operation, not the call, so a provider sending one byte at a time could keep a
call open for ever; here the exchange runs on a worker thread, the caller waits
for it no longer than the deadline, and the worker reads the reply in chunks
and gives up at the deadline too, so a dripping provider holds neither the
request nor a thread past it."""
import json
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

log = logging.getLogger(__name__)

ANTHROPIC_VERSION = "2023-06-01"
# The prompt estimate is an upper bound made offline: a byte-level tokenizer
# never makes more tokens than the text has UTF-8 bytes, plus what each message
# and the request add around the text.
MESSAGE_OVERHEAD_TOKENS = 8
REQUEST_OVERHEAD_TOKENS = 16
MAX_IN_FLIGHT_CONNECTIONS = 512
# Far above any reply a max_tokens allows; a longer one is refused, not buffered.
MAX_REPLY_BYTES = 16 * 1024 * 1024


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


def message_tokens_upper_bound(content):
    return len(content.encode("utf-8")) + MESSAGE_OVERHEAD_TOKENS


def prompt_tokens_upper_bound(messages):
    return REQUEST_OVERHEAD_TOKENS + sum(message_tokens_upper_bound(m["content"]) for m in messages)


# ----------------------------------------------------------------- local

WORDS = re.compile(r"\w+|[^\w\s]")
LOCAL_MESSAGE_OVERHEAD = 3
LOCAL_REQUEST_OVERHEAD = 3


def local_tokens(text):
    """The local models' tokenizer: words and single punctuation marks."""
    return WORDS.findall(text)


def _echo(text):
    return ["You", "said", ":"] + local_tokens(text)


def _reverse(text):
    return list(reversed(local_tokens(text)))


LOCAL_REPLIES = {"echo": _echo, "reverse": _reverse}


def complete_locally(model_name, messages, max_tokens):
    reply = LOCAL_REPLIES.get(model_name, _echo)(messages[-1]["content"])[:max_tokens]
    prompt = LOCAL_REQUEST_OVERHEAD + sum(LOCAL_MESSAGE_OVERHEAD + len(local_tokens(m["content"])) for m in messages)
    return Completion(content=" ".join(reply), prompt_tokens=prompt, completion_tokens=len(reply))


# ----------------------------------------------------------------- remote

class Providers:
    """The adapters, sharing one HTTP client and one pool of worker threads made
    on first use in each process."""

    def __init__(self, config):
        self.base_urls = {"openai": config["OPENAI_BASE_URL"].rstrip("/"),
                          "anthropic": config["ANTHROPIC_BASE_URL"].rstrip("/")}
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

    def complete(self, provider, model_name, messages, max_tokens, temperature, api_key, deadline):
        """The provider's Completion; `deadline` (a time.monotonic() value) ends a
        remote call: ProviderTimeout once it passes."""
        if provider == "local":
            return complete_locally(model_name, messages, max_tokens)
        call = {"openai": self._openai, "anthropic": self._anthropic}[provider]
        return call(model_name, messages, max_tokens, temperature, api_key, deadline)

    def _openai(self, model_name, messages, max_tokens, temperature, api_key, deadline):
        body = {"model": model_name, "messages": messages, "max_tokens": max_tokens}
        if temperature is not None:
            body["temperature"] = temperature
        reply = self._post("openai", "/chat/completions", body, {"Authorization": f"Bearer {api_key}"}, deadline)
        try:
            content = reply["choices"][0]["message"]["content"] or ""
            usage = reply.get("usage") or {}
            return Completion(_clean_text("openai", str(content)), _count(usage.get("prompt_tokens")),
                              _count(usage.get("completion_tokens")))
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ProviderError("openai", 200, "malformed response") from None

    def _anthropic(self, model_name, messages, max_tokens, temperature, api_key, deadline):
        system = [m["content"] for m in messages if m["role"] == "system"]
        body = {"model": model_name, "max_tokens": max_tokens,
                "messages": [m for m in messages if m["role"] != "system"]}
        if system:
            body["system"] = "\n\n".join(system)
        if temperature is not None:
            body["temperature"] = temperature
        headers = {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION}
        reply = self._post("anthropic", "/messages", body, headers, deadline)
        try:
            content = "".join(part["text"] for part in reply["content"] if part.get("type") == "text")
            usage = reply.get("usage") or {}
            return Completion(_clean_text("anthropic", content), _count(usage.get("input_tokens")),
                              _count(usage.get("output_tokens")))
        except (KeyError, TypeError, AttributeError):
            raise ProviderError("anthropic", 200, "malformed response") from None

    def _post(self, provider, path, body, headers, deadline):
        """The provider's JSON object, read whole before `deadline`."""
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
        try:
            with self.client().stream("POST", url, json=body, headers=headers,
                                      timeout=_time_left(provider, deadline)) as response:
                if response.status_code >= 400:
                    return response.status_code, b""
                return response.status_code, _read_before(provider, response, deadline)
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


def _clean_text(provider, text):
    """The reply as PostgreSQL can store it: without NUL characters and with
    unpaired surrogates (which UTF-8 cannot encode) replaced."""
    cleaned = text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")
    if cleaned != text:
        log.warning("%s reply carried NUL characters or unpaired surrogates; removed", provider)
    return cleaned


def _count(value):
    """A token count from a provider's usage, or None when absent or unusable."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
