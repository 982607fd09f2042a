"""What a call costs, part by part: the input billed at the input price, the
input read from a prompt cache, the input written to it (for 5 minutes or an
hour), and the output, each at the model's price for it. Reasoning tokens are
part of the output, billed once.

The hold prices every prompt token at the highest price a prompt token of
the call can have (`Prices.prompt_bound`), so no mix of the parts costs more.
The parts of the input are rounded together (`charged_parts`): they add up to
their exact sum rounded up once, so the charge never exceeds the hold."""
import logging
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from app.money import SMALLEST_AMOUNT, charged, token_cost

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prices:
    """A model's prices per million tokens (the price book's version
    `version_id`); a cache price is None where the model has none."""
    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None
    version_id: int | None = None

    @classmethod
    def of(cls, row):
        return cls(row["input_price_per_mtok"], row["output_price_per_mtok"], row.get("cache_read_price_per_mtok"),
                   row.get("cache_write_price_per_mtok"), row.get("cache_write_1h_price_per_mtok"),
                   row.get("price_version_id"))

    def prompt_bound(self, cache_marks=()):
        """The most one prompt token of a call can cost: the input price, or a
        cache write's where the call marks a prefix to cache (a 1-hour mark's
        for an hour, priced at the 5-minute price where the model has no
        1-hour one). A provider that caches by itself writes at no premium."""
        bound = self.input
        write = _either(self.cache_write, bound)
        if cache_marks:
            bound = max(bound, write)
        if any(mark.get("ttl") == "1h" for mark in cache_marks):
            bound = max(bound, _either(self.cache_write_1h, write))
        return bound


@dataclass(frozen=True)
class Charge:
    """What a settled call is charged, by part. `prompt_tokens` counts every
    input token, the cached ones read and written among them; the costs are
    what the balance pays (the rate applied, rounded to the ledger's step)."""
    prompt_tokens: int
    completion_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cache_write_1h_tokens: int
    reasoning_tokens: int | None
    input_cost: Decimal
    cached_input_cost: Decimal
    cache_write_cost: Decimal
    output_cost: Decimal

    @property
    def uncached_tokens(self):
        """The input tokens billed at the input price."""
        return self.prompt_tokens - self.cache_read_tokens - self.cache_write_tokens - self.cache_write_1h_tokens

    @property
    def prompt_cost(self):
        return self.input_cost + self.cached_input_cost + self.cache_write_cost

    @property
    def cost(self):
        return self.prompt_cost + self.output_cost


def charge(prices, bound_price, rate, prompt_tokens, completion_tokens, cache_read=0, cache_write=0,
           cache_write_1h=0, reasoning_tokens=None):
    """The Charge of a call's usage (its counts already within the hold's
    bounds). A cache count above what the prompt holds is cut to it (reads
    first), and no part is priced above `bound_price`, the price the hold
    was taken at: the charge never exceeds the hold, whatever is reported."""
    cache_read = min(cache_read, prompt_tokens)
    cache_write = min(cache_write, prompt_tokens - cache_read)
    cache_write_1h = min(cache_write_1h, prompt_tokens - cache_read - cache_write)
    uncached = prompt_tokens - cache_read - cache_write - cache_write_1h
    write_price = _either(prices.cache_write, prices.input)
    costs = charged_parts([
        token_cost(uncached, prices.input),
        token_cost(cache_read, _within(_either(prices.cache_read, prices.input), bound_price, cache_read)),
        token_cost(cache_write, _within(write_price, bound_price, cache_write))
        + token_cost(cache_write_1h, _within(_either(prices.cache_write_1h, write_price), bound_price,
                                             cache_write_1h)),
    ], rate)
    if reasoning_tokens is not None:
        reasoning_tokens = min(reasoning_tokens, completion_tokens)
    return Charge(prompt_tokens, completion_tokens, cache_read, cache_write, cache_write_1h, reasoning_tokens,
                  *costs, charged(token_cost(completion_tokens, prices.output), rate))


def charged_parts(costs, rate):
    """What the balance pays for each of `costs` at `rate`: each within one
    ledger step of its exact amount, together exactly `charged(sum)`, the
    steps left over going to the parts that lost the most to rounding down."""
    exact = [cost * rate for cost in costs]
    parts = [amount.quantize(SMALLEST_AMOUNT, rounding=ROUND_FLOOR) for amount in exact]
    left = int((charged(sum(costs, Decimal(0)), rate) - sum(parts)) / SMALLEST_AMOUNT)
    for index in sorted(range(len(parts)), key=lambda i: parts[i] - exact[i])[:left]:
        parts[index] += SMALLEST_AMOUNT
    return parts


def _either(price, fallback):
    return fallback if price is None else price


def _within(price, bound_price, tokens):
    """`price`, unless it is above the hold's: then the hold's, said in the
    log (the provider reported cache writes the call did not ask for)."""
    if price > bound_price and tokens:
        log.warning("%s cache tokens priced above the hold's price: billed at the hold's", tokens)
    return min(price, bound_price)
