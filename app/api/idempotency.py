"""`Idempotency-Key` for endpoints that move money (SPEC §5).

The first request with a key claims a record (in progress), runs, and stores its
2xx answer in the same transaction as its effect (`respond`). A retry with the
same body replays that answer; another body is 422; a duplicate that arrives
while the first runs is 409. An error answer is not kept. A record is its
caller's: the user and, on the inference API, the access key (a user's own
bearer token is a caller of its own); another caller sending the same key and
body runs afresh, through its own checks, and is never shown the first
answer. No lock is held while the request runs: the record itself says who is running, and until when it may:
an in-progress record is taken over by a retry (its process died) only after
the deadline of the provider call it guards plus HOLD_GRACE_SECONDS, the time
its settle may take, so a retry never runs beside a call still under way. A
streamed answer completes its record when the stream settles (`Idempotency.hand_over`)."""
import hashlib
import json
import re
from dataclasses import dataclass
from decimal import Decimal

from flask import current_app, request
from pydantic import BaseModel

from app.errors import IdempotencyInProgress, IdempotencyKeyReused, ValidationFailed
from app.extensions import db

HEADER = "Idempotency-Key"
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")
# The guarded request's provider call starts moments after the claim (once the
# body is parsed) and ends PROVIDER_TIMEOUT after it starts; this covers the
# moments between, generously.
CALL_START_MARGIN_SECONDS = 5


def _canonical_number(value):
    """One spelling per number (12.5, 12.50 and 1.25e1 alike), kept apart from
    the string "12.5" by a prefix no valid body can hold."""
    return "\x00number:" + format(value.normalize(), "f")


def request_fingerprint():
    """Method, path and the body as canonical JSON: keys sorted, no spaces, each
    number in one spelling (raw bytes when the body does not parse)."""
    raw = request.get_data(cache=True)
    try:
        parsed = json.loads(raw, parse_float=Decimal, parse_int=Decimal)
        body = json.dumps(parsed, sort_keys=True, separators=(",", ":"), default=_canonical_number)
    except (ValueError, RecursionError):
        body = raw.hex()
    return hashlib.sha256(f"{request.method}\n{request.path}\n{body}".encode()).hexdigest()


class Idempotency:
    """The Idempotency-Key record of one request, which the pipeline claims
    (`claim`) before the view runs and closes (`close`) after it. The view
    stores its answer with its effect (`respond`, or `complete` in a settle);
    a stream takes the record over (`hand_over`) and completes or releases it
    when it settles. Without the header every step does nothing."""

    def __init__(self, user_id, key, stale_after):
        self.user_id, self.key, self.stale_after = user_id, key, stale_after
        # Claimed in a commit of its own (not in the view's transaction); its answer stored; left to a stream.
        self._claimed_alone = self._stored = self._handed_over = False

    @classmethod
    def of_request(cls, caller, asks_for_stream):
        """The request's record (a 400 for a malformed key), in the caller's
        own namespace: the client's key as it is for the user's own token, and
        prefixed by the access key's id for an access key, so that each key's
        records are its own. Records stay one per (user, key) row: a release
        before this one reads and writes the same table unchanged."""
        key = request.headers.get(HEADER)
        if key is not None:
            if not KEY_PATTERN.match(key):
                raise ValidationFailed(details={HEADER: "must be 1 to 255 visible ASCII characters"})
            if caller.access_key is not None:
                key = f"{caller.access_key_id}/{key}"
        return cls(caller.user_id, key, _stale_after(current_app.config, asks_for_stream))

    def claim(self, tx=None):
        """Claims the record (in `tx`, the view's transaction, when given). The
        Stored answer of a request already answered; None when this one is to
        run. 422 for another request under the key, 409 while it runs."""
        if self.key is None:
            return None
        outcome, record = db.claim_idempotency_key(self.user_id, self.key, request_fingerprint(), self.stale_after,
                                                   tx=tx)
        if outcome == "mismatch":
            raise IdempotencyKeyReused()
        if outcome == "in_progress":
            raise IdempotencyInProgress()
        if outcome != "done":
            self._claimed_alone = tx is None
            return None
        return Stored(record["response_body"], record["response_status"])

    def respond(self, answer, status, tx, headers=None):
        """The JSON response for `answer` (a response model), stored in `tx`,
        the transaction holding the request's effect, so both commit together."""
        text = answer_text(answer)
        self._store(text, status, tx)
        return json_response(text, status, headers)

    @property
    def keeps_answer(self):
        """Whether completing it stores the answer (it came with the header)."""
        return self.key is not None

    def complete(self, answer, status, tx):
        self._store(answer_text(answer), status, tx)

    def _store(self, text, status, tx):
        if self.key is not None:
            db.complete_idempotency_key(self.user_id, self.key, status, text, tx=tx)
            self._stored = True

    def hand_over(self):
        """The record, left for a stream to complete or release when it settles."""
        self._handed_over = True
        return self

    def release(self):
        """Lets a retry run anew."""
        if self.key is not None:
            db.release_idempotency_key(self.user_id, self.key)

    def close(self, failed):
        """After the view: a record it claimed that was neither stored nor
        handed over, or whose view `failed` (raised), is released: an error
        answer is not kept. A record claimed in the view's transaction lives
        and dies with it."""
        if self._claimed_alone and not self._handed_over and (failed or not self._stored):
            self.release()


@dataclass(frozen=True)
class Stored:
    """The answer stored under a record: its JSON text and status."""
    text: str
    status: int

    def response(self):
        return replayed(json_response(self.text, self.status))


def replayed(response):
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _stale_after(config, asks_for_stream):
    """Seconds after its claim that an in-progress record may be taken over:
    the longest its call may run (a stream's STREAM_TIMEOUT when it asks for
    one), the moments before the call starts, and the settle's grace."""
    call = config["STREAM_TIMEOUT"] if asks_for_stream else config["PROVIDER_TIMEOUT"]
    return call + CALL_START_MARGIN_SECONDS + config["HOLD_GRACE_SECONDS"]


def json_answer(answer, status):
    """The JSON response for `answer` (a response model), stored elsewhere if at all."""
    return json_response(answer_text(answer), status)


def answer_text(answer):
    """`answer` (a response model) as the JSON text it is answered and stored as."""
    return current_app.json.dumps(serialise(answer))


def serialise(value):
    """An answer's JSON-ready form: a model dumped as JSON, None as no body."""
    if value is None:
        return ""
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def json_response(text, status, headers=None):
    return current_app.response_class(text + "\n", status=status, mimetype="application/json", headers=headers)
