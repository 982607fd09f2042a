"""Request and response bodies, declared once: they validate requests, shape
responses, and describe the API in /openapi.json."""
import re
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.money import format_money

USERNAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
EMAIL_PATTERN = re.compile(r"^[^@\s\x00-\x1f]+@[^@\s\x00-\x1f]+\.[^@\s\x00-\x1f]+$")


def _no_control_characters(value):
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _email(value):
    value = value.strip().lower()
    if not EMAIL_PATTERN.match(value):
        raise ValueError("must be an email address")
    return value


Text = Annotated[str, AfterValidator(_no_control_characters)]
Email = Annotated[str, Field(max_length=254), AfterValidator(_no_control_characters), AfterValidator(_email)]
Username = Annotated[str, Field(min_length=3, max_length=32, pattern=USERNAME_PATTERN)]
NewPassword = Annotated[Text, Field(min_length=8, max_length=256)]
GivenPassword = Annotated[Text, Field(min_length=1, max_length=256)]
Token = Annotated[str, Field(min_length=1, max_length=4096)]


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
    total_balance: str
    spent_balance: str
    held_balance: str
    available_balance: str
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
