"""The balance and its ledger."""
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field

from app.money import format_money
from app.schemas.accounts import Balance
from app.schemas.charges import ChargeParts
from app.schemas.fields import MoneyText, Request, Response, TopUpAmount
from database.vocab import TRANSACTION_TYPES


class TopUpRequest(Request):
    amount: TopUpAmount


class LedgerEntry(Response):
    id: str
    type: Literal[TRANSACTION_TYPES]
    amount: MoneyText
    available_after: MoneyText
    related_transaction_id: str | None
    description: str
    model_id: str | None
    access_key_id: UUID | None
    created_at: datetime
    charge: ChargeParts | None = None  # a settle's release: the call's charge by part (null before they were kept)
    # A hold's, or its charge's, price version (GET /models/{provider}/{name}/prices); null for other entries.
    price_version_id: str | None = None

    @classmethod
    def from_row(cls, row):
        related = row["related_transaction_id"]
        return cls(**{**row, "id": str(row["id"]), "amount": format_money(row["amount"]),
                      "available_after": format_money(row["available_after"]),
                      "related_transaction_id": None if related is None else str(related),
                      "price_version_id": None if row.get("price_version_id") is None
                      else str(row["price_version_id"]),
                      "charge": ChargeParts.from_json(row.get("charge"))})


class TopUpResponse(Response):
    transaction: LedgerEntry
    balance: Balance


class TransactionPage(Response):
    transactions: list[LedgerEntry]
    next_cursor: str | None


class ServiceTerms(Response):
    """What a call will use and cost, for clients to tell before they make one."""
    self_topup_enabled: bool
    max_topup: MoneyText
    byok_fee_rate: Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?$", examples=["0.05"])]
    house_keys: list[str]
