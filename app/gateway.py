"""One chat call, billed so that concurrent calls can never overspend:

1. one transaction: read the session's model and prices, the history that fits
   its context window and the user's key, then hold the most the call can cost
   (402 and no provider call when the balance is short); commit;
2. the provider call, with no database connection held;
3. one transaction: release what the call did not use (all of it on a failure),
   save both messages with their tokens and cost, count the usage; commit.

A hold whose process died between 1 and 3 is returned by `reconcile_holds`."""
import logging
from dataclasses import dataclass
from decimal import Decimal

from flask import current_app

from app.errors import APIError, NotFound, ValidationFailed
from app.extensions import db
from app.money import format_money
from app.providers import (MESSAGE_OVERHEAD_TOKENS, REQUEST_OVERHEAD_TOKENS, ProviderError, ProviderTimeout,
                           message_tokens_upper_bound, prompt_tokens_upper_bound)
from database.errors import DatabaseUnavailable
from database.vault import VaultError

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 1024
# The ledger's smallest step: a hold is never zero, even on a free model.
SMALLEST_HOLD = Decimal("0.0000000001")


class InsufficientFunds(APIError):
    status = 402
    code = "insufficient_funds"
    message = "The balance does not cover the most this message can cost."


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


class ProviderTimedOut(APIError):
    status = 504
    code = "provider_timeout"
    message = "The model's provider did not answer in time; nothing was charged."


class KeyUnusable(APIError):
    status = 500
    code = "internal_error"
    message = "Your stored key for this provider could not be used; an operator has been told."


@dataclass(frozen=True)
class Hold:
    id: int
    model_id: str
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
    call, hold = _hold_for_call(user_id, session_id, content, max_tokens)
    try:
        completion = current_app.extensions["providers"].complete(**call, temperature=temperature)
    except ProviderTimeout as exc:
        _return_hold(user_id, hold, "provider timeout")
        raise ProviderTimedOut(details={"provider": exc.provider}) from None
    except ProviderError as exc:
        _return_hold(user_id, hold, f"provider error {exc.status}")
        raise ProviderFailed(details={"provider": exc.provider, "provider_status": exc.status}) from None
    except BaseException:
        _return_hold(user_id, hold, "unexpected failure")
        raise
    return _settle(user_id, session_id, hold, content, completion, answer)


def _hold_for_call(user_id, session_id, content, max_tokens):
    with db.transaction(acting_user_id=user_id) as tx:
        target = db.chat_target(user_id, session_id, tx)
        if target is None:
            raise NotFound()
        if not target["is_active"]:
            raise ModelUnavailable()
        max_tokens = _max_tokens(max_tokens, target)
        budget = (target["context_window"] - max_tokens - REQUEST_OVERHEAD_TOKENS
                  - message_tokens_upper_bound(content))
        if budget < 0:
            raise ValidationFailed(details={"content": "is too long for this model's context window"})
        messages = [*db.recent_history(session_id, budget, MESSAGE_OVERHEAD_TOKENS, tx),
                    {"role": "user", "content": content}]
        provider = target["provider"]
        api_key = _api_key(user_id, provider, tx)
        estimate = prompt_tokens_upper_bound(messages)
        most = max(token_cost(estimate, target["input_price_per_mtok"])
                   + token_cost(max_tokens, target["output_price_per_mtok"]), SMALLEST_HOLD)
        held = db.hold_funds(user_id, most, f"Hold for a message to {target['model_id']}",
                             {"kind": "chat", "session_id": str(session_id), "model_id": target["model_id"]}, tx=tx)
        if not held["ok"]:
            raise InsufficientFunds(details={"required": format_money(most),
                                             "available": format_money(held["available"])})
    call = {"provider": provider, "model_name": target["model_id"].split("/", 1)[1], "messages": messages,
            "max_tokens": max_tokens, "api_key": api_key}
    hold = Hold(held["transaction_id"], target["model_id"], most, target["input_price_per_mtok"],
                target["output_price_per_mtok"], estimate, max_tokens)
    return call, hold


def _max_tokens(requested, target):
    limit = target["max_output_tokens"]
    if requested is None:
        return min(limit, DEFAULT_MAX_TOKENS)
    if requested > limit:
        raise ValidationFailed(details={"max_tokens": f"must be at most {limit} for this model"})
    return requested


def _api_key(user_id, provider, tx):
    if provider == "local":
        return None
    try:
        api_key = db.provider_key(user_id, provider, tx)
    except VaultError as exc:
        log.error("stored %s key of user %s is unusable: %s", provider, user_id, exc)
        raise KeyUnusable() from None
    if api_key is None:
        raise MissingApiKey(details={"provider": provider})
    return api_key


def _return_hold(user_id, hold, why):
    """Gives the whole hold back after a failed call. If the database is out of
    reach now, reconcile returns it later."""
    try:
        with db.transaction(acting_user_id=user_id) as tx:
            db.release_hold(user_id, hold.id, hold.amount, "Returned: the call failed", {"reason": why}, tx=tx)
    except DatabaseUnavailable:
        log.error("could not return hold %s now; reconcile will", hold.id)


def _charges(hold, completion):
    """(prompt tokens, completion tokens, input cost, output cost), never above the hold."""
    if not completion.has_usage:
        log.warning("provider reply without usage: billed at the hold's estimate (hold %s)", hold.id)
        prompt_tokens, completion_tokens = hold.prompt_estimate, hold.max_tokens
    else:
        prompt_tokens, completion_tokens = completion.prompt_tokens, completion.completion_tokens
    input_cost = token_cost(prompt_tokens, hold.input_price)
    output_cost = token_cost(completion_tokens, hold.output_price)
    if input_cost + output_cost > hold.amount:
        log.warning("usage above the hold's bound (hold %s): charged the hold", hold.id)
        input_cost = min(input_cost, hold.amount)
        output_cost = hold.amount - input_cost
    return prompt_tokens, completion_tokens, input_cost, output_cost


def _settle(user_id, session_id, hold, content, completion, answer):
    prompt_tokens, completion_tokens, input_cost, output_cost = _charges(hold, completion)
    cost = input_cost + output_cost
    with db.transaction(acting_user_id=user_id) as tx:
        released = db.release_hold(user_id, hold.id, hold.amount - cost, "Unused part of the hold",
                                   {"kind": "settle", "cost": str(cost)}, tx=tx)
        if not released["ok"]:
            # Reconcile already returned the whole hold: this answer goes unbilled.
            log.error("hold %s was settled elsewhere (%s); the call is not charged", hold.id, released["reason"])
            input_cost = output_cost = cost = Decimal(0)
        messages = db.record_exchange(
            user_id, session_id, hold.model_id, hold.id,
            ({"content": content, "tokens": prompt_tokens, "cost": input_cost},
             {"content": completion.content, "tokens": completion_tokens, "cost": output_cost}), tx)
        exchange = Exchange(messages, prompt_tokens, completion_tokens, cost, db.balance(user_id, tx=tx))
        return answer(tx, exchange)


def reconcile_holds(config):
    """Returns every hold older than the provider timeout plus a grace period
    whose call never settled; each at most once. Returns how many."""
    returned = 0
    for hold in db.stale_holds(config["PROVIDER_TIMEOUT"] + config["HOLD_GRACE_SECONDS"]):
        with db.transaction() as tx:
            released = db.release_hold(hold["user_id"], hold["id"], hold["amount"],
                                       "Returned: the call never settled", {"kind": "reconcile"}, tx=tx)
        if released["ok"]:
            returned += 1
            log.warning("returned hold %s (%s USD) of a call that never settled", hold["id"], hold["amount"])
    return returned
