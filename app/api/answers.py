"""A held call's answer (`answer_call`): whole, or streamed as server-sent
events and billed exactly whatever the client does.

A streamed answer is relayed by a thread of its own (a Relay), which reads the
provider's stream to its end, turns each piece into the caller's format (its
renderer, app/api/formats) and puts it in the client's Outbox, then settles on
what the provider reported, as soon as the provider is done, whatever the
client is doing. The server writes the outbox to the client. A client that
stops reading for CLIENT_IDLE_TIMEOUT, or is still reading at the stream's
deadline, is cut off; the relay then reads the rest of the provider's stream
without keeping it for anyone and bills it. A stream the provider cut short is
settled on what came, and the client gets an error event, never a silent end."""
import logging
import socket
import threading
import time
from contextlib import suppress

from flask import current_app, request

from app import billing, metrics
from app.api.formats import event_stream
from app.api.idempotency import json_answer
from app.api.outbox import Outbox
from app.errors import APIError, InternalError, StorageUnavailable, StreamCut
from app.money import format_money
from app.observability import access_log, describe_error, request_id
from app.providers import ProviderStreamCut
from app.providers.reasoning import ThinkingDelta
from database.errors import DatabaseUnavailable

log = logging.getLogger(__name__)


def answer_call(hold, renderer_of, stream, idempotency):
    """A held call's answer, rendered by `renderer_of(hold)` once the route
    that serves it is known, and named by its X-Served-By header (the
    provider's name). Streamed: server-sent events, settled as the provider's
    stream ends, which completes or releases the request's `idempotency`
    record. Else the call is made, then settled and answered (renderer.answer,
    with renderer.status) in one transaction with that record; an answer that
    is an APIError (a session deleted meanwhile) is raised once the charge has
    committed."""
    if stream:
        started = billing.start_stream(hold)
        response = event_stream(Relay(hold, started, renderer_of(hold), idempotency.hand_over()))
    else:
        reply = billing.call(hold)
        renderer = renderer_of(hold)
        answer, _ = settled(hold, reply, renderer, idempotency)
        if isinstance(answer, APIError):
            raise answer
        response = json_answer(answer, renderer.status)
    response.headers["X-Served-By"] = hold.route.provider
    return response


def settled(hold, completion, renderer, record, estimated=False):
    """(the answer, a response model or the APIError to report; the exchange)
    of a call settled in one transaction with its Idempotency-Key record.
    While the database is unavailable the settle is tried again,
    until the hold's deadline plus HOLD_GRACE_SECONDS; then the hold is
    returned (or left for reconcile) and DatabaseUnavailable goes on."""
    attempt = 0
    while True:
        try:
            # With no answer to keep, the settle is one statement committed as it runs.
            with billing.settling(hold, alone=not record.keeps_answer) as tx:
                exchange = billing.settle(hold, completion, tx, estimated)
                answer = renderer.answer(hold, completion, exchange)
                if not isinstance(answer, APIError):
                    record.complete(answer, renderer.status, tx)
                return answer, exchange
        except DatabaseUnavailable:
            pause = billing.settle_retry_pause(hold, attempt)
            if pause is None:
                log.error("hold %s could not be settled: the database stayed unavailable; "
                          "this answer goes unbilled", hold.id)
                billing.release(hold, "settle failed: database unavailable")
                raise
            attempt += 1
            time.sleep(pause)


