"""Anthropic's Messages API at ANTHROPIC_BASE_URL."""
import json

from app.providers.completion import Ending, ProviderError, token_count
from app.providers.conversation import ANY_OBJECT
from app.providers.images import anthropic_image_tokens
from app.providers.tools import ToolCall, ToolCallDelta, arguments_text
from app.providers.wire import END_OF_STREAM, RemoteFormat, error_event, event_json

ANTHROPIC_VERSION = "2023-06-01"
COUNT_TOKENS_PATH = "/messages/count_tokens"


class Messages(RemoteFormat):
    name = "anthropic"
    path = "/messages"
    base_url_setting = "ANTHROPIC_BASE_URL"
    stop_field = "stop_sequences"
    prompt_usage, completion_usage = "input_tokens", "output_tokens"
    # A JSON answer is asked as the one tool the reply must call: no room for the client's tools.
    answers_json_with_tools = False

    def body(self, model_name, messages, max_tokens):
        """The API takes system instructions apart from the conversation, as
        one text, and tools' results as blocks of the user's turn."""
        system = [m["content"] for m in messages if m["role"] == "system"]
        body = {"model": model_name, "max_tokens": max_tokens,
                "messages": _turns(m for m in messages if m["role"] != "system")}
        if system:
            body["system"] = "\n\n".join(system)
        return body

    def count_tokens(self, transport, model_name, messages, api_key, deadline, tool_use=None):
        """The API's own count (/messages/count_tokens), which takes the
        request's conversation and tools but no max_tokens."""
        _, body, headers = self.request(model_name, messages, 1, None, api_key, None, tool_use)
        del body["max_tokens"]
        counted = transport.post_json(self.name, COUNT_TOKENS_PATH, body, headers, deadline)
        tokens = token_count(counted.get("input_tokens"))
        if tokens is None:
            raise ProviderError(self.name, 200, "malformed response")
        return tokens

    def tool_fields(self, tool_use):
        choice = {"type": TOOL_CHOICES.get(tool_use.choice, "tool")}
        if choice["type"] == "tool":
            choice["name"] = tool_use.choice
        if tool_use.parallel is False and choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
        return {"tools": [_tool(tool) for tool in tool_use.tools], "tool_choice": choice}

    def response_format_fields(self, response_format):
        """The Messages API (2023-06-01) has no response_format: the answer is
        asked as the input of a tool the reply must call, whose schema is the
        answer's (any object for "json_object"); `answer_tool` names it."""
        schema = response_format.schema if response_format.schema is not None else ANY_OBJECT
        tool = {"name": response_format.name, "input_schema": schema}
        if response_format.description is not None:
            tool["description"] = response_format.description
        return {"tools": [tool], "tool_choice": {"type": "tool", "name": response_format.name}}

    def answer_tool(self, response_format):
        return None if response_format is None else response_format.name

    def image_tokens(self, model_name, image):
        return anthropic_image_tokens(image)

    def reply_tool_calls(self, reply):
        for block in reply["content"]:
            if block.get("type") == "tool_use":
                yield ToolCall(str(block["id"]), str(block["name"]), arguments_text(block["input"]))

    def headers(self, api_key):
        return {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION}

    def reply_text(self, reply):
        """The text blocks of the reply, joined; other blocks (tool use) carry no text."""
        return "".join(part["text"] for part in reply["content"] if part.get("type") == "text")

    def reply_ending(self, reply):
        return self.ending(reply.get("stop_reason"), reply.get("stop_sequence"))

    @staticmethod
    def ending(stop_reason, stop_sequence):
        """max_tokens is "length", stop_sequence names its sequence, tool_use
        is "tool_calls"; the rest (end_turn, refusal, …) is a stop."""
        if not stop_reason:
            return None
        if stop_reason == "stop_sequence" and isinstance(stop_sequence, str):
            return Ending("stop_sequence", stop_sequence)
        return Ending({"max_tokens": "length", "tool_use": "tool_calls"}.get(stop_reason, "stop"))

    def stream_body(self, body):
        return {**body, "stream": True}

    def read_event(self, name, data, stream, state):
        """message_start (input tokens), the content blocks' deltas (text, and
        a tool_use block's input as pieces of JSON), message_delta (output
        tokens so far, stop reason), then message_stop; pings and other
        blocks' deltas carry nothing for the client. message_start's
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
        elif kind == "content_block_start" and event["content_block"].get("type") == "tool_use":
            tools = state.setdefault("tool_blocks", {})
            tools[event["index"]] = len(tools)
            block = event["content_block"]
            return [ToolCallDelta(tools[event["index"]], str(block["id"]), str(block["name"]))]
        elif kind == "content_block_delta" and event["delta"].get("type") == "text_delta":
            return str(event["delta"]["text"])
        elif kind == "content_block_delta" and event["delta"].get("type") == "input_json_delta":
            index = state["tool_blocks"][event["index"]]
            return [ToolCallDelta(index, arguments=str(event["delta"]["partial_json"]))]
        elif kind == "message_stop":
            return END_OF_STREAM
        return None


TOOL_CHOICES = {"auto": "auto", "none": "none", "required": "any"}


def _turns(messages):
    """The conversation as this API's turns: a tool's result is a block of
    the user's turn, and the messages of one role in a row make one turn."""
    turns = []
    for message in messages:
        role = "assistant" if message["role"] == "assistant" else "user"
        blocks = _blocks(message)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] = _as_blocks(turns[-1]["content"]) + blocks
        else:
            turns.append({"role": role, "content": message["content"] if _is_plain(message) else blocks})
    return turns


def _is_plain(message):
    return (message["role"] in ("user", "assistant") and not message.get("tool_calls")
            and isinstance(message["content"], str))


def _blocks(message):
    if message["role"] == "tool":
        result = {"type": "tool_result", "tool_use_id": message["tool_call_id"], "content": message["content"]}
        if message.get("is_error"):
            result["is_error"] = True
        return [result]
    if not isinstance(message["content"], str):
        return [_part(part) for part in message["content"]]
    blocks = [{"type": "text", "text": message["content"]}] if message["content"] else []
    return blocks + [{"type": "tool_use", "id": call.id, "name": call.name, "input": json.loads(call.arguments or "{}")}
                     for call in message.get("tool_calls") or ()]


def _part(part):
    """A part of a user's content: a text block, or an image block whose
    source is its base64 data or its URL."""
    if part["type"] == "text":
        return {"type": "text", "text": part["text"]}
    image = part["image"]
    if image.url is not None:
        return {"type": "image", "source": {"type": "url", "url": image.url}}
    return {"type": "image", "source": {"type": "base64", "media_type": image.media_type, "data": image.data}}


def _as_blocks(content):
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _tool(tool):
    described = {"name": tool.name, "input_schema": tool.parameters}
    if tool.description is not None:
        described["description"] = tool.description
    return described


MESSAGES = Messages()
