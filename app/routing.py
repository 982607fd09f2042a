"""Which deployment serves a held call, with which key, and what moves a call
on to the next one.

A call's candidates are its model and the fallbacks it names (`models`), in
order; each is served by its deployments, in the catalog's order (a model
without any: its own provider, under its id's name). Each deployment a call
may use is a Route: the provider, the key (the user's own for that provider,
else a house key, by the rules of `_key`), the model's prices and the most the
call can cost there. The hold covers the most expensive route; the call is
charged for the one that served, at its model's price.

What moves on to the next route: no connection, a timeout before the first
byte, a 408, 429 or 5xx, and a house key's 401 or 403 (that key leaves its
pool; a 429 cools it down for its Retry-After), and a deployment whose
circuit is open (app/breakers.py) is passed over without a try. Nothing else does: a provider's
4xx about the request reaches the client as it is. Once every route was tried,
the list is tried again (PROVIDER_RETRIES rounds more) after a jittered,
doubling pause, or the Retry-After asked, while the first byte's deadline
allows."""
import logging
import math
import random
import time
from dataclasses import dataclass, field, replace
from decimal import Decimal

from flask import current_app

from app import metrics
from app.breakers import PROBE
from app.errors import KeyUnusable, MissingApiKey, ProviderNotConfigured, ProvidersUnavailable
from app.extensions import breakers, db, health, providers, vault
from app.money import charged, token_cost
from app.observability import describe_error
from app.pricing import Prices
from app.providers import ProviderError, ProviderTimeout, ProviderUnreachable
from database.vault import VaultError

log = logging.getLogger(__name__)

FULL_PRICE = Decimal(1)
# Statuses that say "not now, or not here": the next route may answer.
PASSING_STATUSES = {408, 429}
# A house key's statuses that say the key itself is refused.
REFUSED_KEY_STATUSES = {401, 403}
# The first pause between rounds over the routes, doubling, and the longest.
FIRST_PAUSE, LONGEST_PAUSE = 0.2, 4.0


@dataclass(frozen=True)
class Route:
    """One way to serve a held call: a deployment of one of its models, the
    key it is called with, and what the call costs there."""
    model_id: str
    provider: str
    key_source: str        # "byok", "house" or "local"
    api_key_id: object     # the user's stored key, for "byok"
    prices: Prices
    prompt_price: Decimal  # the most a prompt token may cost (Prices.prompt_bound)
    rate: Decimal          # the share of the catalog cost charged
    prompt_estimate: int
    max_tokens: int
    request: dict = field(repr=False)  # the provider call's arguments, the decrypted key among them

    @property
    def most(self):
        """The most the call can cost on this route: the prompt's and the
        output's parts each rounded up, as the settle charges them."""
        return (charged(token_cost(self.prompt_estimate, self.prompt_price), self.rate)
                + charged(token_cost(self.max_tokens, self.prices.output), self.rate))


def deployments(context):
    """(provider, the model's name there) of each of a model's deployments, in order."""
    listed = context.get("deployments") or []
    if not listed:
        return [(context["provider"], context["model_id"].split("/", 1)[1])]
    return [(deployment["provider"], deployment["model"]) for deployment in listed]


def catalog_deployments(row):
    """`deployments` of a catalog row (db.catalog), which names its model `id`."""
    return deployments({"provider": row["provider"], "model_id": row["id"], "deployments": row["deployments"]})


