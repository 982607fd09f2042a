"""Anthropic's Messages format, as the inference API serves it at /v1/messages.
Unknown fields are ignored; content it cannot honour (a block that is neither
text, an image nor a tool's use or result, a server tool, an image in a tool's
result) is a 400 that names the field."""
from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from app.schemas.fields import MoneyText, Text
from app.schemas.openai_format import (MAX_IMAGE_CHARS, MAX_MESSAGES, MAX_PARTS, MAX_STOP_SEQUENCES, MAX_TEXT,
                                       MAX_TOOLS, CacheControl, Fallbacks, Lenient, MaxTokens, ModelName,
                                       ProviderPreferences, StopText, ToolCallId, ToolName)
from app.providers.reasoning import MIN_THINKING_BUDGET

# A thinking block's text or signature, and a redacted block's data, as an earlier reply gave them.
MAX_THOUGHT = 1_000_000


class TextBlock(Lenient):
    type: Literal["text"]
    text: Annotated[Text, Field(max_length=MAX_TEXT)]
    cache_control: CacheControl | None = None


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
    cache_control: CacheControl | None = None


# A tool's result as the API takes it; an image there is refused by name (call_of).
ResultContent = (Annotated[Text, Field(max_length=MAX_TEXT)]
                 | Annotated[list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]],
                             Field(max_length=MAX_PARTS)])


class ToolUseBlock(Lenient):
    type: Literal["tool_use"]
    id: ToolCallId
    name: ToolName
    input: dict
    cache_control: CacheControl | None = None


class ToolResultBlock(Lenient):
    type: Literal["tool_result"]
    tool_use_id: ToolCallId
    content: ResultContent | None = None
    is_error: bool = False
    cache_control: CacheControl | None = None


class ThinkingBlock(Lenient):
    """A thinking block of an earlier reply, sent back with its signature."""
    type: Literal["thinking"]
    thinking: Annotated[str, Field(max_length=MAX_THOUGHT)]
    signature: Annotated[str, Field(max_length=MAX_THOUGHT)]


class RedactedThinkingBlock(Lenient):
    type: Literal["redacted_thinking"]
    data: Annotated[str, Field(max_length=MAX_THOUGHT)]


Block = Annotated[TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock,
                  Field(discriminator="type")]


class AnthropicMessage(Lenient):
    role: Literal["user", "assistant"]
    content: Annotated[Text, Field(max_length=MAX_TEXT)] | Annotated[list[Block], Field(max_length=MAX_PARTS)]


class ToolDefinition(Lenient):
    type: Literal["custom"] | None = None  # the server's own tools (web search, …) are not offered here
    name: ToolName
    description: Annotated[Text, Field(max_length=MAX_TEXT)] | None = None
    input_schema: dict
    cache_control: CacheControl | None = None


class Thinking(Lenient):
    """Extended thinking: "enabled" with its budget, "adaptive" (the model
    decides), or "disabled"; `display` as the API takes it."""
    type: Literal["enabled", "adaptive", "disabled"]
    budget_tokens: Annotated[int, Field(ge=MIN_THINKING_BUDGET, le=1_000_000)] | None = None
    display: Literal["summarized", "omitted"] | None = None

    @model_validator(mode="after")
    def _budget_when_enabled(self):
        if self.type == "enabled" and self.budget_tokens is None:
            raise ValueError("budget_tokens is required when thinking is enabled")
        return self


class ToolChoice(Lenient):
    type: Literal["auto", "any", "tool", "none"]
    name: ToolName | None = None
    disable_parallel_tool_use: bool | None = None


class MessagesRequest(Lenient):
    model: ModelName
    models: Fallbacks | None = None
    provider: ProviderPreferences | None = None
    messages: Annotated[list[AnthropicMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    max_tokens: MaxTokens
    system: Content | None = None
    temperature: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    stop_sequences: Annotated[list[StopText], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    stream: bool = False
    tools: Annotated[list[ToolDefinition], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None


class CacheCreation(BaseModel):
    ephemeral_5m_input_tokens: int
    ephemeral_1h_input_tokens: int


class AnthropicUsage(BaseModel):
    """As the API counts: input_tokens are those neither read from the cache
    nor written to it; output_tokens count the thinking too."""
    input_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation: CacheCreation | None = None
    output_tokens: int
    cost: MoneyText


class AnswerBlock(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ThinkingAnswer(BaseModel):
    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str


class RedactedThinkingAnswer(BaseModel):
    type: Literal["redacted_thinking"] = "redacted_thinking"
    data: str


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
    content: list[Annotated[ThinkingAnswer | RedactedThinkingAnswer | AnswerBlock | ToolUseAnswer,
                            Field(discriminator="type")]]
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]
    stop_sequence: str | None = None
    usage: AnthropicUsage


class CountTokensRequest(MessagesRequest):
    """What /v1/messages/count_tokens takes: a message request, max_tokens left out."""
    max_tokens: MaxTokens | None = None


class TokenCount(BaseModel):
    input_tokens: int
