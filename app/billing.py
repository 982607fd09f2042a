"""One chat call, billed so that concurrent calls can never overspend. The view
runs the steps in order:

1. `hold`: read the session's model and prices, the history that fits its
   context window, the user's token generation and key, then hold the most the
   call can cost (402 and no provider call when the balance is short), stamped
   with the call's deadline and a random token that its release must give. The
   read and the hold each commit in their own round trip: the balance row is
   locked only while the hold's statement runs, never while Python works;
2. `call`: the provider call, with no database connection held, ended by that
   deadline (PROVIDER_TIMEOUT); a failed call returns the whole hold;
3. `settle`, in the transaction `settling` opens: release what the call did
   not use, save both messages with their tokens and cost, count the usage. If
   that transaction fails, `settling` returns the whole hold in one of its own.

A hold whose process died between 1 and 3 is returned by `reconcile_holds`, but
only once its call's deadline and the grace period (HOLD_GRACE_SECONDS, time
for the settle) are past: it never touches a call that may still be running."""
import logging
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal

from flask import after_this_request, current_app

from app import metrics, routing, tracing
from app.errors import (PROVIDER_REJECTIONS, InsufficientFunds, InvalidAccessKey, InvalidToken, KeySpendLimitReached,
                        MissingApiKey, ModelNotAllowed, ModelUnavailable, ModelUnpriced, NotFound, ProviderFailed,
                        ProviderTimedOut, ProviderUnreachableError, SettleFailed, SpendLimitReached, UnknownModel,
                        ValidationFailed)
from app.extensions import db, health, providers
from app.money import SMALLEST_AMOUNT, format_money
from app.observability import describe_error, request_id
from app.pricing import Prices, charge
from app.providers import (MESSAGE_OVERHEAD_TOKENS, REQUEST_OVERHEAD_TOKENS, ProviderError, ProviderTimeout,
                           ProviderUnreachable, message_tokens_upper_bound, prompt_tokens_upper_bound)
from app.providers.prompt_size import text_tokens_upper_bound
from app.providers.completion import completion_of
from app.providers.conversation import cache_marks, images
from app.providers.reasoning import MIN_THINKING_BUDGET, Reasoning
from app.providers.tools import calls_tools
from app.routing import Route
from database.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 1024
# Pauses between settle attempts while the database is unavailable: doubling, up to the longest.
SETTLE_FIRST_PAUSE, SETTLE_LONGEST_PAUSE = 0.25, 4.0


@dataclass
class Hold:
    """A held call: what it may cost, and its routes (app/routing.py), the
    one serving it (`route`) first among them until a call is made. The
    served route's model, prices and request are the hold's."""
    id: int
    user_id: object
    session_id: object
    amount: Decimal
    content: str
    routes: tuple = field(repr=False)
    first_byte_deadline: float = 0.0   # time.monotonic() values
    deadline: float = 0.0
    route: Route = field(default=None, repr=False)
    began: float = 0.0  # when the serving route's attempt began (time.monotonic())
    token: object = None  # the random UUID stored with the hold: its release must give it
    request_id: str = None  # the request's, for the call's trace spans (app/tracing.py)

    def __post_init__(self):
        self.route = self.route or self.routes[0]

    @property
    def model_id(self):
        return self.route.model_id

    @property
    def api_key_id(self):
        return self.route.api_key_id

    @property
    def prices(self):
        return self.route.prices

    @property
    def prompt_price(self):
        return self.route.prompt_price

    @property
    def rate(self):
        return self.route.rate

    @property
    def prompt_estimate(self):
        return self.route.prompt_estimate

    @property
    def max_tokens(self):
        return self.route.max_tokens

    @property
    def request(self):
        return self.route.request


@dataclass(frozen=True)
class Exchange:
    """What a settle charged (its app.pricing.Charge), and saved unless the session was gone."""
    saved: bool
    messages: list
    charge: object
    balance: dict

    @property
    def prompt_tokens(self):
        return self.charge.prompt_tokens

    @property
    def completion_tokens(self):
        return self.charge.completion_tokens

    @property
    def cost(self):
        return self.charge.cost


