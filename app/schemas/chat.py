"""Chat sessions and their messages."""
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field

from app.money import format_money
from app.schemas.accounts import Balance
from app.schemas.fields import ModelId, MoneyText, Request, Response, Text


MAX_MESSAGE_CHARACTERS = 100_000


class NewSessionRequest(Request):
    model_id: ModelId
    title: Annotated[Text, Field(max_length=200)] = ""


class NewMessageRequest(Request):
    content: Annotated[Text, Field(min_length=1, max_length=MAX_MESSAGE_CHARACTERS)]
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)] | None = None
    stream: bool = False


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
