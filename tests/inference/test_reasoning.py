"""Reasoning through the inference API, driven by the official `openai` and
`anthropic` SDKs against the service under gunicorn and provider stubs that
speak each provider's real wire format: Anthropic's `thinking` and OpenAI's
`reasoning_effort` (`reasoning.effort` in the Responses API) reach each
provider in its own words, thinking comes back first with its signature and
goes back verbatim in a later turn, reasoning tokens are shown and billed
once as the output they are part of, and the hold covers the thinking budget.
Then what is refused, by the Flask test client: 400 naming the field, no
provider called, nothing held."""
from decimal import Decimal

import httpx
import pytest

from tests.inference.refusals import (assert_nothing_happened, assert_refused_in_anthropics_shape,  # noqa: F401
                                      assert_refused_in_openais_shape, settings, token)
from tests.inference.test_responses import created
from tests.money.test_billing_bounds import prompt_bound
from tests.sdk_clients import (account, anthropic_client, assert_charged_exactly, close_clients,  # noqa: F401
                               openai_client, server)
from tests.stubs import ARGUMENT_PIECES
from tests.support import bearer, cost

SONNET = "anthropic/claude-sonnet-4-20250514"
O4_MINI = "openai/o4-mini"
GPT = "openai/gpt-4o-mini"
QUESTION = "Weather in Paris?"
ASK = [{"role": "user", "content": QUESTION}]
THOUGHT, SIGNATURE = "The user wants Paris; a tool knows the weather.", "sig-abc"
THOUGHT_BLOCK = {"type": "thinking", "thinking": THOUGHT, "signature": SIGNATURE}
REDACTED_BLOCK = {"type": "redacted_thinking", "data": "opaque-data"}
# The stub's usage: 80 of the 300 output tokens are reasoning, billed within the 300.
PROMPT_TOKENS, COMPLETION_TOKENS, REASONING_TOKENS = 40, 300, 80


def thinks(stub, *blocks, reply="Sunny."):
    """The Anthropic stub shows `blocks` ((thinking, signature) or ("redacted", data)) before its reply."""
    stub.behaviour.thinking = list(blocks)
    stub.behaviour.reply = reply
    stub.behaviour.prompt_tokens, stub.behaviour.completion_tokens = PROMPT_TOKENS, COMPLETION_TOKENS


def reasons(stub):
    """The OpenAI stub reports REASONING_TOKENS of its COMPLETION_TOKENS as reasoning."""
    stub.behaviour.prompt_tokens, stub.behaviour.completion_tokens = PROMPT_TOKENS, COMPLETION_TOKENS
    stub.behaviour.reasoning_tokens = REASONING_TOKENS


def anthropic_message(client, stream, **asked):
    """The message an Anthropic client got, plain or as the stream's final
    message, and the stream's events (none when plain)."""
    if not stream:
        return client.messages.create(**asked), []
    with client.messages.stream(**asked) as events:
        seen = list(events)
        return events.get_final_message(), seen


def content_of(message):
    """A message's content blocks as the JSON they came as."""
    return [block.model_dump(exclude_none=True) for block in message.content]


def openai_answer(client, stream, **asked):
    """(the answer's content, the pieces of its reasoning_content, its usage),
    plain or assembled from the stream's deltas (the usage from its last chunk)."""
    if not stream:
        completion = client.chat.completions.create(**asked)
        message = completion.choices[0].message
        reasoning = message.model_extra.get("reasoning_content")
        return message.content, [reasoning] if reasoning else [], completion.usage
    text, reasoning, usage = "", [], None
    for chunk in client.chat.completions.create(**asked, stream=True, stream_options={"include_usage": True}):
        usage = chunk.usage or usage
        if chunk.choices:
            delta = chunk.choices[0].delta
            text += delta.content or ""
            piece = delta.model_extra.get("reasoning_content")
            reasoning += [piece] if piece else []
    return text, reasoning, usage


def ledger_entry(server, account, kind):  # noqa: F811
    """The user's one ledger entry of type `kind` (a hold, or the settle's release with its charge)."""
    entry, = httpx.get(f"{server.url}/api/v1/balance/transactions", params={"type": kind},
                       headers=account["headers"]).json()["transactions"]
    return entry


# ----------------------------------------------------------------- Anthropic's thinking, to Claude and back

