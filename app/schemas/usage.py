"""What the user spent: the query of GET /usage and its answer."""
import re
from datetime import date, datetime, timedelta, timezone
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, WithJsonSchema, field_validator

from app.money import format_money
from app.schemas.fields import MoneyText, Response

DEFAULT_USAGE_DAYS = 30
MAX_USAGE_DAYS = 366
GROUPINGS = ("day", "model", "day,model")
DAY_TEXT = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def _day(value):
    """A UTC calendar day written YYYY-MM-DD, and nothing else a date parser
    might take (timestamps, week dates)."""
    if isinstance(value, str) and DAY_TEXT.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError("must be a date written YYYY-MM-DD, such as 2026-11-26")


def _today():
    return datetime.now(timezone.utc).date()


def _days_before(day, days):
    try:
        return day - timedelta(days=days)
    except OverflowError:  # before year 1
        return date.min


Day = Annotated[date, BeforeValidator(_day), WithJsonSchema({"type": "string", "format": "date"})]


class UsageQuery(BaseModel):
    """?from=&to=&group_by=: inclusive UTC days, by default the 30 ending today."""
    model_config = ConfigDict(extra="forbid")

    # `to` is validated first: the default and the checks of `from` depend on it.
    last_day: Day = Field(default_factory=_today, alias="to")
    first_day: Day | None = Field(default=None, alias="from", validate_default=True)
    group_by: Literal[GROUPINGS] = "day,model"

    @field_validator("first_day")
    @classmethod
    def _within_span(cls, first_day, info: ValidationInfo):
        last_day = info.data.get("last_day")
        if last_day is None:  # `to` was refused: its error is the one to tell
            return first_day
        if first_day is None:
            return _days_before(last_day, DEFAULT_USAGE_DAYS - 1)
        if first_day > last_day:
            raise ValueError("must not be after to")
        if (last_day - first_day).days + 1 > MAX_USAGE_DAYS:
            raise ValueError(f"must make a span of at most {MAX_USAGE_DAYS} days with to, both days included")
        return first_day

    @property
    def by_day(self):
        return "day" in self.group_by.split(",")

    @property
    def by_model(self):
        return "model" in self.group_by.split(",")


class UsageRow(Response):
    """Token counts sum the calls whose settle kept them (input not read from
    or written to the cache, cached input read, cache writes for 5 minutes and
    1 hour, output); null when none did, as for calls settled before they were kept."""
    day: date | None
    model_id: str | None
    cost: MoneyText
    requests: int
    input_tokens: int | None
    cached_input_tokens: int | None
    cache_write_tokens: int | None
    output_tokens: int | None

    @classmethod
    def from_row(cls, row):
        return cls(**{**row, "cost": format_money(row["cost"])})


class UsageReport(Response):
    usage: list[UsageRow]
