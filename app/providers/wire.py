"""The interface every remote wire format shares: `request` says what to send,
`completion` reads the answer, and the transport (one provider's Endpoint,
app/providers/transport.py) does everything between
(connection, deadline, size cap, errors). A format never touches HTTP: for a
streamed reply it only adds what its streaming request sends (`stream_body`)
and how to read one of its events (`read_event`)."""
import json

from app.providers.completion import Ending, ProviderError, clean_text, completion_of
from app.providers.prompt_size import estimated_prompt_tokens
from app.providers.reasoning import ThinkingDelta
from app.providers.sse_parser import sse_events
from app.providers.streamed_reply import Stream, StreamBroken

# What `read_event` returns for the event that ends a complete stream.
END_OF_STREAM = object()
# What a malformed event raises while it is read.
MALFORMED = (ValueError, KeyError, IndexError, TypeError, AttributeError)


class RemoteFormat:
    """A wire format spoken over HTTP, by any provider configured with it.
    Subclasses set `name` (the format's), `path`, and implement `body` (the
    conversation, app/providers/conversation.py, in its words), `tool_fields`, `response_format_fields`, `image_tokens`,
    `headers`, `reply_text`, `reply_tool_calls`, `reply_ending`, `usage_counts`,
    `reasoning_fields`, `stream_body` and `read_event` (and `reply_thinking`
    where replies show thinking).

    A format that has no way to ask for a JSON answer asks for a call of a
    tool instead (`answer_tool`): that call's arguments are the answer's text,
    and the reply ends as a stop, plain or streamed."""

    name = path = stop_field = None
    # Whether a JSON answer may be asked while tools are offered.
    answers_json_with_tools = True

    def complete(self, endpoint, model_name, messages, max_tokens, temperature, api_key, deadline, stop=None,
                 tool_use=None, response_format=None, reasoning=None):
        path, body, headers = self.request(model_name, messages, max_tokens, temperature, api_key, stop, tool_use,
                                           response_format, reasoning)
        return self.completion(endpoint.name, endpoint.post_json(path, body, headers, deadline),
                               self.answer_tool(response_format))

    def stream(self, endpoint, model_name, messages, max_tokens, temperature, api_key, first_byte_deadline,
               deadline, stop=None, tool_use=None, response_format=None, reasoning=None):
        path, body, headers = self.request(model_name, messages, max_tokens, temperature, api_key, stop, tool_use,
                                           response_format, reasoning)
        source = endpoint.open_stream(path, self.stream_body(body), headers, first_byte_deadline, deadline)
        answer_tool = self.answer_tool(response_format)
        return Stream(endpoint.name, lambda stream: self._deltas(sse_events(source), stream, answer_tool), source)

    def count_tokens(self, endpoint, model_name, messages, api_key, deadline, tool_use=None):
        """The prompt's input tokens; a format whose API has no count estimates them."""
        return estimated_prompt_tokens(messages, tool_use,
                                       lambda image: self.image_tokens(model_name, image).in_context)

    def request(self, model_name, messages, max_tokens, temperature, api_key, stop=None, tool_use=None,
                response_format=None, reasoning=None):
        """(path, JSON body, headers). The temperature, stop sequences,
        tools, the answer's format and reasoning are sent only when the
        caller chose them, so that the provider's own defaults hold otherwise."""
        body = self.body(model_name, messages, max_tokens)
        if temperature is not None:
            body["temperature"] = temperature
        if stop:
            body[self.stop_field] = list(stop)
        if tool_use is not None:
            body.update(self.tool_fields(tool_use))
        if response_format is not None:
            body.update(self.response_format_fields(response_format))
        if reasoning is not None:
            body.update(self.reasoning_fields(reasoning))
        return self.path, body, self.headers(api_key)

    def answer_tool(self, response_format):
        """The name of the tool whose call is the answer (None: the answer is the reply's text)."""
        return None

    def completion(self, provider, reply, answer_tool=None):
        """The Completion in `provider`'s reply object; a reply of another
        shape is the provider's fault, reported as such rather than as ours."""
        try:
            text, calls = self.reply_text(reply), tuple(self.reply_tool_calls(reply))
            ending = self.reply_ending(reply)
            if answer_tool is not None:
                text += "".join(call.arguments for call in calls if call.name == answer_tool)
                calls = tuple(call for call in calls if call.name != answer_tool)
                ending = _answered(ending, calls)
            return completion_of(clean_text(provider, text), self.usage_counts(reply.get("usage")), ending, calls,
                                 self.reply_thinking(reply))
        except MALFORMED:
            raise ProviderError(provider, 200, "malformed response") from None

    def usage_counts(self, usage):
        """The counts of a usage object ({name in USAGE_COUNTS: count}, each None when absent)."""
        raise NotImplementedError

    def reasoning_fields(self, reasoning):
        """The body's fields asking for a Reasoning."""
        raise NotImplementedError

    def reply_thinking(self, reply):
        """The ThinkingBlocks of a whole reply."""
        return ()

    def _deltas(self, events, stream, answer_tool=None):
        """The text pieces and tool-call pieces of the events, until the
        format's end event; the pieces of a call of `answer_tool` as text."""
        state = {}  # what the format keeps from one event to the next
        answer_index = None  # the answer tool's call's index among the calls
        for name, data in events:
            try:
                delta = self.read_event(name, data, stream, state)
            except MALFORMED:
                raise StreamBroken("malformed event") from None
            if delta is END_OF_STREAM:
                if answer_index is not None:
                    stream.ending = _answered(stream.ending, stream.tool_calls)
                return
            if not isinstance(delta, list):
                if delta:
                    yield delta
                continue
            for piece in delta:
                if isinstance(piece, ThinkingDelta):
                    yield piece
                    continue
                if answer_tool is not None and piece.id is not None and piece.name == answer_tool:
                    answer_index = piece.index
                if piece.index != answer_index:
                    yield piece
                elif piece.arguments:
                    yield piece.arguments
        raise StreamBroken("the connection closed before the end")

    def body(self, model_name, messages, max_tokens):
        raise NotImplementedError

    def tool_fields(self, tool_use):
        """The body's fields offering a ToolUse's tools."""
        raise NotImplementedError

    def response_format_fields(self, response_format):
        """The body's fields asking for a ResponseFormat's JSON."""
        raise NotImplementedError

    def image_tokens(self, model_name, image):
        """The ImageTokens of one image sent to `model_name` (app/providers/images.py)."""
        raise NotImplementedError

    def reply_tool_calls(self, reply):
        """The ToolCalls of a whole reply."""
        raise NotImplementedError

    def headers(self, api_key):
        raise NotImplementedError

    def reply_text(self, reply):
        raise NotImplementedError

    def stream_body(self, body):
        """The request body asking for the reply as a stream."""
        raise NotImplementedError

    def read_event(self, name, data, stream, state):
        """A text piece, a list of ToolCallDelta or ThinkingDelta, None, or END_OF_STREAM for
        one event (its name and data), with `state`, a dict the format keeps
        for the stream's later events; notes usage and the finish reason on
        the stream, and raises StreamBroken for an error event. A malformed
        event may raise anything in MALFORMED."""
        raise NotImplementedError


def _answered(ending, other_calls):
    """The ending of a reply whose answer was a call of the answer tool: a
    stop, as a JSON answer ends, unless the reply also called other tools."""
    if ending is not None and ending.reason == "tool_calls" and not other_calls:
        return Ending("stop")
    return ending


def event_json(data):
    """An event's data as a JSON object."""
    payload = json.loads(data)
    if not isinstance(payload, dict):
        raise TypeError("not an object")
    return payload


def error_event(error):
    """StreamBroken for a provider's in-stream error object."""
    kind = error.get("type") if isinstance(error, dict) else None
    return StreamBroken(f"error event ({kind})" if isinstance(kind, str) and kind.isidentifier() else "error event")
