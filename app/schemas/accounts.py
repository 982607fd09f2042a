"""Accounts and tokens, preferences and activity."""
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field

from app.money import format_money
from app.schemas.charges import ChargeParts
from app.schemas.fields import (Email, GivenPassword, ModelId, MoneyText, NewPassword, NonNegativeAmount,
                                PositiveAmount, Provider, Request, Response, SignedMoneyText, Token, Username)
from database.vocab import THEMES


class RegisterRequest(Request):
    email: Email
    username: Username
    password: NewPassword


class LoginRequest(Request):
    email: Email
    password: GivenPassword


class RefreshRequest(Request):
    """Without refresh_token, the qm_refresh cookie's is used."""
    # Optional but never null; the schema says so, without pydantic's "default": null.
    refresh_token: Token = Field(default=None, json_schema_extra=lambda schema: schema.pop("default"))


class User(Response):
    id: UUID
    email: str
    username: str
    created_at: datetime


class Balance(Response):
    total_balance: MoneyText
    spent_balance: MoneyText
    held_balance: MoneyText
    available_balance: MoneyText
    currency: str

    @classmethod
    def from_row(cls, row):
        amounts = {field: format_money(row[field]) for field in cls.model_fields if field != "currency"}
        return cls(**amounts, currency=row["currency"])


class Profile(User):
    is_admin: bool  # may use the admin API and console pages (read again on every admin request)
    balance: Balance


class TokenPair(Response):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
    user: User


class PreferencesBody(Request):
    """The whole preferences document; a key left out takes its default."""
    default_model_id: ModelId | None = None
    preferred_providers: Annotated[list[Provider], Field(max_length=64)] = []
    daily_spend_limit: NonNegativeAmount | None = None
    max_cost_per_message: NonNegativeAmount | None = None
    theme: Literal[THEMES] = "system"
    # Whether a call made with your own key may fall back to another provider's
    # house key, at the catalog price (off: your keys only).
    house_key_fallback: Annotated[bool, Field(strict=True)] = False
    # Alerts (webhooks, and email when email_alerts): once when a call takes the
    # available balance below this; a top-up back above it re-arms it. Null: off.
    low_balance_threshold: PositiveAmount | None = None
    email_alerts: Annotated[bool, Field(strict=True)] = False


class Preferences(Response):
    default_model_id: str | None
    preferred_providers: list[str]
    daily_spend_limit: MoneyText | None
    max_cost_per_message: MoneyText | None
    theme: str
    house_key_fallback: bool
    low_balance_threshold: MoneyText | None
    email_alerts: bool
    updated_at: datetime | None

    @classmethod
    def from_row(cls, row):
        money = {key: None if row[key] is None else format_money(row[key])
                 for key in ("daily_spend_limit", "max_cost_per_message", "low_balance_threshold")}
        return cls(**{**row, **money})


class ActivityItem(Response):
    kind: Literal["transaction", "message"]
    id: str
    action: str
    amount: MoneyText
    prompt_tokens: int | None
    completion_tokens: int | None
    session_id: str | None
    model_id: str | None
    access_key_id: UUID | None
    created_at: datetime
    charge: ChargeParts | None  # a settle's release: the call's charge by part (null otherwise)

    @classmethod
    def from_row(cls, row):
        return cls(**{**row, "id": str(row["item_id"]), "amount": format_money(row["amount"]),
                      "charge": ChargeParts.from_json(row["charge"])})


class CallActivity(Response):
    """One call or one deposit, as a person reads their account (`?view=calls`).
    `amount` is what it changed the available balance by: a deposit's plus, a
    settled call's charge as a minus, a running call's reservation as a minus
    (also in `reserved`), a failed call's zero (its reservation came back whole)."""
    kind: Literal["call", "deposit"]
    id: str  # the ledger id of the deposit, or of the call's hold
    status: Literal["done", "in_progress", "failed"]
    amount: SignedMoneyText
    reserved: MoneyText | None  # held for the call while it runs; null once it has settled
    prompt_tokens: int | None  # every prompt token billed: uncached, read from and written to the cache
    completion_tokens: int | None
    session_id: str | None
    model_id: str | None  # the model that served a settled call, else the one asked for
    access_key_id: UUID | None
    created_at: datetime
    charge: ChargeParts | None  # a settled call's charge by part
    price_version_id: str | None  # the price book's version a call was priced by (GET /models/…/prices)

    @classmethod
    def from_row(cls, row):
        charge = ChargeParts.from_json(row["charge"])
        common = {key: row[key] for key in ("session_id", "model_id", "access_key_id", "created_at")}
        if row["type"] == "deposit":
            return cls(kind="deposit", id=str(row["id"]), status="done", amount=format_money(row["amount"]),
                       reserved=None, prompt_tokens=None, completion_tokens=None, charge=None,
                       price_version_id=None, **common)
        if row["released"] is None:
            status, change, reserved = "in_progress", -row["amount"], format_money(row["amount"])
        else:
            change, reserved = row["released"] - row["amount"], None
            status = "done" if charge is not None or change else "failed"
        tokens = {"prompt_tokens": None, "completion_tokens": None}
        if charge is not None:
            tokens = {"prompt_tokens": charge.input_tokens + charge.cached_input_tokens + charge.cache_write_tokens
                      + charge.cache_write_1h_tokens, "completion_tokens": charge.output_tokens}
        version = row["price_version_id"]
        return cls(kind="call", id=str(row["id"]), status=status, amount=format_money(change), reserved=reserved,
                   charge=charge, price_version_id=None if version is None else str(version), **tokens, **common)


class ActivityPage(Response):
    # One row per call and deposit (?view=calls, the default), or every ledger
    # entry and chat message (?view=entries).
    activity: list[Annotated[CallActivity | ActivityItem, Field(discriminator="kind")]]
    next_cursor: str | None
