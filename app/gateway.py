"""One chat call, billed so that concurrent calls can never overspend:

1. one transaction: read the session's model and prices, the history that fits
   its context window and the user's key, then hold the most the call can cost
   (402 and no provider call when the balance is short), stamped with the
   call's deadline; commit;
2. the provider call, with no database connection held, ended by that deadline
   (PROVIDER_TIMEOUT);
3. one transaction: release what the call did not use (all of it on a failure),
   save both messages with their tokens and cost, count the usage; commit. If
   that fails, the whole hold is returned in a transaction of its own.

A hold whose process died between 1 and 3 is returned by `reconcile_holds`, but
only once its call's deadline and the grace period (HOLD_GRACE_SECONDS, time
for the settle) are past: it never touches a call that may still be running."""
import logging
import time
from dataclasses import dataclass
from decimal import Decimal

from flask import current_app

from app.auth import confirm_token
from app.errors import APIError, NotFound, ValidationFailed
from app.extensions import db
from app.money import format_money
from app.observability import describe_error
from app.providers import (MESSAGE_OVERHEAD_TOKENS, REQUEST_OVERHEAD_TOKENS, ProviderError, ProviderTimeout,
                           ProviderUnreachable, message_tokens_upper_bound, prompt_tokens_upper_bound)
from database.errors import DatabaseUnavailable
from database.vault import VaultError

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 1024
# The ledger's smallest step: a hold is never zero, even on a free model.
SMALLEST_HOLD = Decimal("0.0000000001")


class InsufficientFunds(APIError):
    status = 402
    code = "insufficient_funds"
    message = ("The balance does not cover the most this message can cost; add funds with "
               "POST /api/v1/balance/funds, or lower max_tokens.")


class SpendLimitReached(APIError):
    status = 402
    code = "spend_limit_reached"
    message = ("This message could take today's spending past your daily_spend_limit "
               "(charges, open holds and this hold, UTC day).")


class MissingApiKey(APIError):
    status = 422
    code = "missing_api_key"
    message = "Add an API key for this model's provider first (POST /api/v1/keys)."


class ModelUnavailable(APIError):
    status = 409
    code = "model_unavailable"
    message = "This session's model is no longer offered."


class ProviderFailed(APIError):
    status = 502
    code = "provider_error"
    message = "The model's provider answered with an error; nothing was charged."


class ProviderUnreachableError(ProviderFailed):
    def __init__(self, cause, details):
        super().__init__(f"The model's provider could not be reached ({cause}); nothing was charged. "
                         "Try again later.", details)


class ProviderTimedOut(APIError):
    status = 504
    code = "provider_timeout"
    message = "The model's provider did not answer in time; nothing was charged."


class SessionGone(NotFound):
    message = ("The session was deleted while its message was being answered: the answer was not saved, "
               "but the provider's work was charged.")


class SettleFailed(APIError):
    status = 500
    code = "internal_error"
    message = "The answer could not be saved; nothing was charged. An operator has been told."


class KeyUnusable(APIError):
    status = 500
    code = "internal_error"
    message = "Your stored key for this provider could not be used; an operator has been told."


@dataclass(frozen=True)
class Hold:
    id: int
    model_id: str
    api_key_id: object
    amount: Decimal
    input_price: Decimal
    output_price: Decimal
    prompt_estimate: int
    max_tokens: int


@dataclass(frozen=True)
class Exchange:
    """What a settled call saved and charged."""
    messages: list
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal
    balance: dict


def token_cost(tokens, price_per_mtok):
    """tokens × price / 1,000,000, exactly."""
    return (Decimal(tokens) * price_per_mtok).scaleb(-6)