def hold(user_id, session_id, content, max_tokens, temperature, stream=False, tx=None):
    """Holds the most a message in a session can cost (in `tx`, if given;
    else its reads and the hold each go alone, see `_hold`); raises the API
    error that stops the call before any money moves. A streamed call may run
    for STREAM_TIMEOUT (its first text within PROVIDER_TIMEOUT), a plain one for
    PROVIDER_TIMEOUT."""
    deadlines = _deadlines(stream)
    fixed = REQUEST_OVERHEAD_TOKENS + message_tokens_upper_bound(content)
    context = _of_active_user(db.chat_call_context(user_id, session_id, max_tokens, DEFAULT_MAX_TOKENS, fixed,
                                                   MESSAGE_OVERHEAD_TOKENS, tx=tx))
    if context["session_id"] is None:
        raise NotFound()
    if not context["is_active"]:
        raise ModelUnavailable()
    _priced(context)
    messages = [*context["history"], {"role": "user", "content": content}]
    _check_size(context, fixed, {"max_tokens": "max_tokens", "prompt": "content"})
    # A chat asks nothing of a model's reasoning, but its provider is told the model reasons.
    request = {"messages": messages, "max_tokens": context["max_tokens"], "temperature": temperature,
               "reasoning": Reasoning() if "reasoning" in context["features"] else None}
    found = routing.routes(user_id, [context], lambda *_: (prompt_tokens_upper_bound(messages),
                                                           Prices.of(context).input, request),
                           context["user_keys"], context["house_key_fallback"])
    return _hold(user_id, context, found, deadlines, tx, {"kind": "chat", "session_id": str(session_id)},
                 session_id=session_id, content=content)


def hold_call(user_id, call, fields, access_key=None, tx=None):
    """Holds the most a call outside any session can cost (the inference API),
    in `tx`, as `hold` does, within the limits of the access key it comes with
    (its row, or None for a user's own token). `call` is the ModelCall
    (app/providers/conversation.py): its model, and each fallback it names,
    as the client wrote them (an id, an alias or a bare name), resolve to the
    models it may be served by, which the key's allowed_models must hold and
    which must take what the call asks (the catalog's `input_modalities` and
    `features`: tools, a JSON answer, cache marks, reasoning). The hold is for
    the most expensive of its routes (app/routing.py): each image counted at
    the most its provider bills for it (app/providers/images.py), and each
    prompt token at the most it may cost, a cache write's price where the call
    marks a prefix to cache. A fallback too small for the call is left out.
    `fields` names the request's fields in its own format's words, for
    validation errors: {"max_tokens", "prompt", "tools", "response_format"
    (where the format has it)}."""
    deadlines = _deadlines(call.stream)
    contexts = _candidates(user_id, call, access_key, fields, tx)
    primary = contexts[0]
    text_bound = text_tokens_upper_bound(call.messages, call.tool_use, call.response_format)
    pictured = images(call.messages)

    def prompt_bounds(provider, model_name):
        """(the most the prompt takes of the context window, the most it is billed for) on a deployment,
        whose provider measures its images."""
        measure = providers.image_tokens(provider, model_name)
        measured = [measure(image) for image in pictured]
        return (text_bound + sum(size.in_context for size in measured),
                text_bound + sum(size.billed for size in measured))

    _check_size(primary, prompt_bounds(primary["provider"], primary["model_id"].split("/", 1)[1])[0], fields)
    reasoning = {context["model_id"]: _reasoning(context, call, fields) for context in contexts}
    marks = cache_marks(call.messages, call.tool_use)

    def shape(context, provider, model_name):
        in_context, billed = prompt_bounds(provider, model_name)
        if (context["max_tokens"] > context["max_output_tokens"]
                or in_context + context["max_tokens"] > context["context_window"]):
            return None
        request = {"messages": call.messages, "max_tokens": context["max_tokens"], "temperature": call.temperature,
                   "stop": call.stop, "tool_use": call.tool_use, "response_format": call.response_format,
                   "reasoning": reasoning[context["model_id"]]}
        return billed, Prices.of(context).prompt_bound(marks), request

    found = routing.routes(user_id, contexts, shape, primary["user_keys"], primary["house_key_fallback"])
    return _hold(user_id, primary, routing.ordered(found, call.sort), deadlines, tx, {"kind": "api"},
                 access_key=access_key)


