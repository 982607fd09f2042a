"""The only money rules: money is Decimal in Python and NUMERIC(20,10) in
PostgreSQL, never float; how amounts are read, written and costed."""
import re
from decimal import ROUND_CEILING, Decimal

CENT = Decimal("0.01")
# The ledger's NUMERIC(20,10): amounts below 10^10, at most 10 decimals.
MONEY_LIMIT = Decimal(10) ** 10
MONEY_DECIMALS = 10
# The ledger's smallest step: a hold is never zero, even on a free model.
SMALLEST_AMOUNT = Decimal(1).scaleb(-MONEY_DECIMALS)
# What fits the column: at most 10 digits either side of the point.
MONEY_TEXT = re.compile(r"^[0-9]{1,10}(\.[0-9]{1,10})?$")
# Any decimal string, so that "-5" or "1.123456789012" is told what is wrong with it.
DECIMAL_TEXT = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")


def format_money(amount):
    """Plain decimal notation, exact, trailing zeros dropped down to two
    decimals: 12.5 → "12.50", 0.0000015 → "0.0000015"."""
    amount = Decimal(amount).normalize()
    if amount.as_tuple().exponent > -2:
        amount = amount.quantize(CENT)
    return format(amount, "f")


def token_cost(tokens, price_per_mtok):
    """tokens × price / 1,000,000, exactly."""
    return (Decimal(tokens) * price_per_mtok).scaleb(-6)


def charged(cost, rate):
    """What the balance pays for `cost` at `rate` (1, or BYOK_FEE_RATE for a
    call made with the user's own key), rounded up to the ledger's step."""
    return (cost * rate).quantize(SMALLEST_AMOUNT, rounding=ROUND_CEILING)


def parse_decimal(value):
    """A Decimal from a decimal string ("12.50") or a JSON number (parsed as
    Decimal, never float). Booleans, NaN and infinities fail."""
    if isinstance(value, str):
        if not DECIMAL_TEXT.fullmatch(value):
            raise ValueError('must be a decimal number such as "12.50"')
        return Decimal(value)
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise ValueError("must be a decimal string or a number")
    amount = Decimal(value)
    if not amount.is_finite():
        raise ValueError("must be a finite number")
    return amount


def _within_money_column(amount):
    if amount >= MONEY_LIMIT:
        raise ValueError("is too large")
    if amount != round(amount, MONEY_DECIMALS):
        raise ValueError(f"must have at most {MONEY_DECIMALS} decimal places")
    return amount


def non_negative_amount(value):
    amount = parse_decimal(value)
    if amount < 0:
        raise ValueError("must not be negative")
    return _within_money_column(amount)


def positive_amount(value):
    amount = parse_decimal(value)
    if amount <= 0:
        raise ValueError("must be positive")
    return _within_money_column(amount)


def whole_cents(amount):
    if amount != amount.quantize(CENT):
        raise ValueError("must have at most 2 decimal places")
    return amount