def send_message(user_id, session_id, content, max_tokens, temperature, answer):
    """Runs one billed call. `answer(tx, exchange)` shapes the response inside the
    settling transaction (so an idempotency record commits with the money)."""
    timeout = current_app.config["PROVIDER_TIMEOUT"]
    # Taken before the hold, whose stored deadline (its transaction's start plus
    # the timeout) is therefore never earlier than the call's.
    deadline = time.monotonic() + timeout
    call, hold = _hold_for_call(user_id, session_id, content, max_tokens, timeout)
    try:
        completion = current_app.extensions["providers"].complete(**call, temperature=temperature, deadline=deadline)
    except ProviderTimeout as exc:
        _return_hold(user_id, hold, "provider timeout")
        log.warning("%s did not answer within PROVIDER_TIMEOUT; hold %s returned", exc.provider, hold.id)
        raise ProviderTimedOut(details={"provider": exc.provider}) from None
    except ProviderUnreachable as exc:
        _return_hold(user_id, hold, "provider unreachable")
        log.warning("%s could not be reached (%s: %s); hold %s returned", exc.provider, exc.error, exc.cause, hold.id)
        raise ProviderUnreachableError(exc.cause, details={"provider": exc.provider}) from None
    except ProviderError as exc:
        _return_hold(user_id, hold, f"provider error {exc.status}")
        raise ProviderFailed(details={"provider": exc.provider, "provider_status": exc.status}) from None
    except BaseException:
        _return_hold(user_id, hold, "unexpected failure")
        raise
    return _settle(user_id, session_id, hold, content, completion, answer)


def _hold_for_call(user_id, session_id, content, max_tokens, timeout):
    with db.transaction(acting_user_id=user_id) as tx:
        context = _call_context(user_id, session_id, content, max_tokens, tx)
        messages = [*context["history"], {"role": "user", "content": content}]
        estimate = prompt_tokens_upper_bound(messages)
        most = max(token_cost(estimate, context["input_price_per_mtok"])
                   + token_cost(context["max_tokens"], context["output_price_per_mtok"]), SMALLEST_HOLD)
        per_message = context["max_cost_per_message"]
        if per_message is not None and most > per_message:
            raise SpendLimitReached(
                "This message could cost more than your max_cost_per_message; lower max_tokens or the limit.",
                details={"max_cost": format_money(most), "max_cost_per_message": format_money(per_message)})
        held = db.hold_funds(user_id, most, f"Hold for a message to {context['model_id']}",
                             {"kind": "chat", "session_id": str(session_id), "model_id": context["model_id"]},
                             daily_limit=context["daily_spend_limit"], call_timeout=timeout, tx=tx)
        if held["reason"] == "spend_limit_reached":
            raise SpendLimitReached(details={"max_cost": format_money(most),
                                             "daily_spend_limit": format_money(context["daily_spend_limit"])})
        if not held["ok"]:
            raise InsufficientFunds(details={"required": format_money(most),
                                             "available": format_money(held["available"])})
    call = {"provider": context["provider"], "model_name": context["model_id"].split("/", 1)[1],
            "messages": messages, "max_tokens": context["max_tokens"], "api_key": context["api_key"]}
    hold = Hold(held["transaction_id"], context["model_id"], context["api_key_id"], most,
                context["input_price_per_mtok"], context["output_price_per_mtok"], estimate, context["max_tokens"])
    return call, hold


def _call_context(user_id, session_id, content, max_tokens, tx):
    """The call's model, limits, key and history, checked; raises the API error
    that stops the call before any hold."""
    try:
        context = db.chat_call_context(
            user_id, session_id, max_tokens, DEFAULT_MAX_TOKENS,
            REQUEST_OVERHEAD_TOKENS + message_tokens_upper_bound(content), MESSAGE_OVERHEAD_TOKENS, tx=tx)
        sealed = context.pop("sealed_key", None)
        context["api_key"] = None if sealed is None else current_app.extensions["vault"].decrypt(
            *sealed, user_id, context["provider"])
    except VaultError as exc:
        log.error("a stored key of user %s is unusable: %s", user_id, exc)
        raise KeyUnusable() from None
    confirm_token(context["token_generation"])
    if context["session_id"] is None:
        raise NotFound()
    if not context["is_active"]:
        raise ModelUnavailable()
    if context["max_tokens"] > context["max_output_tokens"]:
        raise ValidationFailed(details={"max_tokens": f"must be at most {context['max_output_tokens']} for this model"})
    fixed = REQUEST_OVERHEAD_TOKENS + message_tokens_upper_bound(content) + context["max_tokens"]
    if fixed > context["context_window"]:
        raise ValidationFailed(details={"content": "is too long for this model's context window"})
    if context["provider"] != "local" and context["api_key"] is None:
        raise MissingApiKey(details={"provider": context["provider"]})
    return context


