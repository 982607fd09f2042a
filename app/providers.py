"""AI providers behind one interface: `complete(model, messages, max_tokens,
temperature, api_key)` → Completion.

- `local`: built in, no key, no network, deterministic, with real token counts.
- `openai`: Chat Completions at OPENAI_BASE_URL (any compatible server works).
- `anthropic`: the Messages API at ANTHROPIC_BASE_URL.

One httpx client per process reuses connections to each provider; every call
is bounded by PROVIDER_TIMEOUT."""
import logging
import re
import threading
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
    """The adapters, sharing one HTTP client made on first use in each process."""

    def __init__(self, config):
        self.base_urls = {"openai": config["OPENAI_BASE_URL"].rstrip("/"),
                          "anthropic": config["ANTHROPIC_BASE_URL"].rstrip("/")}
        timeout = config["PROVIDER_TIMEOUT"]
        self.timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self._client = None
        self._lock = threading.Lock()

    def client(self):
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = httpx.Client(
                        timeout=self.timeout,
                        limits=httpx.Limits(max_connections=MAX_IN_FLIGHT_CONNECTIONS,
                                            max_keepalive_connections=64))
        return self._client

    def close(self):
        if self._client is not None:
            self._client.close()
            self._client = None

    def complete(self, provider, model_name, messages, max_tokens, temperature, api_key):
        if provider == "local":
            return complete_locally(model_name, messages, max_tokens)
        call = {"openai": self._openai, "anthropic": self._anthropic}[provider]
        return call(model_name, messages, max_tokens, temperature, api_key)

    def _openai(self, model_name, messages, max_tokens, temperature, api_key):
        body = {"model": model_name, "messages": messages, "max_tokens": max_tokens}
        if temperature is not None:
            body["temperature"] = temperature
        reply = self._post("openai", "/chat/completions", body, {"Authorization": f"Bearer {api_key}"})
        try:
            content = reply["choices"][0]["message"]["content"] or ""
            usage = reply.get("usage") or {}
            return Completion(str(content), _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")))
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ProviderError("openai", 200, "malformed response") from None

    def _anthropic(self, model_name, messages, max_tokens, temperature, api_key):
        system = [m["content"] for m in messages if m["role"] == "system"]
        body = {"model": model_name, "max_tokens": max_tokens,
                "messages": [m for m in messages if m["role"] != "system"]}
        if system:
            body["system"] = "\n\n".join(system)
        if temperature is not None:
            body["temperature"] = temperature
        headers = {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION}
        reply = self._post("anthropic", "/messages", body, headers)
        try:
            content = "".join(part["text"] for part in reply["content"] if part.get("type") == "text")
            usage = reply.get("usage") or {}
            return Completion(content, _count(usage.get("input_tokens")), _count(usage.get("output_tokens")))
        except (KeyError, TypeError, AttributeError):
            raise ProviderError("anthropic", 200, "malformed response") from None

    def _post(self, provider, path, body, headers):
        try:
            response = self.client().post(self.base_urls[provider] + path, json=body, headers=headers)
        except httpx.TimeoutException:
            raise ProviderTimeout(provider) from None
        except httpx.HTTPError as exc:
            raise ProviderError(provider, None, f"unreachable ({type(exc).__name__})") from None
        if response.status_code >= 400:
            raise ProviderError(provider, response.status_code, "error status")
        try:
            reply = response.json()
        except ValueError:
            raise ProviderError(provider, response.status_code, "malformed response") from None
        if not isinstance(reply, dict):
            raise ProviderError(provider, response.status_code, "malformed response")
        return reply


def _count(value):
    """A token count from a provider's usage, or None when absent or unusable."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
