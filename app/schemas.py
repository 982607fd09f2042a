"""Request and response bodies, declared once: they validate requests, shape
responses, and describe the API in /openapi.json."""
import re
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema

from app.money import MONEY_TEXT, format_money, non_negative_amount, positive_amount, whole_cents
from database.vocab import (CAPABILITIES, KEY_PROVIDERS, MODEL_ID_MAX_LENGTH, MODEL_ID_PATTERN, PROVIDERS, THEMES,
                            TRANSACTION_TYPES)

USERNAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
# Provider keys (sk-..., sk-proj-..., sk-ant-api03-...) are URL-safe base64-like text.
API_KEY_PATTERN = r"^[A-Za-z0-9._-]+$"
# What a field matching each pattern must look like, in the words of a validation error.
PATTERN_MESSAGES = {
    USERNAME_PATTERN: "may hold only letters, digits, '_', '.' and '-'",
    API_KEY_PATTERN: "may hold only letters, digits, '_', '.' and '-'",
    MODEL_ID_PATTERN: 'must be a model id such as "openai/gpt-4o-mini"',
}
EMAIL_PATTERN = re.compile(r"^[^@\s\x00-\x1f]+@[^@\s\x00-\x1f]+\.[^@\s\x00-\x1f]+$")
# users.email holds at most this many characters.
EMAIL_MAX_LENGTH = 254


def _no_control_characters(value):
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _email(value):
    """The email as stored: trimmed and lower-case. Its length is checked after
    that, since lower() may lengthen it ("İ" becomes two characters)."""
    value = value.strip().lower()
    if not EMAIL_PATTERN.match(value):
        raise ValueError("must be an email address")
    if len(value) > EMAIL_MAX_LENGTH:
        raise ValueError(f"must be at most {EMAIL_MAX_LENGTH} characters")
    return value


PositiveAmount = Annotated[Decimal, PlainValidator(positive_amount), WithJsonSchema(
    {"anyOf": [{"type": "string", "pattern": MONEY_TEXT.pattern}, {"type": "number", "exclusiveMinimum": 0}],
     "examples": ["12.50"]})]
TopUpAmount = Annotated[PositiveAmount, AfterValidator(whole_cents)]
MoneyText = Annotated[str, Field(pattern=r"^[0-9]+\.[0-9]{2,10}$", examples=["12.50"])]

Text = Annotated[str, AfterValidator(_no_control_characters)]
# The raw length is bounded too, before any work is done on the text.
Email = Annotated[str, Field(max_length=EMAIL_MAX_LENGTH), AfterValidator(_no_control_characters),
                  AfterValidator(_email)]
Username = Annotated[str, Field(min_length=3, max_length=32, pattern=USERNAME_PATTERN)]
NewPassword = Annotated[Text, Field(min_length=8, max_length=256)]
GivenPassword = Annotated[Text, Field(min_length=1, max_length=256)]
Token = Annotated[Text, Field(min_length=1, max_length=4096)]


class Request(BaseModel):
    """Every request body: strict types, unknown fields refused."""
    model_config = ConfigDict(extra="forbid", strict=True)


class Response(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# ----------------------------------------------------------------- auth

class RegisterRequest(Request):
    email: Email
    username: Username
    password: NewPassword


class LoginRequest(Request):
    email: Email
    password: GivenPassword


class RefreshRequest(Request):
    refresh_token: Token


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
    balance: Balance


class TokenPair(Response):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
    user: User


# ----------------------------------------------------------------- balance

class TopUpRequest(Request):
    amount: TopUpAmount


class LedgerEntry(Response):
    id: str
    type: Literal[TRANSACTION_TYPES]
    amount: MoneyText
    available_after: MoneyText
    related_transaction_id: str | None
    description: str
    created_at: datetime

    @classmethod
    def from_row(cls, row):
        related = row["related_transaction_id"]
        return cls(**{**row, "id": str(row["id"]), "amount": format_money(row["amount"]),
                      "available_after": format_money(row["available_after"]),
                      "related_transaction_id": None if related is None else str(related)})


class TopUpResponse(Response):
    transaction: LedgerEntry
    balance: Balance


class TransactionPage(Response):
    transactions: list[LedgerEntry]
    next_cursor: str | None


# ----------------------------------------------------------------- keys

ApiKeyText = Annotated[str, Field(min_length=16, max_length=256, pattern=API_KEY_PATTERN)]
Label = Annotated[Text, Field(min_length=1, max_length=100)]


class NewKeyRequest(Request):
    provider: Literal[KEY_PROVIDERS]
    api_key: ApiKeyText
    label: Label | None = None


class StoredKey(Response):
    id: UUID
    provider: str
    label: str | None
    last4: str
    created_at: datetime
    last_used_at: datetime | None


class KeyList(Response):
    keys: list[StoredKey]
    next_cursor: str | None = None


# ----------------------------------------------------------------- chat

ModelId = Annotated[str, Field(min_length=3, max_length=MODEL_ID_MAX_LENGTH, pattern=MODEL_ID_PATTERN)]
MAX_MESSAGE_CHARACTERS = 100_000


class NewSessionRequest(Request):
    model_id: ModelId
    title: Annotated[Text, Field(max_length=200)] = ""


class NewMessageRequest(Request):
    content: Annotated[Text, Field(min_length=1, max_length=MAX_MESSAGE_CHARACTERS)]
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)] | None = None


