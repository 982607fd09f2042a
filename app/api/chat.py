"""Chat sessions and billed messages: endpoints 12–16."""
from flask import Blueprint, current_app, g
from flask import request as flask_request

from app import billing
from app.api.contract import accepts_event_stream, body, other_responses, query, response, streams
from app.api.guards import authenticate, confirm_token, rate_limited, require_auth, token_subject, uuid_from_path
from app.api.idempotency import idempotent
from app.api.openapi import CURSOR, LIMIT
from app.api.pagination import decode_cursor, encode_cursor, newest_first, page_size, paginate, row_id
from app.api.streaming import answer_call, event_stream, sse
from app.errors import NotFound, SessionGone, ValidationFailed
from app.extensions import db
from app.money import format_money
from app.schemas import (Balance, Message, MessageExchange, NewMessageRequest, NewSessionRequest, Session,
                         SessionPage, SessionWithMessages, Usage)

bp = Blueprint("chat", __name__, url_prefix="/chat")


@bp.post("/sessions")
@response(Session, 201)
@require_auth
@body(NewSessionRequest)
def create_session(new_session):
    """Start a chat session with a catalog model"""
    session = db.create_session(g.user_id, new_session.model_id, new_session.title)
    if session is None:
        raise ValidationFailed(details={"model_id": "is not a model of the catalog"})
    return Session.from_row(session), {"Location": f"/api/v1/chat/sessions/{session['id']}"}


@bp.get("/sessions")
@response(SessionPage)
@query(LIMIT, CURSOR)
@require_auth
def list_sessions():
    """Your sessions, newest first"""
    page, next_cursor = newest_first(lambda limit, after: db.list_sessions(g.user_id, limit, after=after))
    return SessionPage(sessions=[Session.from_row(row) for row in page], next_cursor=next_cursor)


@bp.get("/sessions/<session_id>")
@response(SessionWithMessages)
@query(LIMIT, CURSOR)
@require_auth
def show_session(session_id):
    """A session and its messages, oldest first"""
    session = db.session(g.user_id, uuid_from_path(session_id))
    if session is None:
        raise NotFound()
    limit = page_size()
    cursor = decode_cursor(row_id)
    rows = db.list_messages(session["id"], limit + 1, after_id=cursor and cursor[0])
    page, next_cursor = paginate(rows, limit, lambda last: encode_cursor(last["id"]))
    return SessionWithMessages(**Session.from_row(session).model_dump(), next_cursor=next_cursor,
                               messages=[Message.from_row(row) for row in page])


@bp.delete("/sessions/<session_id>")
@response(None, 204)
@require_auth
def delete_session(session_id):
    """Delete a session and its messages (its transactions stay)"""
    if not db.delete_session(g.user_id, uuid_from_path(session_id)):
        raise NotFound()


@bp.post("/sessions/<session_id>/messages")
@rate_limited(lambda: current_app.config["RATE_LIMIT_CHAT"], key_func=token_subject)
@response(MessageExchange, 201)
@streams(200)
@other_responses(402, 409, 422, 502, 504)
@authenticate  # the token is confirmed from the hold's own round trip
@idempotent(replay=lambda stored: _replay(stored))
@body(NewMessageRequest)
def send_message(message, session_id):
    """Send a message; the answer is billed per token

    With `"stream": true` (or `Accept: text/event-stream`) the answer comes as
    server-sent events: `delta` {"content"} as it is written, then `done` with
    this operation's 201 body, or `error` with the error body."""
    session_id = uuid_from_path(session_id)
    stream = _asks_for_stream(message)
    with db.transaction(acting_user_id=g.user_id) as tx:
        hold = billing.hold(g.user_id, session_id, message.content, message.max_tokens, message.temperature, tx,
                            stream=stream)
        confirm_token(hold.token_generation)  # a revoked token rolls the hold back
    return answer_call(hold, SessionEvents(), stream)


def _answer(exchange):
    user_message, assistant_message = (Message.from_row(row) for row in exchange.messages)
    return MessageExchange(
        user_message=user_message,
        assistant_message=assistant_message,
        usage=Usage(prompt_tokens=exchange.prompt_tokens, completion_tokens=exchange.completion_tokens),
        cost=format_money(exchange.cost),
        balance=Balance.from_row(exchange.balance),
    )


def _asks_for_stream(message):
    return message.stream or accepts_event_stream()


class SessionEvents:
    """A chat answer as server-sent events: `delta` events, then `done` with
    the 201 body (or `error`)."""
    status = 201

    def opening(self):
        return ""

    def delta(self, text):
        return sse({"content": text}, "delta") if text else ""

    def closing(self, answer):
        return sse(answer.model_dump(mode="json"), "done")

    def failure(self, error):
        return sse({"error": {"code": error.code, "message": error.message, "details": error.details}}, "error")

    def answer(self, hold, reply, exchange):
        if not exchange.saved:
            return SessionGone(details={"charged": format_money(exchange.cost)})
        return _answer(exchange)


def _replay(stored):
    """A retried stream, answered from the stored exchange: one delta, then done."""
    if not _asks_for_stream(NewMessageRequest.model_validate_json(flask_request.get_data())):
        return None
    answer = MessageExchange.model_validate_json(stored)
    events = SessionEvents()
    return event_stream([events.delta(answer.assistant_message.content) + events.closing(answer)])