def _candidates(user_id, call, access_key, fields, tx=None):
    """The contexts of the call's model and of each fallback it names, in
    order (each model once), each callable as `_callable` says. A name of an
    alias list stands for its models that the caller may call with what the
    call asks, in the list's order; when none may, the first one's refusal
    answers."""
    names = list(dict.fromkeys([call.model, *call.fallbacks]))
    contexts = []
    for index, name in enumerate(names):
        field = "model" if index == 0 else f"models.{call.fallbacks.index(name)}"
        named = replace(call, model=name)
        context = _model_context(user_id, named, tx)
        if context["model_id"] is None and context["listed_models"]:
            found = _listed(user_id, named, context["listed_models"], access_key, fields, tx, field)
        else:
            found = [_callable(context, named, access_key, fields, field)]
        contexts += [context for context in found
                     if context["model_id"] not in (known["model_id"] for known in contexts)]
    return contexts


def _listed(user_id, call, models, access_key, fields, tx, field):
    callable_, refusals = [], []
    for model in models:
        listed = replace(call, model=model)
        try:
            callable_.append(_callable(_model_context(user_id, listed, tx), listed, access_key, fields, field))
        except (UnknownModel, ModelNotAllowed, ValidationFailed) as refusal:
            refusals.append(refusal)
    if not callable_:
        raise refusals[0]
    return callable_


def _model_context(user_id, call, tx=None):
    """db.model_call_context of the model the call names, for an active user."""
    default_max_tokens = DEFAULT_MAX_TOKENS + ((call.reasoning and call.reasoning.budget) or 0)
    return _of_active_user(db.model_call_context(user_id, call.model, call.max_tokens, default_max_tokens, tx=tx))


def _callable(context, call, access_key, fields, field="model"):
    """`context` once the model the call's name resolves to is one the caller
    may call with what the call asks; `field` names the name in the request,
    for the 404 of an unknown one."""
    if context["model_id"] is None or not context["is_active"]:
        raise UnknownModel(details={field: call.model})
    _priced(context)
    allowed = access_key and access_key["allowed_models"]
    if allowed is not None and context["model_id"] not in allowed:
        raise ModelNotAllowed()
    model_id, features = context["model_id"], context["features"]
    if (call.tool_use is not None or calls_tools(call.messages)) and "tools" not in features:
        raise ValidationFailed(details={fields["tools"]: f"are not supported by {model_id}"})
    if images(call.messages) and "image" not in context["input_modalities"]:
        raise ValidationFailed(details={fields["prompt"]: f"hold images, which {model_id} does not take"})
    if call.cache_field is not None and "caching" not in features:
        raise ValidationFailed(details={call.cache_field: f"is not supported by {model_id}, which has no prompt cache"})
    if call.reasoning_field is not None and call.reasoning.asked and "reasoning" not in features:
        raise ValidationFailed(details={call.reasoning_field: f"is not supported by {model_id}, which does not reason"})
    if call.response_format is not None:
        if "structured_output" not in features:
            raise ValidationFailed(details={fields["response_format"]: f"is not supported by {model_id}"})
        if call.tool_use is not None and not providers.answers_json_with_tools(context["provider"]):
            raise ValidationFailed(details={fields["response_format"]: (
                f"cannot be combined with tools for {model_id}, whose JSON answer is itself a tool's call")})
    return context


def _priced(context):
    """A model with no price in force is never served, nor at $0."""
    if context["price_version_id"] is None:
        raise ModelUnpriced(details={"model": context["model_id"]})


def _reasoning(context, call, fields):
    """The Reasoning the provider gets: the call's, on a model that reasons
    (an empty one when the call asks nothing: the provider then knows it
    calls a reasoning model), None on one that does not. A thinking budget
    (the client's own, or the one an effort becomes for Anthropic's models;
    OpenAI's take an effort as it is) must leave room for the answer within
    max_tokens."""
    if "reasoning" not in context["features"]:
        return None
    reasoning = call.reasoning or Reasoning()
    budgeted = reasoning.asked and (reasoning.thinking is not None or context["provider"] == "anthropic")
    budget = reasoning.budget if budgeted else None
    if budget is not None and budget >= context["max_tokens"]:
        field = call.reasoning_field + (".budget_tokens" if reasoning.thinking is not None else "")
        raise ValidationFailed(details={field: (
            f"must leave room for the answer: {budget} thinking tokens need max_tokens above {budget}"
            if budget >= MIN_THINKING_BUDGET else f"must be at least {MIN_THINKING_BUDGET}")})
    return reasoning


