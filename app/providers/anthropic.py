"""Anthropic's Messages API at ANTHROPIC_BASE_URL."""
import json

from app.providers.completion import Ending, ProviderError, token_count, usage_part
from app.providers.conversation import ANY_OBJECT, text_part
from app.providers.images import anthropic_image_tokens
from app.providers.reasoning import ThinkingBlock, ThinkingDelta
from app.providers.tools import ToolCall, ToolCallDelta, arguments_text
from app.providers.wire import END_OF_STREAM, RemoteFormat, error_event, event_json

ANTHROPIC_VERSION = "2023-06-01"
COUNT_TOKENS_PATH = "/messages/count_tokens"


class Messages(RemoteFormat):
    name = "anthropic"
    path = "/messages"
    stop_field = "stop_sequences"
    # A JSON answer is asked as the one tool the reply must call: no room for the client's tools.
    answers_json_with_tools = False

    def body(self, model_name, messages, max_tokens):
        """The API takes system instructions apart from the conversation (one
        text, or text blocks where some carry cache marks), and tools' results
        as blocks of the user's turn."""
        system = [m["content"] for m in messages if m["role"] == "system"]
        body = {"model": model_name, "max_tokens": max_tokens,
                "messages": _turns(m for m in messages if m["role"] != "system")}
        if all(isinstance(content, str) for content in system):
            system = "\n\n".join(system)
        else:
            system = [_part(part) for content in system
                      for part in ([text_part(content)] if isinstance(content, str) else content) if part["text"]]
        if system:
            body["system"] = system
        return body

    def reasoning_fields(self, reasoning):
        thinking = reasoning.anthropic_thinking()
        return {} if thinking is None else {"thinking": thinking}

    def usage_counts(self, usage):
        """input_tokens counts only the input neither read from the cache
        (cache_read_input_tokens) nor written to it (cache_creation_input_tokens,
        split by cache_creation into 5-minute and 1-hour writes where the API
        says); output_tokens counts the thinking too, not shown apart. A cache
        count is None when the usage lacks it, so that a later event's usage
        without it leaves an earlier one's."""
        usage = usage if isinstance(usage, dict) else {}
        uncached = token_count(usage.get("input_tokens"))
        written = token_count(usage.get("cache_creation_input_tokens"))
        read = token_count(usage.get("cache_read_input_tokens"))
        written_1h = token_count(usage_part(usage, "cache_creation").get("ephemeral_1h_input_tokens"))
        if written is not None:
            written_1h = min(written_1h or 0, written)
        return {"prompt_tokens": None if uncached is None else uncached + (written or 0) + (read or 0),
                "completion_tokens": token_count(usage.get("output_tokens")),
                "cache_read_tokens": read,
                "cache_write_tokens": None if written is None else written - written_1h,
                "cache_write_1h_tokens": written_1h}

    def reply_thinking(self, reply):
        return tuple(_thinking_block(block) for block in reply["content"]
                     if block.get("type") in ("thinking", "redacted_thinking"))

    def count_tokens(self, endpoint, model_name, messages, api_key, deadline, tool_use=None):
        """The API's own count (/messages/count_tokens), which takes the
        request's conversation and tools but no max_tokens."""
        _, body, headers = self.request(model_name, messages, 1, None, api_key, None, tool_use)
        del body["max_tokens"]
        counted = endpoint.post_json(COUNT_TOKENS_PATH, body, headers, deadline)
        tokens = token_count(counted.get("input_tokens"))
        if tokens is None:
            raise ProviderError(endpoint.name, 200, "malformed response")
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
        return {**({"x-api-key": api_key} if api_key else {}), "anthropic-version": ANTHROPIC_VERSION}

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
            stream.note_usage({**self.usage_counts(event["message"].get("usage")), "completion_tokens": None})
        elif kind == "message_delta":
            stream.note_usage(self.usage_counts(event.get("usage")))
            delta = event["delta"]
            stream.ending = self.ending(delta.get("stop_reason"), delta.get("stop_sequence")) or stream.ending
        elif kind == "content_block_start" and event["content_block"].get("type") == "tool_use":
            tools = state.setdefault("tool_blocks", {})
            tools[event["index"]] = len(tools)
            block = event["content_block"]
            return [ToolCallDelta(tools[event["index"]], str(block["id"]), str(block["name"]))]
        elif kind == "content_block_start" and event["content_block"].get("type") in ("thinking",
                                                                                       "redacted_thinking"):
            thinking = state.setdefault("thinking_blocks", {})
            thinking[event["index"]] = len(thinking)
            block = _thinking_block(event["content_block"])
            return [ThinkingDelta(thinking[event["index"]], block.text, block.signature, block.redacted)]
        elif kind == "content_block_delta" and event["delta"].get("type") in ("thinking_delta", "signature_delta"):
            delta = event["delta"]
            return [ThinkingDelta(state["thinking_blocks"][event["index"]], str(delta.get("thinking", "")),
                                  str(delta.get("signature", "")))]
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
            and isinstance(message["content"], str) and not message.get("cache") and not message.get("thinking"))


def _blocks(message):
    """A message as this API's content blocks: a message's cache mark goes
    on its last block (a part's, on the part's block)."""
    if message["role"] == "tool":
        result = {"type": "tool_result", "tool_use_id": message["tool_call_id"], "content": message["content"]}
        if message.get("is_error"):
            result["is_error"] = True
        blocks = [result]
    elif not isinstance(message["content"], str):
        blocks = [_part(part) for part in message["content"]]
    else:
        blocks = [_thought(block) for block in message.get("thinking") or ()]
        blocks += [{"type": "text", "text": message["content"]}] if message["content"] else []
        blocks += [{"type": "tool_use", "id": call.id, "name": call.name,
                    "input": json.loads(call.arguments or "{}")} for call in message.get("tool_calls") or ()]
    if message.get("cache") and blocks:
        blocks[-1] = _cached(blocks[-1], message["cache"])
    return blocks


def _part(part):
    """A part of a content: a text block, or an image block whose source is
    its base64 data or its URL; with its cache mark, if any."""
    if part["type"] == "text":
        block = {"type": "text", "text": part["text"]}
    elif part["image"].url is not None:
        block = {"type": "image", "source": {"type": "url", "url": part["image"].url}}
    else:
        image = part["image"]
        block = {"type": "image", "source": {"type": "base64", "media_type": image.media_type, "data": image.data}}
    return _cached(block, part.get("cache"))


def _cached(block, cache):
    """The block with the cache mark (cache_control) `cache`, if any."""
    return block if not cache else {**block, "cache_control": cache}


def _thought(block):
    """A ThinkingBlock of an earlier reply, sent back as the API gave it."""
    if block.redacted is not None:
        return {"type": "redacted_thinking", "data": block.redacted}
    return {"type": "thinking", "thinking": block.text, "signature": block.signature}


def _thinking_block(block):
    """The ThinkingBlock of a thinking or redacted_thinking block of a reply."""
    if block["type"] == "redacted_thinking":
        return ThinkingBlock(redacted=str(block["data"]))
    return ThinkingBlock(str(block.get("thinking") or ""), str(block.get("signature") or ""))


def _as_blocks(content):
    """A turn's content as blocks: a plain text's block, or the blocks it already is."""
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _tool(tool):
    described = {"name": tool.name, "input_schema": tool.parameters}
    if tool.description is not None:
        described["description"] = tool.description
    return _cached(described, tool.cache)


MESSAGES = Messages()
