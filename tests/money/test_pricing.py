"""A charge's parts against its hold, for any usage, prices and rate: the
parts are each within one ledger step of their exact cost, add up to the
exact total rounded up once, and never exceed the hold taken at the prompt's
highest price, whatever cache counts a provider reports."""
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from app.money import SMALLEST_AMOUNT, charged, token_cost
from app.pricing import Prices, charge, charged_parts

PRICE = st.decimals(min_value=0, max_value=100, places=4, allow_nan=False, allow_infinity=False)
RATE = st.sampled_from([Decimal(1), Decimal("0.05"), Decimal("0.0333"), Decimal("1.1")])
TOKENS = st.integers(min_value=0, max_value=2_000_000)
MARKS = st.sampled_from([(), ({"type": "ephemeral"},), ({"type": "ephemeral", "ttl": "1h"},)])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.decimals(min_value=0, max_value=10, places=14, allow_nan=False, allow_infinity=False),
                min_size=1, max_size=4), RATE)
def test_parts_add_up_to_the_total_rounded_once(costs, rate):
    parts = charged_parts(costs, rate)
    assert sum(parts) == charged(sum(costs), rate)
    for part, cost in zip(parts, costs):
        assert part >= 0 and abs(part - cost * rate) < SMALLEST_AMOUNT
        assert part == part.quantize(SMALLEST_AMOUNT)


@settings(max_examples=300, deadline=None)
@given(PRICE, PRICE, st.one_of(st.none(), PRICE), st.one_of(st.none(), PRICE), st.one_of(st.none(), PRICE), RATE,
       MARKS, TOKENS, TOKENS, TOKENS, TOKENS, TOKENS, TOKENS)
def test_a_charge_never_exceeds_its_hold(input_price, output_price, read, write, write_1h, rate, marks, prompt_bound,
                                         max_tokens, prompt, read_tokens, write_tokens, write_1h_tokens):
    prices = Prices(input_price, output_price, read, write, write_1h)
    bound_price = prices.prompt_bound(marks)
    hold = charged(token_cost(prompt_bound, bound_price), rate) + charged(token_cost(max_tokens, output_price), rate)
    billed = charge(prices, bound_price, rate, min(prompt, prompt_bound), max_tokens, read_tokens, write_tokens,
                    write_1h_tokens)
    assert billed.cost <= hold
    assert billed.uncached_tokens >= 0
    assert billed.cache_read_tokens + billed.cache_write_tokens + billed.cache_write_1h_tokens <= billed.prompt_tokens


def test_each_part_is_priced_at_its_own_price():
    prices = Prices(Decimal("3"), Decimal("15"), Decimal("0.30"), Decimal("3.75"), Decimal("6"))
    billed = charge(prices, prices.prompt_bound([{"type": "ephemeral", "ttl": "1h"}]), Decimal(1), 2450, 40,
                    cache_read=2000, cache_write=300, cache_write_1h=100, reasoning_tokens=12)
    assert (billed.input_cost, billed.cached_input_cost, billed.cache_write_cost, billed.output_cost) == (
        Decimal("0.00015"), Decimal("0.0006"), Decimal("0.001725"), Decimal("0.0006"))
    assert (billed.uncached_tokens, billed.reasoning_tokens, billed.cost) == (50, 12, Decimal("0.003075"))


def test_the_prompts_highest_price_follows_the_marks():
    prices = Prices(Decimal("3"), Decimal("15"), Decimal("0.30"), Decimal("3.75"), None)
    assert prices.prompt_bound(()) == Decimal("3")
    assert prices.prompt_bound([{"type": "ephemeral"}]) == Decimal("3.75")
    assert prices.prompt_bound([{"type": "ephemeral", "ttl": "1h"}]) == Decimal("3.75")  # no 1-hour price
    assert Prices(Decimal("0.15"), Decimal("0.6"), Decimal("0.075")).prompt_bound([{"type": "ephemeral"}]) == \
        Decimal("0.15")
