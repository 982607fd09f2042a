"""The built-in models: no key, no network, deterministic, with real token
counts, so that the whole billed path can run without any provider account."""
import re

from app.providers.completion import Completion, Ending
from app.providers.images import openai_image_tokens
from app.providers.streamed_reply import Stream

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
    """(the text up to the first stop sequence, as providers end a reply there;
    that sequence, or None)."""
    ends = sorted((text.find(sequence), sequence) for sequence in stop or () if sequence in text)
    return (text[:ends[0][0]], ends[0][1]) if ends else (text, None)


class Local:
    """The same `complete` as a remote format; it needs neither the endpoint's transport,
    nor a key, nor the deadline, since it answers at once. Its models take no
    tools, images, JSON answers, caches or reasoning (the catalog says so, and the hold refuses them)."""

    name = "local"
    answers_json_with_tools = False

    @staticmethod
    def image_tokens(model_name, image):
        """Never asked (no local model takes images): the largest bound there is."""
        return openai_image_tokens(model_name, image)

    def complete(self, endpoint, model_name, messages, max_tokens, temperature, api_key, deadline, stop=None,
                 tool_use=None, response_format=None, reasoning=None):
        words = LOCAL_REPLIES.get(model_name, _echo)(messages[-1]["content"])
        prompt = self.count_tokens(endpoint, model_name, messages, api_key, deadline)
        text, stopped_at = _before_stop(" ".join(words[:max_tokens]), stop)
        if stopped_at is not None:
            ending = Ending("stop_sequence", stopped_at)
        else:
            ending = Ending("length" if len(words) > max_tokens else "stop")
        return Completion(content=text, prompt_tokens=prompt, completion_tokens=len(local_tokens(text)),
                          ending=ending)

    def count_tokens(self, endpoint, model_name, messages, api_key, deadline, tool_use=None):
        """The prompt's tokens exactly, as `complete` bills them."""
        return LOCAL_REQUEST_OVERHEAD + sum(LOCAL_MESSAGE_OVERHEAD + len(local_tokens(m["content"])) for m in messages)

    def stream(self, endpoint, model_name, messages, max_tokens, temperature, api_key, first_byte_deadline,
               deadline, stop=None, tool_use=None, response_format=None, reasoning=None):
        """The text `complete` gives, word by word, with the same usage."""
        completion = self.complete(endpoint, model_name, messages, max_tokens, temperature, api_key, deadline,
                                   stop)

        def words(stream):
            stream.note_usage({"prompt_tokens": completion.prompt_tokens,
                               "completion_tokens": completion.completion_tokens})
            stream.ending = completion.ending
            return STREAMED_WORDS.findall(completion.content)

        return Stream(endpoint.name, words)


LOCAL = Local()
