"""OpenAI's Chat Completions at OPENAI_BASE_URL; any compatible server works."""
from app.providers.completion import Ending, token_count, usage_part
from app.providers.images import openai_image_tokens
from app.providers.tools import ToolCall, ToolCallDelta
from app.providers.wire import END_OF_STREAM, RemoteFormat, error_event, event_json


class ChatCompletions(RemoteFormat):
    name = "openai"
    path = "/chat/completions"
    stop_field = "stop"

    def body(self, model_name, messages, max_tokens):
        return {"model": model_name, "messages": [_message(message) for message in messages], "max_tokens": max_tokens}

    def request(self, model_name, messages, max_tokens, temperature, api_key, stop=None, tool_use=None,
                response_format=None, reasoning=None):
        """A reasoning model (one called with a Reasoning, even an empty one)
        takes max_completion_tokens: OpenAI's reasoning models refuse max_tokens."""
        path, body, headers = super().request(model_name, messages, max_tokens, temperature, api_key, stop,
                                              tool_use, response_format, reasoning)
        if reasoning is not None:
            body["max_completion_tokens"] = body.pop("max_tokens")
        return path, body, headers

    def reasoning_fields(self, reasoning):
        effort = reasoning.openai_effort()
        return {} if effort is None else {"reasoning_effort": effort}

    def usage_counts(self, usage):
        """prompt_tokens counts the cached ones too (prompt_tokens_details.cached_tokens),
        completion_tokens the reasoning ones (completion_tokens_details.reasoning_tokens);
        this API writes to its cache at no extra price and does not count the writes."""
        usage = usage if isinstance(usage, dict) else {}
        return {"prompt_tokens": token_count(usage.get("prompt_tokens")),
                "completion_tokens": token_count(usage.get("completion_tokens")),
                "cache_read_tokens": token_count(usage_part(usage, "prompt_tokens_details").get("cached_tokens")),
                "reasoning_tokens": token_count(
                    usage_part(usage, "completion_tokens_details").get("reasoning_tokens"))}

    def tool_fields(self, tool_use):
        fields = {"tools": [{"type": "function", "function": _function(tool)} for tool in tool_use.tools]}
        if tool_use.choice in ("auto", "none", "required"):
            fields["tool_choice"] = tool_use.choice
        else:
            fields["tool_choice"] = {"type": "function", "function": {"name": tool_use.choice}}
        if tool_use.parallel is not None:
            fields["parallel_tool_calls"] = tool_use.parallel
        return fields

    def response_format_fields(self, response_format):
        """OpenAI's own response_format, as the client sent it."""
        if response_format.kind == "json_object":
            return {"response_format": {"type": "json_object"}}
        described = {"name": response_format.name, "schema": response_format.schema}
        if response_format.description is not None:
            described["description"] = response_format.description
        if response_format.strict is not None:
            described["strict"] = response_format.strict
        return {"response_format": {"type": "json_schema", "json_schema": described}}

    def image_tokens(self, model_name, image):
        return openai_image_tokens(model_name, image)

    def reply_tool_calls(self, reply):
        for call in reply["choices"][0]["message"].get("tool_calls") or ():
            yield ToolCall(str(call["id"]), str(call["function"]["name"]), str(call["function"]["arguments"] or ""))

    def headers(self, api_key):
        # A self-hosted server configured to need no key gets none.
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def reply_text(self, reply):
        # A reply that is only a tool call or a refusal carries null content.
        return str(reply["choices"][0]["message"]["content"] or "")

    def reply_ending(self, reply):
        return self.ending(reply["choices"][0].get("finish_reason"))

    @staticmethod
    def ending(finish_reason):
        """finish_reason "length" is max_tokens, "tool_calls" (or the older
        "function_call") a call of tools; the rest (stop, content_filter, …) is
        a stop, since the API does not say whether a stop sequence matched."""
        if not finish_reason:
            return None
        return Ending(ENDINGS.get(finish_reason, "stop"))

    def stream_body(self, body):
        # Usage is always asked for, whatever the client wanted: it is what is billed.
        return {**body, "stream": True, "stream_options": {"include_usage": True}}

    def read_event(self, name, data, stream, state):
        """chat.completion.chunk events, the last one with usage and no choices,
        then `[DONE]`."""
        if data == "[DONE]":
            return END_OF_STREAM
        chunk = event_json(data)
        if "error" in chunk:
            raise error_event(chunk["error"])
        if chunk.get("usage") is not None:
            stream.note_usage(self.usage_counts(chunk["usage"]))
        if not chunk.get("choices"):
            return None
        choice = chunk["choices"][0]
        if choice.get("finish_reason"):
            stream.ending = self.ending(choice["finish_reason"])
        delta = choice.get("delta") or {}
        if delta.get("tool_calls"):
            return [_tool_call_delta(call) for call in delta["tool_calls"]]
        return str(delta.get("content") or "")


FAILED_TOOL = "Error: "
ENDINGS = {"length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls"}


def _message(message):
    """A message of the conversation (app/providers/conversation.py) in this format."""
    if message["role"] == "tool":
        # This format has no is_error: a failed tool says so in its content.
        content = f"{FAILED_TOOL}{message['content']}" if message.get("is_error") else message["content"]
        return {"role": "tool", "tool_call_id": message["tool_call_id"], "content": content}
    if not isinstance(message["content"], str):
        if all(part["type"] == "text" for part in message["content"]):
            # Parts that were kept apart only for their cache marks: this API caches by itself.
            return _message({**message, "content": "".join(part["text"] for part in message["content"])})
        return {"role": message["role"], "content": [_part(part) for part in message["content"]]}
    if not message.get("tool_calls"):
        return {"role": message["role"], "content": message["content"]}
    return {"role": "assistant", "content": message["content"] or None,
            "tool_calls": [{"id": call.id, "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments}}
                           for call in message["tool_calls"]]}


def _part(part):
    """A part of a user's content: a text, or an image_url part (its URL, or its data as a data: URL)."""
    if part["type"] == "text":
        return {"type": "text", "text": part["text"]}
    image = part["image"]
    sent = {"url": image.url if image.url is not None else image.data_url()}
    if image.detail is not None:
        sent["detail"] = image.detail
    return {"type": "image_url", "image_url": sent}


def _function(tool):
    function = {"name": tool.name, "parameters": tool.parameters}
    if tool.description is not None:
        function["description"] = tool.description
    return function


def _tool_call_delta(call):
    """A piece of a tool call in a chunk's delta: its index, with its id and
    name in its first piece."""
    function = call.get("function") or {}
    return ToolCallDelta(int(call["index"]), call.get("id"), function.get("name"), str(function.get("arguments") or ""))


CHAT_COMPLETIONS = ChatCompletions()
