"""Reasoning in no provider's words: what a call asks of it (`Reasoning`),
the thinking a reply shows (`ThinkingBlock`), and the pieces a stream makes
those from (`ThinkingDelta`). Reasoning tokens are part of the output tokens
a provider reports, and billed as such, once."""
from dataclasses import dataclass

# OpenAI's reasoning_effort values, least to most.
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
# Anthropic's thinking budget for an effort, as LiteLLM maps them (none: no thinking).
EFFORT_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 2048, "high": 4096, "xhigh": 16384}
# The effort a thinking budget stands for: the first whose budget bound it is under.
BUDGET_EFFORTS = ((2048, "low"), (8192, "medium"))
# Anthropic's smallest thinking budget.
MIN_THINKING_BUDGET = 1024


@dataclass(frozen=True)
class Reasoning:
    """What a call asks of the model's reasoning: Anthropic's `thinking` as
    the client sent it (type "enabled" with `budget_tokens`, "adaptive" or
    "disabled"), or OpenAI's `effort`. Each provider gets it in its own words:
    an effort becomes a thinking budget (EFFORT_BUDGETS), and a budget an effort."""
    thinking: dict | None = None
    effort: str | None = None

    @property
    def asked(self):
        """Whether the call asks the model to reason at all."""
        if self.thinking is not None:
            return self.thinking["type"] != "disabled"
        return self.effort not in (None, "none")

    @property
    def budget(self):
        """The most output tokens thinking may take, where the call says so."""
        if self.thinking is not None:
            return self.thinking.get("budget_tokens")
        return EFFORT_BUDGETS.get(self.effort)

    def anthropic_thinking(self):
        """The Messages API's `thinking`, or None to send none."""
        if self.thinking is not None:
            return self.thinking
        if self.effort in EFFORT_BUDGETS:
            return {"type": "enabled", "budget_tokens": EFFORT_BUDGETS[self.effort]}
        return None

    def openai_effort(self):
        """Chat Completions' `reasoning_effort`, or None to leave the model's default."""
        if self.thinking is None:
            return self.effort
        if self.thinking["type"] != "enabled":
            return None  # adaptive: the model decides; disabled: nothing to ask
        budget = self.thinking["budget_tokens"]
        return next((effort for bound, effort in BUDGET_EFFORTS if budget < bound), "high")


@dataclass(frozen=True)
class ThinkingBlock:
    """A block of a reply's thinking: its text (empty when the provider
    omits it) and the signature that lets it be sent back in a later turn,
    or a redacted block's opaque data."""
    text: str = ""
    signature: str = ""
    redacted: str | None = None


@dataclass(frozen=True)
class ThinkingDelta:
    """A piece of a streamed thinking block: the block's place among the
    reply's thinking blocks (`index`), and a piece of its text, of its
    signature, or a redacted block's data (which comes whole)."""
    index: int
    text: str = ""
    signature: str = ""
    redacted: str | None = None


def thinking_blocks(deltas):
    """The ThinkingBlocks that ThinkingDeltas make, in the order of their index."""
    blocks = {}  # index → [text pieces, signature pieces, redacted data]
    for delta in deltas:
        block = blocks.setdefault(delta.index, [[], [], None])
        block[0].append(delta.text)
        block[1].append(delta.signature)
        if delta.redacted is not None:
            block[2] = delta.redacted
    return tuple(ThinkingBlock("".join(text), "".join(signature), redacted)
                 for _, (text, signature, redacted) in sorted(blocks.items()))