@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_anthropic_clients_thinking_reaches_claude_and_comes_back_first_with_its_signature(
        server, account, stubs, stream):  # noqa: F811
    thinks(stubs[1], (THOUGHT, SIGNATURE))
    thinking = {"type": "enabled", "budget_tokens": 2000, "display": "summarized"}
    message, events = anthropic_message(anthropic_client(server, account), stream, model=SONNET, max_tokens=4000,
                                        messages=ASK, thinking=thinking)
    assert content_of(message) == [THOUGHT_BLOCK, {"type": "text", "text": "Sunny."}]
    if stream:
        deltas = [event.delta for event in events if event.type == "content_block_delta"]
        pieces = [delta.thinking for delta in deltas if delta.type == "thinking_delta"]
        assert "".join(pieces) == THOUGHT and len(pieces) > 1
        assert [delta.signature for delta in deltas if delta.type == "signature_delta"] == [SIGNATURE]
    sent = stubs[1].requests[0]["body"]
    assert (sent["thinking"], sent["max_tokens"]) == (thinking, 4000)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert_charged_exactly(server, account["user_id"], cost(SONNET, PROMPT_TOKENS, COMPLETION_TOKENS))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_redacted_thinking_comes_back_as_its_opaque_data_in_its_place(server, account, stubs, stream):  # noqa: F811
    thinks(stubs[1], (THOUGHT, SIGNATURE), ("redacted", "opaque-data"))
    message, events = anthropic_message(anthropic_client(server, account), stream, model=SONNET, max_tokens=4000,
                                        messages=ASK, thinking={"type": "enabled", "budget_tokens": 1024})
    assert content_of(message) == [THOUGHT_BLOCK, REDACTED_BLOCK, {"type": "text", "text": "Sunny."}]
    if stream:
        assert [(event.index, event.content_block.type) for event in events if event.type == "content_block_start"] \
            == [(0, "thinking"), (1, "redacted_thinking"), (2, "text")]
    assert_charged_exactly(server, account["user_id"], cost(SONNET, PROMPT_TOKENS, COMPLETION_TOKENS))


