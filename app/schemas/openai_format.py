"""OpenAI's Chat Completions format, as the inference API serves it at /v1.
SDKs send many fields this service has no use for: unknown fields are ignored
here (under /api/v1 they are refused), but a field it cannot honour (n > 1, a
part that is neither text nor an image) is a 400 that names it."""
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.providers.reasoning import EFFORTS
from app.schemas.fields import MoneyText, Text

# Bounds on the work one body can ask for (MAX_INFERENCE_BODY bounds it too).
MAX_MESSAGES = 256
MAX_PARTS = 64
MAX_TEXT = 100_000  # characters, as for a chat message
# An image's URL or base64 data: a data: URL is the image itself (both
# providers take up to 20 MB); the body's own limit is the real bound.
MAX_IMAGE_CHARS = 64 * 1024 * 1024
MAX_STOP_SEQUENCES = 4
MAX_TOOLS = 128
MaxTokens = Annotated[int, Field(ge=1, le=1_000_000)]
StopText = Annotated[Text, Field(min_length=1, max_length=200)]
ModelName = Annotated[Text, Field(min_length=1, max_length=200)]
# `models`: the fallbacks a call names, tried in order when its model's routes all fail (as OpenRouter takes them).
MAX_FALLBACK_MODELS = 5
Fallbacks = Annotated[list[ModelName], Field(min_length=1, max_length=MAX_FALLBACK_MODELS)]
ROUTE_SORTS = ("price", "latency", "throughput")
# Both providers take a tool's name as 1–64 letters, digits, _ and -.
ToolName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
ToolCallId = Annotated[Text, Field(min_length=1, max_length=256)]
Arguments = Annotated[Text, Field(max_length=MAX_TEXT)]


class Lenient(BaseModel):
    """A body of a provider's format: unknown fields ignored, as SDKs expect;
    the types of known ones as strict as anywhere (true is no number)."""
    model_config = ConfigDict(extra="ignore", strict=True)


class ProviderPreferences(Lenient):
    """How a call's routes are ordered, as OpenRouter's `provider` takes it (its other keys: ignored)."""
    sort: Literal[ROUTE_SORTS] | None = None


class CacheControl(Lenient):
    """A mark where a prompt cache's prefix ends (Anthropic's cache_control,
    which OpenRouter also takes on OpenAI's text parts): kept 5 minutes, or an hour."""
    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class TextPart(Lenient):
    type: Literal["text"]
    text: Annotated[Text, Field(max_length=MAX_TEXT)]
    cache_control: CacheControl | None = None


class ImageURL(Lenient):
    url: Annotated[str, Field(min_length=1, max_length=MAX_IMAGE_CHARS)]
    # "auto", "low" or "high": checked where it is read, so that a 400 names it
    # rather than the message's content as a whole.
    detail: Annotated[str, Field(max_length=16)] | None = None


class ImagePart(Lenient):
    type: Literal["image_url"]
    image_url: ImageURL


Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(Lenient):
    name: ToolName
    arguments: Arguments


class ToolCallPart(Lenient):
    id: ToolCallId
    type: Literal["function"]
    function: FunctionCall


class ChatMessage(Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    # None only for an assistant's message that calls tools.
    # Images only in a user's message (a 400 names them elsewhere).
    content: Annotated[Text, Field(max_length=MAX_TEXT)] | Annotated[list[Part], Field(max_length=MAX_PARTS)] | None
    tool_calls: Annotated[list[ToolCallPart], Field(min_length=1, max_length=MAX_TOOLS)] | None = None
    tool_call_id: ToolCallId | None = None


class FunctionDefinition(Lenient):
    name: ToolName
    description: Annotated[Text, Field(max_length=MAX_TEXT)] | None = None
    parameters: dict | None = None  # a JSON schema; none: the function takes no arguments


class ToolDefinition(Lenient):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(Lenient):
    name: ToolName


class NamedToolChoice(Lenient):
    type: Literal["function"]
    function: FunctionName


class JSONSchema(Lenient):
    name: ToolName
    description: Annotated[Text, Field(max_length=MAX_TEXT)] | None = None
    schema_: Annotated[dict | None, Field(alias="schema")] = None  # a JSON schema; none: any JSON object
    strict: bool | None = None


class TextFormat(Lenient):
    type: Literal["text"]


class JSONObjectFormat(Lenient):
    type: Literal["json_object"]


class JSONSchemaFormat(Lenient):
    type: Literal["json_schema"]
    json_schema: JSONSchema


ResponseFormat = Annotated[TextFormat | JSONObjectFormat | JSONSchemaFormat, Field(discriminator="type")]


class StreamOptions(Lenient):
    include_usage: bool = False


class ChatCompletionRequest(Lenient):
    model: ModelName
    models: Fallbacks | None = None
    provider: ProviderPreferences | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    temperature: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)] | None = None
    stop: StopText | Annotated[list[StopText], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    tools: Annotated[list[ToolDefinition], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: Literal[EFFORTS] | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n):
        if n is not None and n != 1:
            raise ValueError("only 1 is supported")
        return n

class PromptTokensDetails(BaseModel):
    cached_tokens: int  # read from the prompt cache


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int  # part of completion_tokens


class OpenAIUsage(BaseModel):
    """As OpenAI counts: prompt_tokens include those read from the cache
    (prompt_tokens_details) and written to it (cache_creation_input_tokens,
    as LiteLLM names them: OpenAI itself has no such count)."""
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails
    completion_tokens_details: CompletionTokensDetails
    cache_creation_input_tokens: int = 0
    cost: MoneyText


class CalledFunction(BaseModel):
    name: str
    arguments: str


class CalledTool(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: CalledFunction


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None  # None when the reply only calls tools
    tool_calls: list[CalledTool] | None = None
    reasoning_content: str | None = None  # the thinking the model showed (Claude's), as LiteLLM names it


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length", "tool_calls"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: OpenAIUsage


class ModelObject(BaseModel):
    """A catalog model in OpenAI's shape; its prices and limits ride along."""
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    context_window: int
    max_output_tokens: int
    input_price_per_mtok: MoneyText
    output_price_per_mtok: MoneyText
    cache_read_price_per_mtok: MoneyText | None        # null: no prompt cache
    cache_write_price_per_mtok: MoneyText | None       # null: writes cost nothing extra, or no cache
    cache_write_1h_price_per_mtok: MoneyText | None    # null: no 1-hour cache
    features: list[str]  # beyond text: tools, structured_output, images, caching, reasoning
    input_modalities: list[str]   # what a prompt may hold: text, image
    aliases: list[str]            # other names a call may use for it


class ModelListing(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]
