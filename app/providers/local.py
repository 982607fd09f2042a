"""The built-in models: no key, no network, deterministic, with real token
counts, so that the whole billed path can run without any provider account."""
import re

from app.providers.completion import Completion
from app.providers.stream import Stream

WORDS = re.compile(r"\w+|[^\w\s]")
# A word with the whitespace before it, so that the pieces join to the text.
STREAMED_WORDS = re.compile(r"\s*\S+|\s+")
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


def _before_stop(text, stop):
    """The text up to the first stop sequence, as providers end a reply there."""
    ends = [text.find(sequence) for sequence in stop or () if sequence in text]
    return text[:min(ends)] if ends else text


class Local:
    """The same `complete` as a remote format; it needs neither the transport,
    nor a key, nor the deadline, since it answers at once."""

    name = "local"
    base_url_setting = None

    def complete(self, transport, model_name, messages, max_tokens, temperature, api_key, deadline, stop=None):
        reply = LOCAL_REPLIES.get(model_name, _echo)(messages[-1]["content"])[:max_tokens]
        prompt = LOCAL_REQUEST_OVERHEAD + sum(LOCAL_MESSAGE_OVERHEAD + len(local_tokens(m["content"]))
                                              for m in messages)
        text = _before_stop(" ".join(reply), stop)
        return Completion(content=text, prompt_tokens=prompt, completion_tokens=len(local_tokens(text)))

    def stream(self, transport, model_name, messages, max_tokens, temperature, api_key, first_byte_deadline,
               deadline, stop=None):
        """The text `complete` gives, word by word, with the same usage."""
        completion = self.complete(transport, model_name, messages, max_tokens, temperature, api_key, deadline,
                                   stop)
        finish_reason = "length" if completion.completion_tokens == max_tokens else "stop"

        def words(stream):
            stream.note_usage(completion.prompt_tokens, completion.completion_tokens)
            stream.finish_reason = finish_reason
            return STREAMED_WORDS.findall(completion.content)

        return Stream(self.name, words)


LOCAL = Local()