def test_thinking_sent_back_before_a_tool_use_reaches_claude_verbatim(server, account, stubs):  # noqa: F811
    """With thinking on, Claude needs the turn that called a tool sent back
    whole, its thinking blocks first and their signatures untouched."""
    stubs[1].behaviour.script = [
        {"thinking": [(THOUGHT, SIGNATURE), ("redacted", "opaque-data")], "reply": "Let me look.",
         "tool_calls": [("toolu_01T", "weather", '{"city":"Paris"}')], "prompt_tokens": 30, "completion_tokens": 90},
        {"reply": "Sunny.", "prompt_tokens": 200, "completion_tokens": 5}]
    client = anthropic_client(server, account)
    tools = [{"name": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    asked = dict(model=SONNET, max_tokens=4000, thinking={"type": "enabled", "budget_tokens": 2000}, tools=tools)
    first = client.messages.create(**asked, messages=ASK)
    assert first.stop_reason == "tool_use"
    called = content_of(first)
    second = client.messages.create(**asked, messages=[
        *ASK, {"role": "assistant", "content": called},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01T", "content": "sunny"}]}])
    assert second.content[-1].text == "Sunny."
    assert stubs[1].requests[1]["body"]["messages"] == [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": [
            THOUGHT_BLOCK, REDACTED_BLOCK, {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_01T", "name": "weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01T", "content": "sunny"}]}]
    assert_charged_exactly(server, account["user_id"], cost(SONNET, 30, 90) + cost(SONNET, 200, 5))


@pytest.mark.parametrize("client_format", ["anthropic", "openai"])
def test_a_retried_stream_replays_its_thinking_unbilled(server, account, stubs, client_format):  # noqa: F811
    """An Idempotency-Key retry of a stream is the stored answer streamed
    again: its thinking too, as each format shows it."""
    thinks(stubs[1], (THOUGHT, SIGNATURE))
    retried = {"model": SONNET, "messages": ASK, "extra_headers": {"Idempotency-Key": "replayed-thinking"}}
    if client_format == "anthropic":
        client = anthropic_client(server, account)
        answers = [content_of(anthropic_message(client, True, max_tokens=4000, thinking={
            "type": "enabled", "budget_tokens": 1024}, **retried)[0]) for _ in range(2)]
        answer = [THOUGHT_BLOCK, {"type": "text", "text": "Sunny."}]
    else:
        client = openai_client(server, account)
        answers = [(content, "".join(reasoning)) for content, reasoning, _ in (
            openai_answer(client, True, reasoning_effort="low", max_tokens=3000, **retried) for _ in range(2))]
        answer = ("Sunny.", THOUGHT)
    assert answers == [answer, answer]
    assert len(stubs[1].requests) == 1
    assert_charged_exactly(server, account["user_id"], cost(SONNET, PROMPT_TOKENS, COMPLETION_TOKENS))


# ----------------------------------------------------------------- OpenAI's reasoning_effort, to o4-mini

@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_openai_clients_effort_reaches_o4_mini_and_its_reasoning_tokens_are_billed_once(
        server, account, stubs, stream):  # noqa: F811
    """OpenAI's reasoning models refuse max_tokens: the client's becomes
    max_completion_tokens. The reasoning tokens are shown, and billed within
    the completion tokens, not on top of them."""
    reasons(stubs[0])
    content, reasoning, usage = openai_answer(openai_client(server, account), stream, model=O4_MINI, messages=ASK,
                                              reasoning_effort="high", max_tokens=6000)
    assert (content, reasoning) == ("Hello from the stub.", [])
    sent = stubs[0].requests[0]["body"]
    assert (sent["reasoning_effort"], sent["max_completion_tokens"]) == ("high", 6000)
    assert "max_tokens" not in sent
    assert (usage.completion_tokens, usage.completion_tokens_details.reasoning_tokens) == (
        COMPLETION_TOKENS, REASONING_TOKENS)
    charged = cost(O4_MINI, PROMPT_TOKENS, COMPLETION_TOKENS)
    assert Decimal(usage.model_extra["cost"]) == charged
    charge = ledger_entry(server, account, "release")["charge"]
    assert (charge["output_tokens"], charge["reasoning_tokens"]) == (COMPLETION_TOKENS, REASONING_TOKENS)
    assert Decimal(charge["output_cost"]) == cost(O4_MINI, 0, COMPLETION_TOKENS)
    assert_charged_exactly(server, account["user_id"], charged)


def test_an_effort_to_o4_mini_needs_no_room_for_a_budget_it_never_gets(server, account, stubs):  # noqa: F811
    """OpenAI's models take an effort as it is, with any max_completion_tokens:
    only for Claude does an effort become a thinking budget that must fit."""
    reasons(stubs[0])
    openai_client(server, account).chat.completions.create(model=O4_MINI, messages=ASK, reasoning_effort="xhigh",
                                                           max_completion_tokens=2000)
    sent = stubs[0].requests[0]["body"]
    assert (sent["reasoning_effort"], sent["max_completion_tokens"]) == ("xhigh", 2000)
    assert_charged_exactly(server, account["user_id"], cost(O4_MINI, PROMPT_TOKENS, COMPLETION_TOKENS))


# ----------------------------------------------------------------- across formats

@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_low_effort_reaches_claude_as_the_smallest_budget_and_its_thinking_as_reasoning_content(
        server, account, stubs, stream):  # noqa: F811
    thinks(stubs[1], (THOUGHT, SIGNATURE))
    content, reasoning, usage = openai_answer(openai_client(server, account), stream, model=SONNET, messages=ASK,
                                              reasoning_effort="low", max_tokens=3000)
    assert content == "Sunny."
    assert "".join(reasoning) == THOUGHT and len(reasoning) == (ARGUMENT_PIECES if stream else 1)
    sent = stubs[1].requests[0]["body"]
    assert (sent["thinking"], sent["max_tokens"]) == ({"type": "enabled", "budget_tokens": 1024}, 3000)
    assert "reasoning_effort" not in sent
    assert usage.completion_tokens_details.reasoning_tokens == 0  # Anthropic does not count them apart
    assert_charged_exactly(server, account["user_id"], cost(SONNET, PROMPT_TOKENS, COMPLETION_TOKENS))


EFFORTS_OF_THINKING = {
    "the least budget": ({"type": "enabled", "budget_tokens": 1024}, "low"),
    "just under medium": ({"type": "enabled", "budget_tokens": 2047}, "low"),
    "medium's least": ({"type": "enabled", "budget_tokens": 2048}, "medium"),
    "5000": ({"type": "enabled", "budget_tokens": 5000}, "medium"),
    "just under high": ({"type": "enabled", "budget_tokens": 8191}, "medium"),
    "high's least": ({"type": "enabled", "budget_tokens": 8192}, "high"),
    "adaptive": ({"type": "adaptive"}, None),
    "disabled": ({"type": "disabled"}, None),
}


@pytest.mark.parametrize("thinking, effort", EFFORTS_OF_THINKING.values(), ids=EFFORTS_OF_THINKING.keys())
def test_an_anthropic_clients_thinking_reaches_o4_mini_as_an_effort(
        server, account, stubs, thinking, effort):  # noqa: F811
    """A budget is the effort whose budget bound it is under; adaptive and
    disabled thinking ask no effort, leaving the model's default."""
    reasons(stubs[0])
    message = anthropic_client(server, account).messages.create(model=O4_MINI, max_tokens=10_000, messages=ASK,
                                                                thinking=thinking)
    assert content_of(message) == [{"type": "text", "text": "Hello from the stub."}]
    sent = stubs[0].requests[0]["body"]
    assert (sent.get("reasoning_effort"), sent["max_completion_tokens"]) == (effort, 10_000)
    assert "thinking" not in sent and "max_tokens" not in sent
    assert_charged_exactly(server, account["user_id"], cost(O4_MINI, PROMPT_TOKENS, COMPLETION_TOKENS))


# ----------------------------------------------------------------- the hold covers the budget

def test_the_hold_covers_max_tokens_with_the_thinking_budget_in_it(server, account, stubs):  # noqa: F811
    """Thinking is output, within max_tokens: the hold prices all of
    max_tokens at the output price, and the budget adds nothing on top."""
    thinks(stubs[1], (THOUGHT, SIGNATURE))
    anthropic_client(server, account).messages.create(model=SONNET, max_tokens=8000, messages=ASK,
                                                      thinking={"type": "enabled", "budget_tokens": 5000})
    assert Decimal(ledger_entry(server, account, "hold")["amount"]) == cost(SONNET, prompt_bound(QUESTION), 8000)
    assert_charged_exactly(server, account["user_id"], cost(SONNET, PROMPT_TOKENS, COMPLETION_TOKENS))


DEFAULTS_WITH_EFFORTS = {
    "o4-mini, no effort": (O4_MINI, None, "max_completion_tokens", 1024),
    "o4-mini, none": (O4_MINI, "none", "max_completion_tokens", 1024),
    "o4-mini, minimal": (O4_MINI, "minimal", "max_completion_tokens", 1024 + 1024),
    "o4-mini, medium": (O4_MINI, "medium", "max_completion_tokens", 1024 + 2048),
    "o4-mini, xhigh": (O4_MINI, "xhigh", "max_completion_tokens", 1024 + 16384),
    "claude, high": (SONNET, "high", "max_tokens", 1024 + 4096),
}


@pytest.mark.parametrize("model, effort, field, max_tokens", DEFAULTS_WITH_EFFORTS.values(),
                         ids=DEFAULTS_WITH_EFFORTS.keys())
def test_without_max_tokens_an_effort_adds_its_budget_to_the_default(
        server, account, stubs, model, effort, field, max_tokens):  # noqa: F811
    """The default max_tokens leaves the answer its usual 1024 tokens beside
    the effort's thinking budget, and the hold covers all of it."""
    reasons(stubs[0])
    thinks(stubs[1], (THOUGHT, SIGNATURE))
    asked = {} if effort is None else {"reasoning_effort": effort}
    openai_client(server, account).chat.completions.create(model=model, messages=ASK, **asked)
    stub = stubs[1] if model == SONNET else stubs[0]
    assert stub.requests[0]["body"][field] == max_tokens
    assert Decimal(ledger_entry(server, account, "hold")["amount"]) == cost(model, prompt_bound(QUESTION), max_tokens)
    assert_charged_exactly(server, account["user_id"], cost(model, PROMPT_TOKENS, COMPLETION_TOKENS))


def test_the_default_with_a_budget_stays_within_the_models_max_output(client, token, database, stubs):  # noqa: F811
    """1024 + high's 4096 is more than this model may write: it is cut to the model's most."""
    database.query("UPDATE models SET max_output_tokens = 3000 WHERE id = %s", (O4_MINI,))
    response = client.post("/v1/chat/completions", headers=bearer(token),
                           json={"model": O4_MINI, "messages": ASK, "reasoning_effort": "high"})
    assert response.status_code == 200, response.get_json()
    assert stubs[0].requests[0]["body"]["max_completion_tokens"] == 3000


# ----------------------------------------------------------------- the Responses API

@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_responses_effort_reaches_o4_mini_and_its_reasoning_tokens_show(server, account, stubs, stream):  # noqa: F811
    reasons(stubs[0])
    response, _ = created(openai_client(server, account), stream, model=O4_MINI, input=QUESTION,
                          reasoning={"effort": "medium", "summary": "auto"}, max_output_tokens=4000)
    assert response.output_text == "Hello from the stub."
    sent = stubs[0].requests[0]["body"]
    assert (sent["reasoning_effort"], sent["max_completion_tokens"]) == ("medium", 4000)
    assert (response.usage.output_tokens, response.usage.output_tokens_details.reasoning_tokens) == (
        COMPLETION_TOKENS, REASONING_TOKENS)
    assert_charged_exactly(server, account["user_id"], cost(O4_MINI, PROMPT_TOKENS, COMPLETION_TOKENS))


# ----------------------------------------------------------------- refused, and what is not

CHAT, MESSAGES, RESPONSES = "/v1/chat/completions", "/v1/messages", "/v1/responses"
SHAPES = {CHAT: assert_refused_in_openais_shape, RESPONSES: assert_refused_in_openais_shape,
          MESSAGES: assert_refused_in_anthropics_shape}
ASKED = {CHAT: {"messages": ASK}, RESPONSES: {"input": QUESTION}, MESSAGES: {"max_tokens": 4000, "messages": ASK}}
ENABLED = {"type": "enabled", "budget_tokens": 2000}

REFUSALS = {
    "thinking to a model that does not reason": (MESSAGES, {"model": GPT, "thinking": ENABLED}, "thinking"),
    "adaptive thinking to a local model": (MESSAGES, {"model": "local/echo", "thinking": {"type": "adaptive"}},
                                           "thinking"),
    "thinking to an older Claude": (MESSAGES, {"model": "anthropic/claude-3-5-haiku-20241022",
                                               "thinking": ENABLED}, "thinking"),
    "a budget of all max_tokens": (MESSAGES, {"model": SONNET, "max_tokens": 2000, "thinking": ENABLED},
                                   "thinking.budget_tokens"),
    "a budget above max_tokens to o4-mini": (MESSAGES, {"model": O4_MINI, "max_tokens": 1500, "thinking": ENABLED},
                                             "thinking.budget_tokens"),
    "thinking enabled without a budget": (MESSAGES, {"model": SONNET, "thinking": {"type": "enabled"}},
                                          "thinking"),
    "a budget under the least": (MESSAGES, {"model": SONNET, "thinking": {"type": "enabled", "budget_tokens": 1023}},
                                 "thinking.budget_tokens"),
    "an effort to a model that does not reason": (CHAT, {"model": GPT, "reasoning_effort": "low"},
                                                  "reasoning_effort"),
    "an effort to a local model": (CHAT, {"model": "local/echo", "reasoning_effort": "high"}, "reasoning_effort"),
    "an effort whose budget is all max_tokens": (CHAT, {"model": SONNET, "reasoning_effort": "high",
                                                        "max_tokens": 4096}, "reasoning_effort"),
    "an effort whose budget is above max_completion_tokens": (
        CHAT, {"model": SONNET, "reasoning_effort": "xhigh", "max_completion_tokens": 8000}, "reasoning_effort"),
    "an effort of no such name": (CHAT, {"model": O4_MINI, "reasoning_effort": "extreme"}, "reasoning_effort"),
    "a Responses effort to a model that does not reason": (
        RESPONSES, {"model": GPT, "reasoning": {"effort": "medium"}}, "reasoning.effort"),
    "a Responses effort whose budget is all max_output_tokens": (
        RESPONSES, {"model": SONNET, "reasoning": {"effort": "low"}, "max_output_tokens": 1024}, "reasoning.effort"),
}


@pytest.mark.parametrize("path, change, field", REFUSALS.values(), ids=REFUSALS.keys())
def test_reasoning_refusals_name_the_field(client, token, database, stubs, path, change, field):  # noqa: F811
    response = client.post(path, headers=bearer(token), json={**ASKED[path], **change})
    SHAPES[path](response, field)
    assert_nothing_happened(database, stubs)


NOTHING_ASKED = {
    "thinking disabled": (MESSAGES, {"thinking": {"type": "disabled"}}),
    "an effort of none": (CHAT, {"reasoning_effort": "none"}),
    "a Responses effort of none": (RESPONSES, {"reasoning": {"effort": "none"}}),
}


@pytest.mark.parametrize("path, change", NOTHING_ASKED.values(), ids=NOTHING_ASKED.keys())
def test_asking_for_no_reasoning_is_accepted_by_a_model_that_does_not_reason(
        client, token, stubs, path, change):  # noqa: F811
    """Clients send these by default: the model is called as if nothing were asked."""
    response = client.post(path, headers=bearer(token), json={**ASKED[path], "model": GPT, **change})
    assert response.status_code == 200, response.get_json()
    sent = stubs[0].requests[0]["body"]
    assert not {"thinking", "reasoning_effort", "max_completion_tokens"} & set(sent)
    assert "max_tokens" in sent