def _return_hold(user_id, hold, why):
    """Gives the whole hold back after a failed call or settle (at most once per
    hold, so also harmless if the settle did commit). If that fails too, reconcile
    returns it later."""
    try:
        with db.transaction(acting_user_id=user_id) as tx:
            db.release_hold(user_id, hold.id, hold.amount, "Returned: the call failed", {"reason": why}, tx=tx)
    except Exception as exc:
        log.error("could not return hold %s now (%s); reconcile will", hold.id, describe_error(exc))


def _charges(hold, completion):
    """(prompt tokens, completion tokens, input cost, output cost). Reported
    usage is believed up to what the call could have used (the prompt's upper
    bound, max_tokens), so the charge never exceeds the hold; a reply without
    usage is billed at those bounds."""
    if not completion.has_usage:
        log.warning("provider reply without usage: billed at the hold's estimate (hold %s)", hold.id)
        prompt_tokens, completion_tokens = hold.prompt_estimate, hold.max_tokens
    else:
        prompt_tokens = _within_bound(hold, "prompt_tokens", completion.prompt_tokens, hold.prompt_estimate)
        completion_tokens = _within_bound(hold, "completion_tokens", completion.completion_tokens, hold.max_tokens)
    return (prompt_tokens, completion_tokens,
            token_cost(prompt_tokens, hold.input_price), token_cost(completion_tokens, hold.output_price))


def _within_bound(hold, name, reported, bound):
    if reported <= bound:
        return reported
    log.warning("provider reported %s %s above the call's bound %s (hold %s): billed at the bound",
                name, reported, bound, hold.id)
    return bound


def _settle(user_id, session_id, hold, content, completion, answer):
    """Charges the call and answers. A session deleted meanwhile is still charged
    (the provider did the work) but keeps no messages: 404 with what was charged.
    Any other failure returns the whole hold before answering."""
    prompt_tokens, completion_tokens, input_cost, output_cost = _charges(hold, completion)
    try:
        with db.transaction(acting_user_id=user_id) as tx:
            settled = db.settle_chat_call(
                user_id, session_id, hold, hold.api_key_id,
                {"content": content, "tokens": prompt_tokens, "cost": input_cost},
                {"content": completion.content, "tokens": completion_tokens, "cost": output_cost}, tx=tx)
            if not settled["charged"]:
                log.error("hold %s was already returned: this answer goes unbilled", hold.id)
            if settled["saved"]:
                return answer(tx, _saved_exchange(settled, content, completion, prompt_tokens, completion_tokens))
    except DatabaseUnavailable:
        _return_hold(user_id, hold, "settle failed: database unavailable")
        raise
    except Exception as exc:
        log.error("settling hold %s failed (%s); returning the whole hold", hold.id, describe_error(exc))
        _return_hold(user_id, hold, "settle failed")
        raise SettleFailed() from None
    log.warning("session %s was deleted during its call: hold %s settled, no messages saved", session_id, hold.id)
    raise SessionGone(details={"charged": format_money(settled["input_cost"] + settled["output_cost"])})


def _saved_exchange(settled, content, completion, prompt_tokens, completion_tokens):
    common = {"created_at": settled["created_at"], "prompt_tokens": 0, "completion_tokens": 0}
    messages = [
        {**common, "id": settled["user_message_id"], "role": "user", "content": content,
         "prompt_tokens": prompt_tokens, "cost": settled["input_cost"]},
        {**common, "id": settled["assistant_message_id"], "role": "assistant", "content": completion.content,
         "completion_tokens": completion_tokens, "cost": settled["output_cost"]},
    ]
    return Exchange(messages, prompt_tokens, completion_tokens, settled["input_cost"] + settled["output_cost"], settled)


def reconcile_holds(config):
    """Returns every hold whose call never settled once its call's deadline and
    the grace period are past (holds made before holds had deadlines: their
    creation plus PROVIDER_TIMEOUT); each at most once. Returns how many."""
    returned = 0
    for hold in db.stale_holds(config["PROVIDER_TIMEOUT"], config["HOLD_GRACE_SECONDS"]):
        with db.transaction() as tx:
            released = db.release_hold(hold["user_id"], hold["id"], hold["amount"],
                                       "Returned: the call never settled", {"kind": "reconcile"}, tx=tx)
        if released["ok"]:
            returned += 1
            log.warning("returned hold %s (%s USD) of a call that never settled", hold["id"], hold["amount"])
    return returned
