"""A held call's answer (`answer_call`): whole, or streamed as server-sent
events and billed exactly whatever the client does. A Relay sends a started provider stream on in its caller's format (a
Writer: OpenAI's chunks, Anthropic's events, or the session API's delta/done),
then settles on what the provider reported. A client that hangs up does not
stop the settle: the rest of the provider's stream is read (within its
deadline) and billed. A stream the provider cut short is settled on what was
delivered, and the client gets an error event, never a silent end. Nothing
stays held: if the response is closed before it was ever read, the hold is
settled then."""
import json
import logging
import time

from flask import current_app, g, request

from app import billing
from app.api.idempotency import defer_idempotency, respond
from app.errors import APIError, StreamCut
from app.money import format_money
from app.observability import access_log, describe_error
from app.providers import ProviderStreamCut

log = logging.getLogger(__name__)
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(data, event=None):
    """One server-sent event."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def event_stream(events):
    return current_app.response_class(events, mimetype="text/event-stream", headers=HEADERS)


def answer_call(hold, writer, stream):
    """A held call's answer. Streamed: server-sent events through `writer`,
    settled as the stream ends. Else the call is made, then settled and
    answered (writer.answer, with writer.status) in one transaction with its
    Idempotency-Key record; an answer that is an APIError (a session deleted
    meanwhile) is raised once the charge has committed."""
    if stream:
        return event_stream(Relay(hold, billing.start_stream(hold), writer, defer_idempotency()))
    reply = billing.call(hold)
    with billing.settling(hold) as tx:
        answer = writer.answer(hold, reply, billing.settle(hold, reply, tx))
        if not isinstance(answer, APIError):
            return respond(answer, writer.status, tx)
    raise answer


class Relay:
    """The WSGI body of a streamed answer: iterating it relays the stream; its
    close() (which the server calls however the response ends) settles it if
    that has not happened yet."""

    def __init__(self, hold, started, writer, record=None):
        self.app = current_app._get_current_object()
        self.hold, self.started, self.writer, self.record = hold, started, writer, record
        self.settled = False
        self.exchange = None
        # The request's access-log line goes out with the headers; this one, when the stream ends.
        self.request_id, self.path, self.began = g.get("request_id"), request.path, time.perf_counter()
        self.outcome = "client left"
        self._events = self._relay()

    def __iter__(self):
        return self

    def __next__(self):
        with self.app.app_context():
            return next(self._events).encode()

    def close(self):
        with self.app.app_context():
            self._events.close()
            if not self.settled:
                self._drain()
                self._settle()
            access_log.info("stream", extra={"fields": {
                "request_id": self.request_id, "path": self.path, "outcome": self.outcome,
                "duration_ms": round((time.perf_counter() - self.began) * 1000, 2), "user_id": str(self.hold.user_id)}})

    def _relay(self):
        yield self.writer.opening()
        yield self.writer.delta(self.started.first)
        cut = None
        try:
            for piece in self.started.deltas:
                yield self.writer.delta(piece)
        except ProviderStreamCut as exc:
            cut = exc
        except Exception as exc:  # the stream's reader failed: settle on what came
            log.error("stream of hold %s failed: %s", self.hold.id, describe_error(exc))
            cut = exc
        outcome = self._settle()
        self.outcome = "failed" if isinstance(outcome, APIError) else "cut" if cut is not None else "completed"
        if isinstance(outcome, APIError):
            yield self.writer.failure(outcome)
        elif cut is not None:
            yield self.writer.failure(StreamCut(details={"provider": self.hold.request["provider"],
                                                         "charged": format_money(self.exchange.cost)}))
        else:
            yield self.writer.closing(outcome)

    def _drain(self):
        """Reads what the provider still sends, to bill it; its deadline bounds this."""
        try:
            for _ in self.started.deltas:
                pass
        except Exception as exc:
            log.warning("stream of hold %s ended early after its client left: %s", self.hold.id,
                        describe_error(exc))

    def _settle(self):
        """The answer (a response model), or the APIError to report; once."""
        self.settled = True
        completion, estimated = billing.streamed_reply(self.hold, self.started.stream)
        try:
            with billing.settling(self.hold) as tx:
                self.exchange = exchange = billing.settle(self.hold, completion, tx, estimated)
                answer = self.writer.answer(self.hold, completion, exchange)
                if self.record is not None and not isinstance(answer, APIError):
                    self.record.complete(answer, self.writer.status, tx)
                    self.record = None
            return answer
        except APIError as error:
            return error
        finally:
            if self.record is not None:
                self.record.release()
