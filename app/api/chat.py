"""Chat sessions and billed messages: endpoints 12–16."""
from flask import current_app

from app import billing
from app.api.answers import answer_call
from app.api.callers import token_subject
from app.api.contract import (ACCOUNT, body, caller, idempotent, other_responses, query, rate_limit, response,
                              streams)
from app.api.formats import session as session_format
from app.api.guards import uuid_from_path
from app.api.openapi import CURSOR, LIMIT
from app.api.pagination import decode_cursor, encode_cursor, newest_first, page_size, paginate, row_id
from app.api.pipeline import OperationBlueprint
from app.access import user_access
from app.errors import MissingApiKey, NotFound, ValidationFailed
from app.extensions import db
from app.schemas import (Message, MessageExchange, NewMessageRequest, NewSessionRequest, Session, SessionPage,
                         SessionWithMessages)

bp = OperationBlueprint("chat", __name__, url_prefix="/chat")


@bp.post("/sessions")
@response(Session, 201)
@other_responses(422)
@caller(ACCOUNT)
@body(NewSessionRequest)
def create_session(caller, new_session):
    """Start a chat session with a catalog model you can call now

    A model that needs a key you have not added (see /models/access) is
    refused with 422 missing_api_key, naming its provider: no session is made."""
    for model_id, access in user_access(caller.user_id, db.catalog(new_session.model_id)).items():
        if not access.callable:
            raise MissingApiKey(details={"provider": access.providers[0], "model_id": model_id})
    session = db.create_session(caller.user_id, new_session.model_id, new_session.title)
    if session is None:
        raise ValidationFailed(details={"model_id": "is not a model of the catalog"})
    return Session.from_row(session), {"Location": f"/api/v1/chat/sessions/{session['id']}"}


@bp.get("/sessions")
@response(SessionPage)
@query(LIMIT, CURSOR)
@caller(ACCOUNT)
def list_sessions(caller):
    """Your sessions, newest first"""
    page, next_cursor = newest_first(lambda limit, after: db.list_sessions(caller.user_id, limit, after=after))
    return SessionPage(sessions=[Session.from_row(row) for row in page], next_cursor=next_cursor)


@bp.get("/sessions/<session_id>")
@response(SessionWithMessages)
@query(LIMIT, CURSOR)
@caller(ACCOUNT)
def show_session(caller, session_id):
    """A session and its messages, oldest first"""
    session = db.session(caller.user_id, uuid_from_path(session_id))
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
@caller(ACCOUNT)
def delete_session(caller, session_id):
    """Delete a session and its messages (its transactions stay)"""
    if not db.delete_session(caller.user_id, uuid_from_path(session_id)):
        raise NotFound()


@bp.post("/sessions/<session_id>/messages")
@rate_limit(lambda: current_app.config["RATE_LIMIT_CHAT"], key=token_subject)
@response(MessageExchange, 201)
@streams(session_format)
@other_responses(402, 409, 422, 502, 504)
@caller(ACCOUNT)
@idempotent()
@body(NewMessageRequest)
def send_message(caller, message, idempotency, session_id):
    """Send a message; the answer is billed per token

    With `"stream": true` (or `Accept: text/event-stream`) the answer comes as
    server-sent events: `delta` {"content"} as it is written, then `done` with
    this operation's 201 body, or `error` with the error body."""
    session_id = uuid_from_path(session_id)
    stream = session_format.asks_for_stream(message)
    hold = billing.hold(caller.user_id, session_id, message.content, message.max_tokens, message.temperature,
                        stream=stream)
    return answer_call(hold, lambda served: session_format.renderer(served, message), stream, idempotency)
