"""The wire formats a call is answered in, one module each: `session` (the
chat API's own events), `openai` (Chat Completions) and `anthropic` (Messages).
Each is a pure renderer behind one small protocol:

- `asks_for_stream(body)`: whether the request wants server-sent events;
- `renderer(hold, body)`: the call's Renderer, with `status` (a whole
  answer's), `answer(hold, reply, exchange)` (the response model of a settled
  call, or the APIError to report), and the stream's text: `opening()`,
  `delta(text)`, `closing(answer)`, `failure(error)`;
- `replay(stored_text, body)`: a stored answer as the events of a stream.

The inference formats (`openai`, `anthropic`) also turn their request into a
provider-neutral ModelCall (`call_of(body)`) and shape their errors (`error`)."""
import json
from dataclasses import dataclass

from flask import current_app

from app.providers import Ending

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass(frozen=True)
class ModelCall:
    """What a request of an inference format asks a model for, in no format's words."""
    model: str
    messages: list        # [{"role": "system" | "user" | "assistant", "content": text}]
    max_tokens: int | None
    temperature: object
    stop: list | None
    stream: bool


def sse(data, event=None):
    """One server-sent event."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def event_stream(events):
    """A text/event-stream response of `events` (an iterable of text or bytes)."""
    return current_app.response_class(events, mimetype="text/event-stream", headers=HEADERS)


def text_of(content):
    """A message's text: a string, or the concatenation of its text parts."""
    return content if isinstance(content, str) else "".join(part.text for part in content)


def replay_events(renderer, answer, text):
    """A stored answer as a stream: its opening, all its text as one delta, its end."""
    return [renderer.opening() + renderer.delta(text) + renderer.closing(answer)]


def ending_of(hold, reply):
    """Why the answer ended (app.providers.Ending): as its provider said, else
    "length" when it used all of max_tokens and "stop" when not."""
    if reply.ending is not None:
        return reply.ending
    return Ending("length" if reply.has_usage and reply.completion_tokens >= hold.max_tokens else "stop")


def sentence(message, details):
    """The message with each named field's problem, for formats that carry no details."""
    fields = "; ".join(f"{name}: {problem}" for name, problem in details.items() if isinstance(problem, str))
    return f"{message} ({fields})" if fields else message