class Session(Response):
    id: UUID
    model_id: str
    title: str
    message_count: int
    total_prompt_tokens: int
    total_completion_tokens: int
    total_cost: MoneyText
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row):
        return cls(**{**row, "total_cost": format_money(row["total_cost"])})


class Message(Response):
    id: str
    role: Literal["system", "user", "assistant"]
    content: str
    prompt_tokens: int
    completion_tokens: int
    cost: MoneyText
    created_at: datetime

    @classmethod
    def from_row(cls, row):
        return cls(**{**row, "id": str(row["id"]), "cost": format_money(row["cost"])})


class SessionPage(Response):
    sessions: list[Session]
    next_cursor: str | None


class SessionWithMessages(Session):
    messages: list[Message]
    next_cursor: str | None


class Usage(Response):
    prompt_tokens: int
    completion_tokens: int


class MessageExchange(Response):
    user_message: Message
    assistant_message: Message
    usage: Usage
    cost: MoneyText
    balance: Balance


# ----------------------------------------------------------------- marketplace

Capability = Literal[CAPABILITIES]
Provider = Literal[PROVIDERS]
NonNegativeAmount = Annotated[Decimal, PlainValidator(non_negative_amount), WithJsonSchema(
    {"anyOf": [{"type": "string", "pattern": MONEY_TEXT.pattern}, {"type": "number", "minimum": 0}],
     "examples": ["5.00"]})]


class RatingSummary(Response):
    count: int
    average: str | None
    bayesian_average: str
    distribution: dict[str, int]


class ModelUsage(Response):
    request_count: int
    prompt_tokens: int
    completion_tokens: int
    popularity_rank: int


class CatalogEntry(Response):
    id: str
    provider: str
    name: str
    description: str
    context_window: int
    max_output_tokens: int
    input_price_per_mtok: MoneyText
    output_price_per_mtok: MoneyText
    prices_as_of: date
    capabilities: list[str]
    rating: RatingSummary
    usage: ModelUsage


class DailyUsage(Response):
    day: date
    request_count: int
    prompt_tokens: int
    completion_tokens: int


class ModelDetail(CatalogEntry):
    usage_by_day: list[DailyUsage]


class ModelList(Response):
    models: list[CatalogEntry]
    next_cursor: str | None = None


class RatingRequest(Request):
    rating: Annotated[int, Field(ge=1, le=5)]
    review: Annotated[Text, Field(max_length=2000)] | None = None


class Rating(Response):
    model_id: str
    rating: int
    review: str | None
    created_at: datetime
    updated_at: datetime


class RecommendRequest(Request):
    task: Annotated[Text, Field(min_length=1, max_length=2000)]
    max_price_per_mtok: NonNegativeAmount | None = None
    capabilities: Annotated[list[Capability], Field(max_length=len(CAPABILITIES))] = []
    limit: Annotated[int, Field(ge=1, le=20)] = 5


class Recommendation(Response):
    model: CatalogEntry
    score: float
    reasons: list[str]


class RecommendationList(Response):
    recommendations: list[Recommendation]
    notice: str | None = None
    next_cursor: str | None = None


class PreferencesBody(Request):
    """The whole preferences document; a key left out takes its default."""
    default_model_id: ModelId | None = None
    preferred_providers: Annotated[list[Provider], Field(max_length=len(PROVIDERS))] = []
    daily_spend_limit: NonNegativeAmount | None = None
    max_cost_per_message: NonNegativeAmount | None = None
    theme: Literal[THEMES] = "system"


class Preferences(Response):
    default_model_id: str | None
    preferred_providers: list[str]
    daily_spend_limit: MoneyText | None
    max_cost_per_message: MoneyText | None
    theme: str
    updated_at: datetime | None

    @classmethod
    def from_row(cls, row):
        money = {key: None if row[key] is None else format_money(row[key])
                 for key in ("daily_spend_limit", "max_cost_per_message")}
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
    created_at: datetime

    @classmethod
    def from_row(cls, row):
        return cls(**{**row, "id": str(row["item_id"]), "amount": format_money(row["amount"])})


class ActivityPage(Response):
    activity: list[ActivityItem]
    next_cursor: str | None