class Relay:
    """The WSGI body of a streamed answer. Its thread relays and settles the
    stream; iterating the body takes what waits in the outbox; close() (which
    the server calls however the response ends) waits for the thread, so the
    request lasts until its call is settled."""

    def __init__(self, hold, started, renderer, record):
        self.app = current_app._get_current_object()
        self.hold, self.started, self.renderer, self.record = hold, started, renderer, record
        self.outbox = Outbox(self.app.config["CLIENT_IDLE_TIMEOUT"], hold.deadline)
        # The client's connection, to cut off a client that stopped reading (gunicorn gives it).
        self.client = request.environ.get("gunicorn.socket")
        # The request's access-log line goes out with the headers; this one, when the stream ends.
        self.request_id, self.path, self.began = request_id(), request.path, time.perf_counter()
        self.outcome, self.client_cut = "failed", None
        self._thread = threading.Thread(target=self._run, name="stream-relay", daemon=True)
        metrics.stream_opened()
        self._thread.start()

    def __iter__(self):
        return self

    def __next__(self):
        data = self.outbox.take()
        if data is None:
            raise StopIteration
        return data

    def close(self):
        self.outbox.close()
        self._thread.join()
        metrics.stream_closed()
        if not self.outbox.delivered and self.client_cut is None:
            self.outcome = "client left"
        fields = {"request_id": self.request_id, "path": self.path, "outcome": self.outcome,
                  "duration_ms": round((time.perf_counter() - self.began) * 1000, 2),
                  "user_id": str(self.hold.user_id), "buffered_peak_bytes": self.outbox.peak_bytes}
        if self.client_cut:
            fields["client_cut"] = self.client_cut
        access_log.info("stream", extra={"fields": fields})

    def _run(self):
        with self.app.app_context():
            try:
                self._send(self._relay_and_settle())
            except Exception as exc:  # a bug: the client still gets an end, never a broken chunk
                log.error("relaying hold %s failed: %s", self.hold.id, describe_error(exc))
                self._send(self.renderer.failure(InternalError()))
            finally:
                self.outbox.finish()
        if not self.outbox.wait_until_closed():
            self._cut_client()

    def _rendered(self, piece):
        """A piece of the provider's stream as the renderer writes it: text, a tool call's or thinking's piece."""
        if isinstance(piece, str):
            return self.renderer.delta(piece)
        if isinstance(piece, ThinkingDelta):
            return self.renderer.thinking_delta(piece)
        return self.renderer.tool_delta(piece)

    def _relay_and_settle(self):
        """Relays the provider's stream to its end and settles it; the stream's last event."""
        self._send(self.renderer.opening())
        cut = None
        try:
            for piece in self.started.deltas():
                self._send(self._rendered(piece))
        except ProviderStreamCut as exc:
            cut = exc
        except Exception as exc:  # the stream's reader failed: settle on what came
            log.error("stream of hold %s failed: %s", self.hold.id, describe_error(exc))
            cut = exc
        completion, estimated = self.started.reply()
        answer = exchange = None
        try:
            answer, exchange = settled(self.hold, completion, self.renderer, self.record, estimated)
        except DatabaseUnavailable as exc:
            answer = StorageUnavailable(exc.message)
        except APIError as error:
            answer = error
        finally:
            if answer is None or isinstance(answer, APIError):
                self._release_record()
        if isinstance(answer, APIError):
            return self.renderer.failure(answer)
        if cut is not None:
            self.outcome = "cut"
            return self.renderer.failure(StreamCut(details={"provider": self.hold.request["provider"],
                                                          "charged": format_money(exchange.cost)}))
        self.outcome = "completed"
        return self.renderer.closing(answer)

    def _release_record(self):
        """Lets a retry run anew; if the database is gone, the record's own
        stale time lets one take it over instead."""
        try:
            self.record.release()
        except Exception as exc:
            log.warning("the Idempotency-Key record of hold %s was left to expire: %s", self.hold.id,
                        describe_error(exc))

    def _send(self, text):
        """Queues an event for the client; one that stops reading is cut off,
        and from then on nothing is kept for it."""
        if text and not self.outbox.put(text.encode()):
            self._cut_client()

    def _cut_client(self):
        """Ends the client's connection (a server blocked writing to it stops
        at once), unless the response has ended already."""
        if not self.outbox.close():
            return
        self.client_cut = "deadline" if time.monotonic() >= self.hold.deadline else "too slow"
        log.warning("stream of hold %s: client cut off (%s)", self.hold.id, self.client_cut)
        if self.client is not None:
            with suppress(OSError):
                self.client.shutdown(socket.SHUT_RDWR)