def count_prompt_tokens(user_id, call, access_key, fields):
    """How many input tokens a call's prompt would be (nothing is held or
    charged): as its first route's provider counts them where it can
    (Anthropic), else as app.providers estimates them, with the key a call
    would use (an alias list's first model the caller may call)."""
    context = _candidates(user_id, call, access_key, fields)[0]
    route = routing.keyed(routing.routes(user_id, [context], lambda *_: (0, Decimal(0), {}), context["user_keys"],
                                         context["house_key_fallback"])[0])
    if route is None:
        raise MissingApiKey(details={"provider": context["provider"]})
    deadline = time.monotonic() + current_app.config["PROVIDER_TIMEOUT"]
    with _provider_failures("nothing was counted"):
        return providers.count_tokens(route.provider, route.request["model_name"], call.messages,
                                      route.request["api_key"], deadline, call.tool_use)


def _deadlines(stream):
    """(first byte's deadline, the call's deadline, the call's timeout), taken
    before the hold, whose stored deadline (its transaction's start plus the
    timeout) is therefore never earlier than the call's."""
    now, config = time.monotonic(), current_app.config
    timeout = config["STREAM_TIMEOUT"] if stream else config["PROVIDER_TIMEOUT"]
    return now + config["PROVIDER_TIMEOUT"], now + timeout, timeout


def _of_active_user(context):
    """The context, unless its user is gone or deactivated: then no token of
    theirs is valid any more."""
    if context["token_generation"] is None:
        raise InvalidToken()
    return context


def _check_size(context, prompt_tokens, fields):
    if context["max_tokens"] > context["max_output_tokens"]:
        raise ValidationFailed(details={
            fields["max_tokens"]: f"must be at most {context['max_output_tokens']} for this model"})
    if prompt_tokens + context["max_tokens"] > context["context_window"]:
        raise ValidationFailed(details={fields["prompt"]: "is too long for this model's context window"})


def _hold(user_id, context, routes, deadlines, tx, metadata, session_id=None, content=None, access_key=None):
    """Holds the most the call can cost on any of its `routes`; `context` is its first model's."""
    first_byte_deadline, deadline, call_timeout = deadlines
    model_id = context["model_id"]
    most = max(max(route.most for route in routes), SMALLEST_AMOUNT)
    per_message = context["max_cost_per_message"]
    if per_message is not None and most > per_message:
        raise SpendLimitReached(
            "This message could cost more than your max_cost_per_message; lower max_tokens or the limit.",
            details={"max_cost": format_money(most), "max_cost_per_message": format_money(per_message)})
    token = uuid.uuid4()
    with tracing.span("hold", request_id(), model_id=model_id):
        held = db.hold_funds(user_id, most, f"Hold for a message to {model_id}",
                             {**metadata, "model_id": model_id, "key": routes[0].key_source,
                              "price_version_id": context["price_version_id"]},
                             daily_limit=context["daily_spend_limit"], call_timeout=call_timeout,
                             model_id=model_id, access_key_id=access_key and access_key["id"], tx=tx,
                             hold_token=token)
    if held["reason"] == "invalid_access_key":
        raise InvalidAccessKey()
    if held["reason"] == "spend_limit_reached":
        _alert_after_response(user_id, most, context["daily_spend_limit"], access_key)
        raise _spend_limit_reached(most, context["daily_spend_limit"], access_key)
    if not held["ok"]:
        raise InsufficientFunds(details={"required": format_money(most),
                                         "available": format_money(held["available"])})
    metrics.hold_opened(held["transaction_id"])
    return Hold(held["transaction_id"], user_id, session_id, most, content, tuple(routes), first_byte_deadline,
                deadline, token=token, request_id=request_id())


def _alert_after_response(user_id, most, daily_limit, access_key):
    """Once the refused call's transaction has ended (no second connection
    held beside it): the alert for the limit it reached, once per period."""
    def note(response):
        try:
            db.note_spend_limit_reached(user_id, most, daily_limit, access_key and access_key["id"])
        except Exception as exc:
            log.warning("could not note a spend limit reached: %s", describe_error(exc))
        return response
    after_this_request(note)


