"""Anthropic's Messages format, as the inference API serves it at /v1/messages.
Unknown fields are ignored; tools and content that is not text are a 400 that
names the field."""
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from app.schemas.fields import MoneyText, Text
from app.schemas.openai_format import (MAX_MESSAGES, MAX_PARTS, MAX_STOP_SEQUENCES, MAX_TEXT, Lenient, MaxTokens,
                                       ModelName, NoTools, StopText)


class TextBlock(Lenient):
    type: Literal["text"]
    text: Annotated[Text, Field(max_length=MAX_TEXT)]


Content = Annotated[Text, Field(max_length=MAX_TEXT)] | Annotated[list[TextBlock], Field(max_length=MAX_PARTS)]


class AnthropicMessage(Lenient):
    role: Literal["user", "assistant"]
    content: Content


class MessagesRequest(Lenient):
    model: ModelName
    messages: Annotated[list[AnthropicMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    max_tokens: MaxTokens
    system: Content | None = None
    temperature: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    stop_sequences: Annotated[list[StopText], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    stream: bool = False
    tools: NoTools = None


class AnthropicUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    cost: MoneyText


class AnswerBlock(BaseModel):
    type: Literal["text"] = "text"
    text: str


class Message(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[AnswerBlock]
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence"]
    stop_sequence: str | None = None
    usage: AnthropicUsage
