"""Money is Decimal in Python and NUMERIC in PostgreSQL, never float."""
from decimal import Decimal

CENT = Decimal("0.01")


def format_money(amount):
    """Plain decimal notation, exact, trailing zeros dropped down to two
    decimals: 12.5 → "12.50", 0.0000015 → "0.0000015"."""
    amount = Decimal(amount).normalize()
    if amount.as_tuple().exponent > -2:
        amount = amount.quantize(CENT)
    return format(amount, "f")
