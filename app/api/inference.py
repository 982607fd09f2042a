"""What the inference API's two formats share (/v1: OpenAI's Chat Completions
and Anthropic's Messages): the caller's model check and hold, each format's
error shape, and the per-key rate limit. A call is billed through the same
hold → call → settle as a chat message; no message text is stored."""
from flask import current_app, g

from app import billing
from app.api.guards import require_model_allowed
from app.errors import register_error_shape
from app.extensions import db
from app.providers import Ending

OPENAI_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "insufficient_quota",
                      403: "permission_error", 404: "not_found_error", 409: "conflict_error",
                      429: "rate_limit_error"}
ANTHROPIC_ERROR_TYPES = {401: "authentication_error", 402: "billing_error", 403: "permission_error",
                         404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                         504: "timeout_error"}


def register_error_shapes(app):
    register_error_shape(app, "/v1/messages", anthropic_error)
    register_error_shape(app, "/v1/", openai_error)


def _sentence(message, details):
    """The message with each named field's problem, as these formats carry no details."""
    fields = "; ".join(f"{name}: {problem}" for name, problem in details.items() if isinstance(problem, str))
    return f"{message} ({fields})" if fields else message


def openai_error(code, message, status, details):
    error_type = OPENAI_ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    param = next(iter(details), None) if code == "validation_error" else None
    return {"error": {"message": _sentence(message, details), "type": error_type, "code": code, "param": param}}


def anthropic_error(code, message, status, details):
    error_type = ANTHROPIC_ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": error_type, "message": _sentence(message, details)}}


def access_key_limit():
    return current_app.config["RATE_LIMIT_ACCESS_KEY"]


def hold(model_id, messages, max_tokens, temperature, fields, stream=False, stop=None):
    """The caller's hold for one call of `model_id` (committed: the call runs
    with no transaction open), after the access key's model check."""
    require_model_allowed(model_id)
    with db.transaction(acting_user_id=g.user_id) as tx:
        return billing.hold_call(g.user_id, model_id, messages, max_tokens, temperature, tx, fields,
                                 access_key=g.access_key, stream=stream, stop=stop)


def ending_of(hold_, reply):
    """Why the answer ended: as its provider said, else "length" when it used
    all of max_tokens and "stop" when not."""
    if reply.ending is not None:
        return reply.ending
    return Ending("length" if reply.has_usage and reply.completion_tokens >= hold_.max_tokens else "stop")


def text_of(content):
    """A message's text: a string, or the concatenation of its text parts."""
    return content if isinstance(content, str) else "".join(part.text for part in content)