def routes(user_id, contexts, shape, user_keys, house_key_fallback):
    """The Routes of a call over its candidates' contexts (db.model_call_context
    rows, in order), each deployment whose provider is configured and for which
    a key may be used. `shape(context, provider, model_name)` gives the route's
    (prompt estimate, prompt price, request) or None when the deployment cannot
    take the call (its context is too small). `user_keys`: the user's stored
    keys, newest first. Raises why no route is left when none is."""
    configured = current_app.config["PROVIDERS"]
    own = _own_keys(user_keys)
    first_provider = deployments(contexts[0])[0][0]
    byok_call = first_provider in own
    found, refusal = [], None
    for context in contexts:
        for provider, model_name in deployments(context):
            if provider not in configured:
                log.error("a deployment of %s is on %s, which is not configured: skipped", context["model_id"],
                          provider)
                refusal = refusal or ProviderNotConfigured(details={"provider": provider})
                continue
            key = _key(user_id, configured[provider], own.get(provider), byok_call, house_key_fallback)
            if key is None:
                refusal = refusal or MissingApiKey(details={"provider": provider})
                continue
            shaped = shape(context, provider, model_name)
            if shaped is None:
                continue
            key_source, api_key, rate, api_key_id = key
            estimate, prompt_price, request = shaped
            found.append(Route(context["model_id"], provider, key_source, api_key_id, Prices.of(context),
                               prompt_price, rate, estimate, context["max_tokens"],
                               {**request, "provider": provider, "model_name": model_name, "api_key": api_key}))
    if not found:
        raise refusal or MissingApiKey(details={"provider": first_provider})
    return found


def _own_keys(user_keys):
    """{provider: the user's newest stored key for it}."""
    own = {}
    for stored in user_keys:
        own.setdefault(stored["provider"], stored)
    return own


def _key(user_id, provider, own, byok_call, house_key_fallback):
    """(whose key, the key, the share of the catalog cost charged, the stored
    key's id) a deployment on `provider` is called with, or None when none may
    be: the user's own key for it (BYOK, at BYOK_FEE_RATE); else a house key,
    from its pool, at full price, unless the call is made with the user's own
    key and they did not allow house keys to stand in (`house_key_fallback`),
    since that changes who pays; a local model, or a provider configured to
    need no key, needs none."""
    if not provider.remote:
        return "local", None, FULL_PRICE, None
    if own is not None:
        try:
            api_key = vault.decrypt(own["encryption_kid"], own["nonce"], own["encrypted_key"], user_id,
                                    provider.name)
        except VaultError as exc:
            log.error("a stored key of user %s is unusable: %s", user_id, exc)
            raise KeyUnusable() from None
        return "byok", api_key, current_app.config["BYOK_FEE_RATE"], own["id"]
    if byok_call and not house_key_fallback:
        return None
    if providers.house_keys[provider.name].available() or not provider.needs_key:
        return "house", None, FULL_PRICE, None  # the pool's key is taken as each attempt is made (`keyed`)
    return None


def routed(hold, attempt, first_byte_deadline):
    """What `attempt(route, deadline)` gives on the first route that answers,
    noting it as the one serving the hold (`hold.route`); each route tried in
    turn, then the list again (PROVIDER_RETRIES times more) after a pause, all
    before `first_byte_deadline`. An error that does not move on, or the last
    one when nothing is left, goes on to the caller."""
    config = current_app.config
    rounds = 1 + config["PROVIDER_RETRIES"]
    for round_number in range(rounds):
        failure, passed_over = None, False
        for index, held in enumerate(hold.routes):
            allowed = breakers.allows(deployment(held))
            if not allowed:
                passed_over = True
                continue
            route = keyed(held)
            if route is None:
                if allowed == PROBE:
                    breakers.release(deployment(held))
                continue
            deadline = _attempt_deadline(route, first_byte_deadline, len(hold.routes) - index)
            began = time.monotonic()
            try:
                result = attempt(route, deadline)
            except BaseException as error:
                if not isinstance(error, (ProviderError, ProviderTimeout, ProviderUnreachable)):
                    if allowed == PROBE:
                        breakers.release(deployment(route))  # no answer either way: the next call may probe
                    raise
                if not moves_on(error, route):
                    breakers.succeeded(deployment(route))  # it answered: the fault is the request's
                    raise
                breakers.failed(deployment(route))
                health.attempted(deployment(route), ok=False)
                metrics.provider_attempt(route.provider, route.model_id, ok=False)
                _note_failure(route, error)
                failure = error
                continue
            breakers.succeeded(deployment(route))
            first_token = time.monotonic() - began
            health.attempted(deployment(route), ok=True, first_token_seconds=first_token)
            metrics.provider_attempt(route.provider, route.model_id, ok=True, first_token_seconds=first_token)
            hold.route, hold.began = route, began
            return result
        if failure is None and passed_over:  # every route left has its circuit open, or a probe out
            waited = math.ceil(breakers.retry_in([deployment(route) for route in hold.routes]))
            raise ProvidersUnavailable(headers={"Retry-After": str(waited)}, details={"retry_after": waited})
        if failure is None:  # no route had a key left to try
            raise MissingApiKey(details={"provider": hold.routes[0].provider})
        pause = _pause(round_number, failure)
        if round_number + 1 == rounds or time.monotonic() + pause >= first_byte_deadline:
            raise failure
        log.warning("every route of hold %s failed (%s); trying again in %.2f s", hold.id, _described(failure),
                    pause)
        time.sleep(pause)
    raise AssertionError("unreachable")