def _spend_limit_reached(most, daily_limit, access_key):
    """The 402 for a hold the user's daily limit or the access key's limit
    refused (the procedure checks both under one lock and does not say which)."""
    details = {"max_cost": format_money(most)}
    if daily_limit is not None:
        details["daily_spend_limit"] = format_money(daily_limit)
    if access_key is None or access_key["spend_limit"] is None:
        return SpendLimitReached(details=details)
    details["access_key_spend_limit"] = format_money(access_key["spend_limit"])
    if daily_limit is None:
        return KeySpendLimitReached(details=details)
    return SpendLimitReached("This call could pass your daily_spend_limit or the access key's spend limit.",
                             details=details)


def house_keys(config):
    """The remote providers a call can use without a key of the user's own:
    those with a house key, or configured to need none."""
    return [name for name, provider in config["PROVIDERS"].items()
            if provider.remote and (provider.keys or not provider.needs_key)]


def call(hold):
    """The completion of the first of the hold's routes that answers
    (app/routing.py). A failed call returns the whole hold and raises the
    API error that says why."""
    with tracing.span("provider_call", hold.request_id, hold_id=hold.id), _returned_on_failure(hold):
        return routing.routed(hold, lambda route, deadline: providers.complete(**route.request, deadline=deadline),
                              hold.first_byte_deadline)


class StartedStream:
    """A provider's stream whose first text has come. Its reader takes every
    piece (`deltas()`, the first text included), then the Completion it is
    billed on (`reply()`)."""

    def __init__(self, hold, stream, rest, first):
        self.hold, self._stream, self._rest, self._first = hold, stream, rest, first

    def deltas(self):
        yield self._first
        yield from self._rest

    def reply(self):
        """(the Completion a finished or cut stream is billed on, whether part
        of its usage is estimated). Each count the provider reported is billed
        as reported; one it did not is estimated: the prompt at the hold's
        estimate, the completion at the UTF-8 bytes of all the text and tool
        calls it sent (no token is shorter than a byte), at most max_tokens."""
        hold, stream = self.hold, self._stream
        usage = dict(stream.usage)
        estimated = usage["prompt_tokens"] is None or usage["completion_tokens"] is None
        if estimated:
            log.warning("stream without full usage: billed on an estimate (hold %s)", hold.id)
        if usage["prompt_tokens"] is None:
            usage["prompt_tokens"] = hold.prompt_estimate
        tool_calls, thinking = stream.tool_calls, stream.thinking
        if usage["completion_tokens"] is None:
            written = stream.text + "".join(call.id + call.name + call.arguments for call in tool_calls)
            written += "".join(block.text + block.signature + (block.redacted or "") for block in thinking)
            usage["completion_tokens"] = min(len(written.encode()), hold.max_tokens)
        return completion_of(stream.text, usage, stream.ending, tool_calls, thinking), estimated


def start_stream(hold):
    """The provider's stream, once its first text has come (by
    PROVIDER_TIMEOUT). Until then it fails as `call` does, returning the whole
    hold; the caller reads the rest and settles on its `reply()`."""
    def first_piece(route, first_byte_deadline):
        stream = providers.stream(**route.request, first_byte_deadline=first_byte_deadline, deadline=hold.deadline)
        rest = iter(stream)
        return stream, rest, next(rest, "")

    with tracing.span("provider_call", hold.request_id, hold_id=hold.id, stream=True), _returned_on_failure(hold):
        stream, rest, first = routing.routed(hold, first_piece, hold.first_byte_deadline)
    return StartedStream(hold, stream, rest, first)


def settle_retry_pause(hold, attempt):
    """Seconds to wait before settle attempt `attempt` + 1 when the database
    was unavailable, or None once the hold's deadline plus HOLD_GRACE_SECONDS
    would pass first: reconcile may return the hold from then on."""
    pause = min(SETTLE_FIRST_PAUSE * 2 ** attempt, SETTLE_LONGEST_PAUSE)
    if time.monotonic() + pause >= hold.deadline + current_app.config["HOLD_GRACE_SECONDS"]:
        return None
    return pause


