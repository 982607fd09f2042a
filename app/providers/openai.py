"""OpenAI's Chat Completions at OPENAI_BASE_URL; any compatible server works."""
from app.providers.completion import Ending
from app.providers.wire import END_OF_STREAM, RemoteFormat, error_event, event_json


class ChatCompletions(RemoteFormat):
    name = "openai"
    path = "/chat/completions"
    base_url_setting = "OPENAI_BASE_URL"
    stop_field = "stop"
    prompt_usage, completion_usage = "prompt_tokens", "completion_tokens"

    def body(self, model_name, messages, max_tokens):
        return {"model": model_name, "messages": messages, "max_tokens": max_tokens}

    def headers(self, api_key):
        return {"Authorization": f"Bearer {api_key}"}

    def reply_text(self, reply):
        # A reply that is only a tool call or a refusal carries null content.
        return str(reply["choices"][0]["message"]["content"] or "")

    def reply_ending(self, reply):
        return self.ending(reply["choices"][0].get("finish_reason"))

    @staticmethod
    def ending(finish_reason):
        """finish_reason "length" is max_tokens; the rest (stop, content_filter, …)
        is a stop, since the API does not say whether a stop sequence matched."""
        if not finish_reason:
            return None
        return Ending("length" if finish_reason == "length" else "stop")

    def stream_body(self, body):
        # Usage is always asked for, whatever the client wanted: it is what is billed.
        return {**body, "stream": True, "stream_options": {"include_usage": True}}

    def read_event(self, name, data, stream):
        """chat.completion.chunk events, the last one with usage and no choices,
        then `[DONE]`."""
        if data == "[DONE]":
            return END_OF_STREAM
        chunk = event_json(data)
        if "error" in chunk:
            raise error_event(chunk["error"])
        if chunk.get("usage") is not None:
            stream.note_usage(*self.usage_counts(chunk["usage"]))
        if not chunk.get("choices"):
            return None
        choice = chunk["choices"][0]
        if choice.get("finish_reason"):
            stream.ending = self.ending(choice["finish_reason"])
        return str((choice.get("delta") or {}).get("content") or "")


CHAT_COMPLETIONS = ChatCompletions()
