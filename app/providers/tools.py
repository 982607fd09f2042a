"""Tools in no provider's words: what a call offers the model (`ToolUse`), the
calls a reply makes (`ToolCall`), and the pieces a stream makes them from
(`ToolCallDelta`). The conversation that carries the calls and their results
is described in app/providers/conversation.py."""
import json
from dataclasses import dataclass
from decimal import Decimal

# The choices a call may make of its tools; a tool's name also chooses that tool.
TOOL_CHOICES = ("auto", "none", "required")


@dataclass(frozen=True)
class Tool:
    name: str
    description: str | None
    parameters: dict     # a JSON schema
    cache: dict | None = None  # its cache mark (app/providers/conversation.py)


@dataclass(frozen=True)
class ToolUse:
    """The tools a call offers, whether and which one it must call (`choice`:
    one of TOOL_CHOICES, or a tool's name), and whether it may call several at
    once (`parallel`; None leaves the provider's default)."""
    tools: tuple
    choice: str = "auto"
    parallel: bool | None = None


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a streamed tool call: the call's place among the reply's
    calls (`index`), its id and name with its first piece, then pieces of its
    arguments' JSON text."""
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


def calls_tools(messages):
    """Whether the conversation holds a tool call or a tool's result."""
    return any(message["role"] == "tool" or message.get("tool_calls") for message in messages)


def arguments_text(value):
    """A tool's input (a JSON object) as the text a tool call's arguments are.
    A request's numbers are parsed as Decimal: written back as JSON numbers."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_number)


def _number(value):
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")