@contextmanager
def _returned_on_failure(hold):
    """Returns the whole hold when the provider call fails, and raises the API
    error that says why."""
    with _provider_failures(f"hold {hold.id} returned", lambda why: release(hold, why)):
        yield


@contextmanager
def _provider_failures(outcome, on_failure=lambda why: None):
    """Raises the API error that says why a provider call failed, after
    `on_failure(why)`; `outcome` ends the log line (what became of the call)."""
    try:
        yield
    except ProviderTimeout as exc:
        on_failure("provider timeout")
        log.warning("%s did not answer within PROVIDER_TIMEOUT; %s", exc.provider, outcome)
        raise ProviderTimedOut(details={"provider": exc.provider}) from None
    except ProviderUnreachable as exc:
        on_failure("provider unreachable")
        log.warning("%s could not be reached (%s: %s); %s", exc.provider, exc.error, exc.cause, outcome)
        raise ProviderUnreachableError(exc.cause, details={"provider": exc.provider}) from None
    except ProviderError as exc:
        on_failure(f"provider error {exc.status}")
        details = {"provider": exc.provider, "provider_status": exc.status}
        if exc.status in PROVIDER_REJECTIONS:  # about the request itself: the client can act on it
            raise PROVIDER_REJECTIONS[exc.status](exc.message, details) from None
        raise ProviderFailed(details=details) from None
    except BaseException:
        on_failure("unexpected failure")
        raise


def release(hold, why):
    """Gives the whole hold back after a failed call or settle (at most once per
    hold, so also harmless if the settle did commit). If that fails too, reconcile
    returns it later."""
    metrics.hold_ended(hold.id)
    try:
        with db.transaction(acting_user_id=hold.user_id) as tx:
            db.release_hold(hold.user_id, hold.id, hold.amount, "Returned: the call failed", {"reason": why}, tx=tx,
                            hold_token=hold.token)
    except Exception as exc:
        log.error("could not return hold %s now (%s); reconcile will", hold.id, describe_error(exc))


@contextmanager
def settling(hold, alone=False):
    """The settling transaction, for `settle` and whatever must commit with it
    (an idempotency record); `alone`: nothing must, and the settle runs as one
    statement committed in its own round trip (None is yielded), so the
    balance row is never locked while Python works. If it fails, the whole
    hold is returned before the error goes on as a 500; but
    DatabaseUnavailable goes on with the hold still held, for the caller to
    try again (`settle_retry_pause`) before it returns the hold."""
    try:
        if alone:
            yield None
            return
        with db.transaction(acting_user_id=hold.user_id) as tx:
            yield tx
    except DatabaseUnavailable:
        raise
    except Exception as exc:
        log.error("settling hold %s failed (%s); returning the whole hold", hold.id, describe_error(exc))
        release(hold, "settle failed")
        raise SettleFailed() from None


def settle(hold, completion, tx, estimated=False):
    """_settle, traced."""
    with tracing.span("settle", hold.request_id, hold_id=hold.id, model_id=hold.model_id) as span:
        exchange = _settle(hold, completion, tx, estimated)
        span.set_attributes({"qmarket.prompt_tokens": exchange.prompt_tokens,
                             "qmarket.completion_tokens": exchange.completion_tokens})
        return exchange


