"""Anthropic's Messages API at ANTHROPIC_BASE_URL."""
from app.providers.completion import Ending
from app.providers.wire import END_OF_STREAM, RemoteFormat, error_event, event_json

ANTHROPIC_VERSION = "2023-06-01"


class Messages(RemoteFormat):
    name = "anthropic"
    path = "/messages"
    base_url_setting = "ANTHROPIC_BASE_URL"
    stop_field = "stop_sequences"
    prompt_usage, completion_usage = "input_tokens", "output_tokens"

    def body(self, model_name, messages, max_tokens):
        """The API takes system instructions apart from the conversation, as one text."""
        system = [m["content"] for m in messages if m["role"] == "system"]
        body = {"model": model_name, "max_tokens": max_tokens,
                "messages": [m for m in messages if m["role"] != "system"]}
        if system:
            body["system"] = "\n\n".join(system)
        return body

    def headers(self, api_key):
        return {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION}

    def reply_text(self, reply):
        """The text blocks of the reply, joined; other blocks (tool use) carry no text."""
        return "".join(part["text"] for part in reply["content"] if part.get("type") == "text")

    def reply_ending(self, reply):
        return self.ending(reply.get("stop_reason"), reply.get("stop_sequence"))

    @staticmethod
    def ending(stop_reason, stop_sequence):
        """max_tokens is "length", stop_sequence names its sequence; the rest
        (end_turn, tool_use, …) is a stop."""
        if not stop_reason:
            return None
        if stop_reason == "stop_sequence" and isinstance(stop_sequence, str):
            return Ending("stop_sequence", stop_sequence)
        return Ending("length" if stop_reason == "max_tokens" else "stop")

    def stream_body(self, body):
        return {**body, "stream": True}

    def read_event(self, name, data, stream):
        """message_start (input tokens), text deltas of the content blocks,
        message_delta (output tokens so far, stop reason), then message_stop;
        pings and other blocks' deltas carry no text. message_start's
        output_tokens (1, or so) counts before any output: only message_delta's
        is the output's count, and a stream without one has its output estimated."""
        event = event_json(data)
        kind = event["type"]
        if kind == "error":
            raise error_event(event["error"])
        if kind == "message_start":
            input_tokens, _ = self.usage_counts(event["message"].get("usage"))
            stream.note_usage(input_tokens, None)
        elif kind == "message_delta":
            stream.note_usage(*self.usage_counts(event.get("usage")))
            delta = event["delta"]
            stream.ending = self.ending(delta.get("stop_reason"), delta.get("stop_sequence")) or stream.ending
        elif kind == "content_block_delta" and event["delta"].get("type") == "text_delta":
            return str(event["delta"]["text"])
        elif kind == "message_stop":
            return END_OF_STREAM
        return None


MESSAGES = Messages()
