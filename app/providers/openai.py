"""OpenAI's Chat Completions at OPENAI_BASE_URL; any compatible server works."""
from app.providers.wire import RemoteFormat


class ChatCompletions(RemoteFormat):
    name = "openai"
    path = "/chat/completions"
    base_url_setting = "OPENAI_BASE_URL"
    prompt_usage, completion_usage = "prompt_tokens", "completion_tokens"

    def body(self, model_name, messages, max_tokens):
        return {"model": model_name, "messages": messages, "max_tokens": max_tokens}

    def headers(self, api_key):
        return {"Authorization": f"Bearer {api_key}"}

    def reply_text(self, reply):
        # A reply that is only a tool call or a refusal carries null content.
        return str(reply["choices"][0]["message"]["content"] or "")


CHAT_COMPLETIONS = ChatCompletions()
