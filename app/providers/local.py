"""The built-in models: no key, no network, deterministic, with real token
counts, so that the whole billed path can run without any provider account."""
import re

from app.providers.completion import Completion

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


class Local:
    """The same `complete` as a remote format; it needs neither the transport,
    nor a key, nor the deadline, since it answers at once."""

    name = "local"
    base_url_setting = None

    def complete(self, transport, model_name, messages, max_tokens, temperature, api_key, deadline):
        reply = LOCAL_REPLIES.get(model_name, _echo)(messages[-1]["content"])[:max_tokens]
        prompt = LOCAL_REQUEST_OVERHEAD + sum(LOCAL_MESSAGE_OVERHEAD + len(local_tokens(m["content"]))
                                              for m in messages)
        return Completion(content=" ".join(reply), prompt_tokens=prompt, completion_tokens=len(reply))


LOCAL = Local()
