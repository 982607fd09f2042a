"""The interface every remote wire format shares: `request` says what to send,
`completion` reads the answer, and the transport does everything between
(connection, deadline, size cap, errors). A format never touches HTTP, so a
streaming variant can later be added per format (a streaming request and a
reader of its events) over the same transport."""
from app.providers.completion import Completion, ProviderError, clean_text, token_count


class RemoteFormat:
    """A provider reached over HTTP. Subclasses set `name`, `path`, the setting
    holding the base URL, and the usage fields holding the two token counts,
    and implement `body`, `headers` and `reply_text`."""

    name = path = base_url_setting = None
    prompt_usage = completion_usage = None

    def complete(self, transport, model_name, messages, max_tokens, temperature, api_key, deadline):
        path, body, headers = self.request(model_name, messages, max_tokens, temperature, api_key)
        return self.completion(transport.post_json(self.name, path, body, headers, deadline))

    def request(self, model_name, messages, max_tokens, temperature, api_key):
        """(path, JSON body, headers). The temperature is sent only when the
        caller chose one, so that the provider's own default holds otherwise."""
        body = self.body(model_name, messages, max_tokens)
        if temperature is not None:
            body["temperature"] = temperature
        return self.path, body, self.headers(api_key)

    def completion(self, reply):
        """The Completion in a reply object; a reply of another shape is the
        provider's fault, reported as such rather than as ours."""
        try:
            content = self.reply_text(reply)
            usage = reply.get("usage") or {}
            return Completion(clean_text(self.name, content), token_count(usage.get(self.prompt_usage)),
                              token_count(usage.get(self.completion_usage)))
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ProviderError(self.name, 200, "malformed response") from None

    def body(self, model_name, messages, max_tokens):
        raise NotImplementedError

    def headers(self, api_key):
        raise NotImplementedError

    def reply_text(self, reply):
        raise NotImplementedError
