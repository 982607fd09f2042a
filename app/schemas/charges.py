"""A settled call's charge, part by part, as the ledger and the activity feed show it."""
from decimal import Decimal

from app.money import format_money
from app.schemas.fields import MoneyText, Response


class ChargeParts(Response):
    """A settled call's charge by part. `input_tokens` are those billed at the
    input price: none of the cached ones read (`cached_input_tokens`) or
    written (`cache_write_tokens` for 5 minutes, `cache_write_1h_tokens` for
    an hour). `reasoning_tokens` are part of `output_tokens`, never billed
    again (null: not reported). `cost` is the parts' costs added up: what the
    call was charged, at the price of `model_id`, which served it on `provider`."""
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    cache_write_1h_tokens: int
    output_tokens: int
    reasoning_tokens: int | None
    input_cost: MoneyText
    cached_input_cost: MoneyText
    cache_write_cost: MoneyText
    output_cost: MoneyText
    cost: MoneyText
    model_id: str  # the model that served the call: a fallback's, when the call fell back
    provider: str  # the provider that served it

    @classmethod
    def from_json(cls, parts):
        """From charge_parts' JSON (its amounts decimal strings), or None for no parts."""
        if parts is None:
            return None
        costs = {name: Decimal(parts[name]) for name in COST_PARTS}
        return cls(**{**parts, **{name: format_money(cost) for name, cost in costs.items()},
                      "cost": format_money(sum(costs.values()))})


COST_PARTS = ("input_cost", "cached_input_cost", "cache_write_cost", "output_cost")
