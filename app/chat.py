"""Chat sessions and billed messages: endpoints 12–16."""
import uuid
from datetime import datetime

from flask import Blueprint, current_app, g

from app import gateway
from app.auth import authenticate, require_auth, token_subject
from app.errors import NotFound, ValidationFailed
from app.extensions import db, limiter
from app.openapi import CURSOR, LIMIT, documented
from app.idempotency import idempotent, respond
from app.money import format_money
from app.pagination import decode_cursor, encode_cursor, page_size, paginate, row_id
from app.requests import json_body
from app.schemas import (Balance, Message, MessageExchange, NewMessageRequest, NewSessionRequest, Session,
                         SessionPage, SessionWithMessages, Usage)

bp = Blueprint("chat", __name__, url_prefix="/chat")


def session_id_from(text):
    """A session id from the URL; anything that is not a UUID is simply not found."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise NotFound() from None


@bp.post("/sessions")
@documented("Start a chat session with a catalog model", {201: Session}, request=NewSessionRequest)
@require_auth
def create_session():
    body = json_body(NewSessionRequest)
    session = db.create_session(g.user_id, body.model_id, body.title)
    if session is None:
        raise ValidationFailed(details={"model_id": "is not a model of the catalog"})
    location = f"/api/v1/chat/sessions/{session['id']}"
    return Session.from_row(session).model_dump(mode="json"), 201, {"Location": location}


@bp.get("/sessions")
@documented("Your sessions, newest first", {200: SessionPage}, query=[LIMIT, CURSOR])
@require_auth
def list_sessions():
    limit = page_size()
    rows = db.list_sessions(g.user_id, limit + 1, after=decode_cursor(datetime.fromisoformat, uuid.UUID))
    page, next_cursor = paginate(rows, limit, lambda last: encode_cursor(last["created_at"].isoformat(), last["id"]))
    return SessionPage(sessions=[Session.from_row(row) for row in page], next_cursor=next_cursor
                       ).model_dump(mode="json")


@bp.get("/sessions/<session_id>")
@documented("A session and its messages, oldest first", {200: SessionWithMessages}, query=[LIMIT, CURSOR])
@require_auth
def show_session(session_id):
    session = db.session(g.user_id, session_id_from(session_id))
    if session is None:
        raise NotFound()
    limit = page_size()
    cursor = decode_cursor(row_id)
    rows = db.list_messages(session["id"], limit + 1, after_id=cursor and cursor[0])
    page, next_cursor = paginate(rows, limit, lambda last: encode_cursor(last["id"]))
    return SessionWithMessages(**Session.from_row(session).model_dump(), next_cursor=next_cursor,
                               messages=[Message.from_row(row) for row in page]).model_dump(mode="json")


@bp.delete("/sessions/<session_id>")
@documented("Delete a session and its messages (its transactions stay)", {204: None})
@require_auth
def delete_session(session_id):
    if not db.delete_session(g.user_id, session_id_from(session_id)):
        raise NotFound()
    return "", 204


@bp.post("/sessions/<session_id>/messages")
@limiter.limit(lambda: current_app.config["RATE_LIMIT_CHAT"], key_func=token_subject)
@documented("Send a message; the answer is billed per token", {201: MessageExchange}, request=NewMessageRequest,
            errors=[402, 409, 422, 502, 504], idempotent=True, rate_limited=True)
@authenticate  # the token's generation is confirmed with the call's context, in one round trip
@idempotent
def send_message(session_id):
    session_id = session_id_from(session_id)
    body = json_body(NewMessageRequest)

    def answer(tx, exchange):
        user_message, assistant_message = (Message.from_row(row) for row in exchange.messages)
        return respond(MessageExchange(
            user_message=user_message,
            assistant_message=assistant_message,
            usage=Usage(prompt_tokens=exchange.prompt_tokens, completion_tokens=exchange.completion_tokens),
            cost=format_money(exchange.cost),
            balance=Balance.from_row(exchange.balance),
        ).model_dump(mode="json"), 201, tx)

    return gateway.send_message(g.user_id, session_id, body.content, body.max_tokens, body.temperature, answer)