def _settle(hold, completion, tx, estimated=False):
    """Charges the call in `tx` and saves the exchange. A session deleted
    meanwhile is still charged (the provider did the work) but keeps no
    messages: the exchange comes back unsaved. `estimated`: the usage is an
    estimate, as the release row then says."""
    billed = _charge(hold, completion)
    if hold.began:
        health.generated(routing.deployment(hold.route), billed.completion_tokens, time.monotonic() - hold.began)
        metrics.provider_served(hold.route.provider, hold.model_id, time.monotonic() - hold.began)
    settled = db.settle_chat_call(hold.user_id, hold.session_id, hold, hold.api_key_id, hold.content,
                                  completion.content, billed,
                                  {"kind": "settle", "price_version_id": hold.prices.version_id,
                                   **({"usage": "estimated"} if estimated else {})}, tx=tx)
    metrics.hold_ended(hold.id)
    if settled["charged"]:
        metrics.billed(hold.model_id, billed)
    else:
        log.error("hold %s was already returned: this answer goes unbilled", hold.id)
    if not settled["saved"] and hold.session_id is not None:
        log.warning("session %s was deleted during its call: hold %s settled, no messages saved",
                    hold.session_id, hold.id)
    common = {"created_at": settled["created_at"], "prompt_tokens": 0, "completion_tokens": 0}
    prompt_cost = settled["input_cost"] + settled["cached_input_cost"] + settled["cache_write_cost"]
    messages = [
        {**common, "id": settled["user_message_id"], "role": "user", "content": hold.content,
         "prompt_tokens": billed.prompt_tokens, "cost": prompt_cost},
        {**common, "id": settled["assistant_message_id"], "role": "assistant", "content": completion.content,
         "completion_tokens": billed.completion_tokens, "cost": settled["output_cost"]},
    ]
    if not settled["charged"]:
        billed = replace(billed, input_cost=Decimal(0), cached_input_cost=Decimal(0), cache_write_cost=Decimal(0),
                         output_cost=Decimal(0))
    return Exchange(settled["saved"], messages, billed, settled)


def _charge(hold, completion):
    """The call's app.pricing.Charge. Reported usage is believed up to what
    the call could have used (the prompt's upper bound, max_tokens), so the
    charge never exceeds the hold; a reply without usage is billed at those
    bounds, at the input price."""
    if not completion.has_usage:
        log.warning("provider reply without usage: billed at the hold's estimate (hold %s)", hold.id)
        return charge(hold.prices, hold.prompt_price, hold.rate, hold.prompt_estimate, hold.max_tokens)
    return charge(hold.prices, hold.prompt_price, hold.rate,
                  _within_bound(hold, "prompt_tokens", completion.prompt_tokens, hold.prompt_estimate),
                  _within_bound(hold, "completion_tokens", completion.completion_tokens, hold.max_tokens),
                  completion.cache_read_tokens, completion.cache_write_tokens, completion.cache_write_1h_tokens,
                  completion.reasoning_tokens)


def _within_bound(hold, name, reported, bound):
    if reported <= bound:
        return reported
    log.warning("provider reported %s %s above the call's bound %s (hold %s): billed at the bound",
                name, reported, bound, hold.id)
    return bound


def reconcile_holds(config, recent=False, missed_seconds=0.0):
    """Returns every hold whose call never settled once its call's deadline and
    the grace period are past (holds made before holds had deadlines: their
    creation plus PROVIDER_TIMEOUT); each at most once. Returns how many.
    `recent`: only holds made within the longest call, the grace and three
    RECONCILE_INTERVALs, so that a run every interval sees each such hold, even
    past a failed run or two, without reading the whole ledger; and within
    `missed_seconds` more, the time since the last run that worked began, so
    that holds that came due while the database was down are reached too."""
    made_within = None
    if recent:
        made_within = (max(config["PROVIDER_TIMEOUT"], config["STREAM_TIMEOUT"]) + config["HOLD_GRACE_SECONDS"]
                       + 3 * config["RECONCILE_INTERVAL"] + missed_seconds)
    returned = 0
    for stale in db.stale_holds(config["PROVIDER_TIMEOUT"], config["HOLD_GRACE_SECONDS"], made_within):
        with db.transaction() as tx:
            released = db.release_hold(stale["user_id"], stale["id"], stale["amount"],
                                       "Returned: the call never settled", {"kind": "reconcile"}, tx=tx)
        if released["ok"]:
            returned += 1
            metrics.hold_reconciled()
            log.warning("returned hold %s (%s USD) of a call that never settled", stale["id"], stale["amount"])
    return returned


def reconcile_on_schedule(config):
    """This RECONCILE_INTERVAL's run of reconcile, if no worker of any instance
    has claimed it (the schedule is in PostgreSQL): the holds that could have
    come due since the last run that worked began, whoever ran it (the whole
    ledger before the first). Returns how many it returned; None when the run
    was another worker's."""
    run = db.claim_reconcile_run(config["RECONCILE_INTERVAL"])
    if run is None:
        return None
    since = run["seconds_since_reconciled"]
    returned = reconcile_holds(config, recent=since is not None, missed_seconds=since or 0.0)
    db.mark_reconciled(run["started"])
    return returned
