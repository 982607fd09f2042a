"""What the request and response models are made of: the field types, with
their patterns and the words a validation error uses for each, and the two
base classes."""
import re
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema

from app.money import MONEY_TEXT, non_negative_amount, positive_amount, whole_cents
from database.vocab import CAPABILITIES, MODEL_ID_MAX_LENGTH, MODEL_ID_PATTERN, PROVIDER_NAME_PATTERN


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
# A change to a balance: negative for money out ("-0.00000024"), positive for money in.
SignedMoneyText = Annotated[str, Field(pattern=r"^-?[0-9]+\.[0-9]{2,10}$", examples=["-0.00000024"])]

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
ModelId = Annotated[str, Field(min_length=3, max_length=MODEL_ID_MAX_LENGTH, pattern=MODEL_ID_PATTERN)]
Capability = Literal[CAPABILITIES]
# A provider's name; which ones exist is configuration, checked where a request is served.
Provider = Annotated[str, Field(pattern=PROVIDER_NAME_PATTERN)]
NonNegativeAmount = Annotated[Decimal, PlainValidator(non_negative_amount), WithJsonSchema(
    {"anyOf": [{"type": "string", "pattern": MONEY_TEXT.pattern}, {"type": "number", "minimum": 0}],
     "examples": ["5.00"]})]
