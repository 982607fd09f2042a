"""OpenAI's Responses API, as the inference API serves it at /v1/responses:
stateless (nothing is stored, so `store: true` and `previous_response_id` are
refused), with `input` as a text or a list of items (messages, function calls
and their outputs) and flat function tools. Unknown fields are ignored, as
under the rest of /v1; an item or a tool of a type not served is a 400 that
names it."""
from typing import Annotated, Literal

from pydantic import BaseModel, Discriminator, Field, Tag

from app.providers.reasoning import EFFORTS
from app.schemas.fields import MoneyText, Text
from app.schemas.openai_format import (MAX_IMAGE_CHARS, MAX_PARTS, MAX_TEXT, MAX_TOOLS, Arguments, JSONObjectFormat,
                                       Fallbacks, Lenient, MaxTokens, ModelName, ProviderPreferences, TextFormat,
                                       ToolCallId, ToolName)

# An agent's conversation grows by a call and its output per tool used: more
# items than Chat Completions' messages (MAX_INFERENCE_BODY bounds them too).
MAX_ITEMS = 1024
Content = Annotated[Text, Field(max_length=MAX_TEXT)]


class InputTextPart(Lenient):
    type: Literal["input_text"]
    text: Content


class OutputTextPart(Lenient):
    """An assistant's text, as an earlier answer gave it back."""
    type: Literal["output_text"]
    text: Content


class InputImagePart(Lenient):
    type: Literal["input_image"]
    # A data: or https: URL; the image's file_id (stored files) is not served.
    image_url: Annotated[str, Field(min_length=1, max_length=MAX_IMAGE_CHARS)]
    # "auto", "low" or "high": checked where it is read, so that a 400 names it.
    detail: Annotated[str, Field(max_length=16)] | None = None


Part = Annotated[InputTextPart | OutputTextPart | InputImagePart, Field(discriminator="type")]
Parts = Annotated[list[Part], Field(max_length=MAX_PARTS)]


class MessageItem(Lenient):
    type: Literal["message"] = "message"  # SDKs send a plain {role, content} without it
    role: Literal["user", "system", "developer", "assistant"]
    content: Content | Parts


class FunctionCallItem(Lenient):
    """A call an earlier answer made, sent back with its output."""
    type: Literal["function_call"]
    call_id: ToolCallId
    name: ToolName
    arguments: Arguments


class FunctionCallOutputItem(Lenient):
    type: Literal["function_call_output"]
    call_id: ToolCallId
    output: Content | Parts


def _item_type(item):
    """An input item's type: a message may leave it out."""
    if isinstance(item, dict):
        return item.get("type", "message")
    return getattr(item, "type", None)


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")] | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")],
    Discriminator(_item_type)]


class FunctionTool(Lenient):
    type: Literal["function"]
    name: ToolName
    description: Content | None = None
    parameters: dict | None = None  # a JSON schema; none: the function takes no arguments
    strict: bool | None = None


class FunctionChoice(Lenient):
    type: Literal["function"]
    name: ToolName


class JSONSchemaFormat(Lenient):
    """Flat, unlike Chat Completions' `json_schema` object."""
    type: Literal["json_schema"]
    name: ToolName
    description: Content | None = None
    schema_: Annotated[dict | None, Field(alias="schema")] = None  # none: any JSON object
    strict: bool | None = None


class TextConfig(Lenient):
    format: Annotated[TextFormat | JSONObjectFormat | JSONSchemaFormat, Field(discriminator="type")] | None = None


class ReasoningConfig(Lenient):
    effort: Literal[EFFORTS] | None = None  # `summary` and the rest: ignored (no reasoning is shown here)


class ResponsesRequest(Lenient):
    model: ModelName
    models: Fallbacks | None = None
    provider: ProviderPreferences | None = None
    input: Content | Annotated[list[InputItem], Field(min_length=1, max_length=MAX_ITEMS)]
    instructions: Content | None = None
    max_output_tokens: MaxTokens | None = None
    temperature: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)] | None = None
    stream: bool = False
    tools: Annotated[list[FunctionTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["auto", "none", "required"] | FunctionChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    # Refused when they ask for what is kept between calls: nothing is.
    store: bool | None = None
    previous_response_id: Annotated[Text, Field(max_length=256)] | None = None
    conversation: Annotated[Text, Field(max_length=256)] | dict | None = None


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[dict] = []


class OutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str
    status: Literal["completed", "incomplete"]
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]


class OutputFunctionCall(BaseModel):
    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str  # JSON text, as the model wrote it
    status: Literal["completed", "incomplete"] = "completed"


OutputItem = Annotated[OutputMessage | OutputFunctionCall, Field(discriminator="type")]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponsesUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = InputTokensDetails()
    output_tokens: int
    output_tokens_details: OutputTokensDetails = OutputTokensDetails()
    total_tokens: int
    cost: MoneyText


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ToolSpec(BaseModel):
    """A tool the request offered, as the answer repeats it."""
    type: Literal["function"] = "function"
    name: str
    description: str | None = None
    parameters: dict | None = None
    strict: bool | None = None


class ChosenFunction(BaseModel):
    type: Literal["function"] = "function"
    name: str


class Response(BaseModel):
    """A response object: what was asked (instructions, tools, choices) and
    what came (`output`, `usage` with its `cost`)."""
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["completed", "incomplete"]
    error: None = None
    incomplete_details: IncompleteDetails | None = None
    model: str
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    parallel_tool_calls: bool = True
    tool_choice: Literal["auto", "none", "required"] | ChosenFunction = "auto"
    tools: list[ToolSpec] = []
    store: Literal[False] = False
    output: list[OutputItem]
    usage: ResponsesUsage
