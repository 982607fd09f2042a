"""Anthropic's Messages format, as the inference API serves it at /v1/messages.
Unknown fields are ignored; content it cannot honour (a block that is neither
text, an image nor a tool's use or result, a server tool, an image in a tool's
result) is a 400 that names the field."""
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from app.schemas.fields import MoneyText, Text
from app.schemas.openai_format import (MAX_IMAGE_CHARS, MAX_MESSAGES, MAX_PARTS, MAX_STOP_SEQUENCES, MAX_TEXT,
                                       MAX_TOOLS, Lenient, MaxTokens, ModelName, StopText, ToolCallId, ToolName)


class TextBlock(Lenient):
    type: Literal["text"]
    text: Annotated[Text, Field(max_length=MAX_TEXT)]


Content = Annotated[Text, Field(max_length=MAX_TEXT)] | Annotated[list[TextBlock], Field(max_length=MAX_PARTS)]


class Base64Source(Lenient):
    type: Literal["base64"]
    media_type: Annotated[str, Field(max_length=100)]
    data: Annotated[str, Field(min_length=1, max_length=MAX_IMAGE_CHARS)]


class URLSource(Lenient):
    type: Literal["url"]
    url: Annotated[str, Field(min_length=1, max_length=MAX_IMAGE_CHARS)]


class ImageBlock(Lenient):
    type: Literal["image"]
    source: Annotated[Base64Source | URLSource, Field(discriminator="type")]


# A tool's result as the API takes it; an image there is refused by name (call_of).
ResultContent = (Annotated[Text, Field(max_length=MAX_TEXT)]
                 | Annotated[list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]],
                             Field(max_length=MAX_PARTS)])


class ToolUseBlock(Lenient):
    type: Literal["tool_use"]
    id: ToolCallId
    name: ToolName
    input: dict


class ToolResultBlock(Lenient):
    type: Literal["tool_result"]
    tool_use_id: ToolCallId
    content: ResultContent | None = None
    is_error: bool = False


Block = Annotated[TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")]


class AnthropicMessage(Lenient):
    role: Literal["user", "assistant"]
    content: Annotated[Text, Field(max_length=MAX_TEXT)] | Annotated[list[Block], Field(max_length=MAX_PARTS)]


class ToolDefinition(Lenient):
    type: Literal["custom"] | None = None  # the server's own tools (web search, …) are not offered here
    name: ToolName
    description: Annotated[Text, Field(max_length=MAX_TEXT)] | None = None
    input_schema: dict


class ToolChoice(Lenient):
    type: Literal["auto", "any", "tool", "none"]
    name: ToolName | None = None
    disable_parallel_tool_use: bool | None = None


class MessagesRequest(Lenient):
    model: ModelName
    messages: Annotated[list[AnthropicMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    max_tokens: MaxTokens
    system: Content | None = None
    temperature: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    stop_sequences: Annotated[list[StopText], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    stream: bool = False
    tools: Annotated[list[ToolDefinition], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None


class AnthropicUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    cost: MoneyText


class AnswerBlock(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ToolUseAnswer(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict


class Message(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[AnswerBlock | ToolUseAnswer]
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]
    stop_sequence: str | None = None
    usage: AnthropicUsage


class CountTokensRequest(MessagesRequest):
    """What /v1/messages/count_tokens takes: a message request, max_tokens left out."""
    max_tokens: MaxTokens | None = None


class TokenCount(BaseModel):
    input_tokens: int
