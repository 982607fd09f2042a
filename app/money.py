"""Money is Decimal in Python and NUMERIC in PostgreSQL, never float."""
from decimal import Decimal

CENT = Decimal("0.01")
# The ledger's NUMERIC(20,10) holds amounts below 10^10.
MONEY_LIMIT = Decimal(10) ** 10


def format_money(amount):
    """Plain decimal notation, exact, trailing zeros dropped down to two
    decimals: 12.5 → "12.50", 0.0000015 → "0.0000015"."""
    amount = Decimal(amount).normalize()
    if amount.as_tuple().exponent > -2:
        amount = amount.quantize(CENT)
    return format(amount, "f")