SORTS = {"price": lambda route: route.most,
         "latency": lambda route: health.latency(deployment(route)),
         "throughput": lambda route: health.throughput(deployment(route))}


def ordered(found, sort):
    """The routes as `provider.sort` asks: cheapest first, fastest first token
    or most tokens per second over the last 5 minutes (unmeasured last); None
    keeps the declared order. Ties keep it too."""
    return found if sort is None else sorted(found, key=SORTS[sort])


def deployment(route):
    """A route's deployment, as its circuit breaker and its health know it."""
    return deployment_key(route.provider, route.request["model_name"])


def deployment_key(provider, model_name):
    return f"{provider}/{model_name}"


def keyed(route):
    """The route with its provider's next house key, taken for each attempt
    so that a retry uses another key of the pool than one just refused or
    cooling down; None when its pool has none left."""
    if route.key_source != "house" or not providers.house_keys[route.provider]:
        return route
    api_key = providers.house_keys[route.provider].next()
    return None if api_key is None else replace(route, request={**route.request, "api_key": api_key})


def moves_on(error, route):
    """Whether a route's failure lets the next route try: no connection, no
    answer in time, 408, 429, 5xx, or a house key refused."""
    if isinstance(error, (ProviderUnreachable, ProviderTimeout)):
        return True
    if error.status in PASSING_STATUSES or (error.status or 0) >= 500:
        return True
    return error.status in REFUSED_KEY_STATUSES and route.key_source == "house"


def _attempt_deadline(route, first_byte_deadline, routes_left):
    """An attempt's first-byte deadline: its provider's `timeout` where it
    has one, else half the time left while other routes wait, all of it for
    the last; never past the call's."""
    now = time.monotonic()
    configured = current_app.config["PROVIDERS"][route.provider]
    if configured.timeout is not None:
        return min(first_byte_deadline, now + configured.timeout)
    if routes_left > 1:
        return now + (first_byte_deadline - now) / 2
    return first_byte_deadline


def _note_failure(route, error):
    """A house key's 429 cools it down for its Retry-After; its 401 or 403 takes it out of the pool."""
    log.warning("%s failed for %s (%s); moving on", route.provider, route.model_id, _described(error))
    if route.key_source != "house" or not isinstance(error, ProviderError) or route.request["api_key"] is None:
        return
    pool = providers.house_keys[route.provider]
    if error.status == 429:
        pool.cool_down(route.request["api_key"], error.retry_after or FIRST_PAUSE)
    elif error.status in REFUSED_KEY_STATUSES:
        pool.disable(route.request["api_key"])
    else:
        return
    try:  # for the admins' house-key page, whichever worker shows it
        db.note_house_key_failure(route.provider, pool.setting_of(route.request["api_key"]), error.status)
    except Exception as exc:
        log.warning("could not record the failure of a %s house key: %s", route.provider, describe_error(exc))


def _pause(round_number, failure):
    """The pause before the next round: the Retry-After asked, else a doubling pause with full jitter."""
    if isinstance(failure, ProviderError) and failure.retry_after is not None:
        return failure.retry_after
    return random.uniform(0, min(FIRST_PAUSE * 2 ** round_number, LONGEST_PAUSE))


def _described(error):
    if isinstance(error, ProviderError) and error.status is not None:
        return f"status {error.status}"
    return type(error).__name__
