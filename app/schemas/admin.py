"""What operators send and read under /api/v1/admin."""
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, Field

from app.money import format_money
from app.schemas.access_keys import AccessKey
from app.schemas.accounts import Balance
from app.schemas.balance import LedgerEntry
from app.schemas.fields import MoneyText, PositiveAmount, Request, Response, Text
from app.schemas.access_keys import FutureTime
from database.catalog_file import Alias, AliasListModels, CatalogModel, Price
from database.vocab import ADMIN_ACTIONS


def _said(value):
    if not value.strip():
        raise ValueError("must say why, in 1 to 400 characters")
    return value.strip()


# Why an admin acts: required, kept in the audit log.
Reason = Annotated[Text, Field(min_length=1, max_length=400), AfterValidator(_said)]


class ReasonRequest(Request):
    reason: Reason


class MoneyAdjustmentRequest(Request):
    amount: PositiveAmount
    reason: Reason


class NewModelRequest(Request):
    model: CatalogModel
    reason: Reason


class PriceScheduleRequest(Request):
    """A new version of a model's prices, in force from `effective_from` (still to come)."""
    input_price_per_mtok: Price
    output_price_per_mtok: Price
    cache_read_price_per_mtok: Price | None = None
    cache_write_price_per_mtok: Price | None = None
    cache_write_1h_price_per_mtok: Price | None = None
    effective_from: FutureTime
    reason: Reason


class NewAliasListRequest(Request):
    """A name that will stand for `models`, tried in order."""
    alias: Alias
    models: AliasListModels
    reason: Reason


class AliasListChangeRequest(Request):
    """The alias list's models, tried in order, in place of its own."""
    models: AliasListModels
    reason: Reason


class AliasListEntry(Response):
    alias: str
    models: list[str]
    updated_at: datetime


class AliasListPage(Response):
    alias_lists: list[AliasListEntry]


class ScheduledPrice(Response):
    version_id: str
    effective_from: datetime
    audit_id: str | None = None


class ModelChangeRequest(Request):
    """`changes`: any fields of a catalog entry (catalog.json's), checked with the rest of the entry as a load is."""
    changes: Annotated[dict[str, Any], Field(min_length=1)]
    reason: Reason


class AdminUser(Response):
    id: UUID
    email: str
    username: str
    is_active: bool
    is_admin: bool
    created_at: datetime


class AdminUserPage(Response):
    users: list[AdminUser]
    next_cursor: str | None


class AdminAccessKey(AccessKey):
    revoked_at: datetime | None


class AdminCall(Response):
    """A call's hold and what it charged (null while it is open)."""
    hold_id: str
    model_id: str | None
    access_key_id: UUID | None
    held: MoneyText
    charged: MoneyText | None
    open: bool
    created_at: datetime
    call_deadline: datetime | None

    @classmethod
    def from_row(cls, row):
        charged = row["charged"]
        return cls(**{**row, "hold_id": str(row["hold_id"]), "held": format_money(row["held"]),
                      "charged": None if charged is None else format_money(charged)})


class AdminUserFile(Response):
    user: AdminUser
    balance: Balance
    transactions: list[LedgerEntry]
    access_keys: list[AdminAccessKey]
    calls: list[AdminCall]


class MoneyAdjustment(Response):
    transaction: LedgerEntry
    balance: Balance
    audit_id: str


class UserStanding(Response):
    user: AdminUser
    changed: bool


class AdminModel(Response):
    """A catalog entry as catalog.json writes it, prices as decimal strings."""
    model: dict[str, Any]


class AdminModelSummary(Response):
    id: str
    name: str
    active: bool
    input_price_per_mtok: MoneyText
    output_price_per_mtok: MoneyText

    @classmethod
    def from_row(cls, row):
        return cls(**{**row, "input_price_per_mtok": format_money(row["input_price_per_mtok"]),
                      "output_price_per_mtok": format_money(row["output_price_per_mtok"])})


class AdminModelList(Response):
    models: list[AdminModelSummary]


class OverdueHold(Response):
    id: str
    user_id: UUID
    email: str
    amount: MoneyText
    model_id: str | None
    access_key_id: UUID | None
    created_at: datetime
    call_deadline: datetime

    @classmethod
    def from_row(cls, row):
        return cls(**{**row, "id": str(row["id"]), "amount": format_money(row["amount"])})


class OverdueHoldList(Response):
    holds: list[OverdueHold]


class ReconcileResult(Response):
    returned: int
    audit_id: str


class HouseKey(Response):
    """A house key by the setting that holds it (never its value): `unset` (the
    setting is empty), `ready`, `cooling` (answered 429; back after its
    Retry-After) or `refused` (answered 401/403; out until a restart), as the
    worker that answers has seen it; and its last failure (429, 401 or 403) as
    any worker of any instance saw it, with how many there have been."""
    setting: str
    state: Literal["unset", "ready", "cooling", "refused"]
    last_failure_status: int | None = None
    last_failed_at: datetime | None = None
    failures: int = 0


class ProviderKeys(Response):
    provider: str
    needs_key: bool
    keys: list[HouseKey]


class HouseKeyReport(Response):
    providers: list[ProviderKeys]


class AuditEntry(Response):
    id: str
    admin_id: UUID | None  # null: the database's owner, at the command line
    admin_email: str | None
    action: Literal[ADMIN_ACTIONS]
    target_user_id: UUID | None
    target_email: str | None
    target_model: str | None
    reason: str
    details: dict[str, Any]
    created_at: datetime

    @classmethod
    def from_row(cls, row):
        return cls(**{**row, "id": str(row["id"])})


class AuditPage(Response):
    actions: list[AuditEntry]
    next_cursor: str | None
