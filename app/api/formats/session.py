"""The chat API's own answer to a message: the 201 MessageExchange, or as
server-sent events `delta` {"content"} as it is written, then `done` with
that body, or `error` with the error body."""
from flask import request

from app.api.formats import replay_events, sse
from app.errors import SessionGone
from app.money import format_money
from app.schemas import Balance, Message, MessageExchange, Usage


def asks_for_stream(message):
    """`"stream": true`, or an Accept header that prefers server-sent events."""
    return message.stream or request.accept_mimetypes.best == "text/event-stream"


def renderer(hold, message):
    return SessionEvents()


def replay(stored_text, message):
    answer = MessageExchange.model_validate_json(stored_text)
    return replay_events(SessionEvents(), answer, answer.assistant_message.content)


class SessionEvents:
    """A chat answer as server-sent events: `delta` events, then `done` with
    the 201 body (or `error`)."""
    status = 201

    def opening(self):
        return ""

    def delta(self, text):
        return sse({"content": text}, "delta") if text else ""

    def thinking_delta(self, delta):
        return ""  # a chat session's model is called without reasoning

    def closing(self, answer):
        return sse(answer.model_dump(mode="json"), "done")

    def failure(self, error):
        return sse({"error": {"code": error.code, "message": error.message, "details": error.details}}, "error")

    def answer(self, hold, reply, exchange):
        if not exchange.saved:
            return SessionGone(details={"charged": format_money(exchange.cost)})
        user_message, assistant_message = (Message.from_row(row) for row in exchange.messages)
        return MessageExchange(
            user_message=user_message, assistant_message=assistant_message,
            usage=Usage(prompt_tokens=exchange.prompt_tokens, completion_tokens=exchange.completion_tokens),
            cost=format_money(exchange.cost), balance=Balance.from_row(exchange.balance))
