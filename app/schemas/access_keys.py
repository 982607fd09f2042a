"""Access keys, issued for programs: the key itself is shown once, at creation."""
from datetime import datetime, timezone
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field, PlainValidator, WithJsonSchema

from app.money import format_money
from app.schemas.fields import ModelId, MoneyText, PositiveAmount, Request, Response, Text
from database.vocab import SPEND_LIMIT_PERIODS

# More than the catalog holds; a bound on the work a request can ask for.
MAX_ALLOWED_MODELS = 100


def _future_time(value):
    """An ISO 8601 time with its zone, still to come; kept in UTC (PostgreSQL
    takes zone offsets Python reads but it does not)."""
    if not isinstance(value, str):
        raise ValueError('must be an ISO 8601 time with a zone, such as "2030-01-31T00:00:00Z"')
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError('must be an ISO 8601 time with a zone, such as "2030-01-31T00:00:00Z"') from None
    if moment.utcoffset() is None:
        raise ValueError("must name its zone (Z or an offset such as +02:00)")
    try:
        moment = moment.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("must be in the future") from None
    if moment <= datetime.now(timezone.utc):
        raise ValueError("must be in the future")
    return moment


FutureTime = Annotated[datetime, PlainValidator(_future_time), WithJsonSchema(
    {"type": "string", "format": "date-time", "examples": ["2030-01-31T00:00:00Z"]})]
KeyName = Annotated[Text, Field(min_length=1, max_length=100)]
SpendLimitPeriod = Literal[SPEND_LIMIT_PERIODS]


class NewAccessKeyRequest(Request):
    name: KeyName
    # Absent or null: every model.
    allowed_models: Annotated[list[ModelId], Field(min_length=1, max_length=MAX_ALLOWED_MODELS)] | None = None
    spend_limit: PositiveAmount | None = None
    spend_limit_period: SpendLimitPeriod | None = None
    expires_at: FutureTime | None = None


class AccessKey(Response):
    id: UUID
    name: str
    last4: str
    allowed_models: list[str] | None
    spend_limit: MoneyText | None
    spend_limit_period: SpendLimitPeriod | None
    spent: MoneyText
    expires_at: datetime | None
    created_at: datetime
    last_used_at: datetime | None

    @classmethod
    def from_row(cls, row, **extra):
        limit = row["spend_limit"]
        return cls(**{**row, "spend_limit": None if limit is None else format_money(limit),
                      "spent": format_money(row["spent"]), **extra})


class NewAccessKey(AccessKey):
    """The answer to a creation: the only one that holds the key."""
    key: str


class AccessKeyPage(Response):
    access_keys: list[AccessKey]
    next_cursor: str | None
