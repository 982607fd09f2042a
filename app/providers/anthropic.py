"""Anthropic's Messages API at ANTHROPIC_BASE_URL."""
from app.providers.wire import RemoteFormat

ANTHROPIC_VERSION = "2023-06-01"


class Messages(RemoteFormat):
    name = "anthropic"
    path = "/messages"
    base_url_setting = "ANTHROPIC_BASE_URL"
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


MESSAGES = Messages()
