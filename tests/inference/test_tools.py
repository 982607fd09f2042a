"""Tools through the inference API, driven by the official `openai` and
`anthropic` SDKs against the service under gunicorn and provider stubs that
speak each provider's real wire format: offered, called, streamed as each
format's own deltas, answered with their results, across formats, and billed
exactly as the provider's usage says."""
import json
from decimal import Decimal

import pytest

from tests.support import cost
from tests.sdk_clients import (account, anthropic_client, assert_charged_exactly, close_clients,  # noqa: F401
                            openai_client, server)

GPT = "openai/gpt-4o-mini"
CLAUDE = "anthropic/claude-3-5-haiku-20241022"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
OPENAI_TOOL = {"type": "function", "function": {"name": "weather", "description": "The weather in a city",
                                                "parameters": WEATHER}}
ANTHROPIC_TOOL = {"name": "weather", "description": "The weather in a city", "input_schema": WEATHER}
ARGUMENTS = '{"city":"Paris"}'
ASK = [{"role": "user", "content": "Weather in Paris?"}]


def calls_the_weather(stub, call_id, reply=""):
    stub.behaviour.tool_calls = [(call_id, "weather", ARGUMENTS)]
    stub.behaviour.reply = reply
    stub.behaviour.prompt_tokens, stub.behaviour.completion_tokens = 40, 12


def openai_tool_calls(client, stream, **asked):
    """The tool calls an OpenAI client got, plain or streamed (assembled from
    the deltas), and the finish reason."""
    if stream:
        return streamed_openai_calls(client.chat.completions.create(**asked, stream=True))
    choice = client.chat.completions.create(**asked).choices[0]
    assert choice.message.content is None
    return [{"id": call.id, "name": call.function.name, "arguments": call.function.arguments}
            for call in choice.message.tool_calls], choice.finish_reason


def streamed_openai_calls(chunks):
    """The tool calls an OpenAI stream made, assembled from its deltas, and its finish reason."""
    calls, finish = {}, None
    for chunk in chunks:
        if not chunk.choices:
            continue
        for piece in chunk.choices[0].delta.tool_calls or ():
            call = calls.setdefault(piece.index, {"id": None, "name": None, "arguments": ""})
            call["id"] = call["id"] or piece.id
            call["name"] = call["name"] or (piece.function.name if piece.function else None)
            call["arguments"] += (piece.function.arguments or "") if piece.function else ""
        finish = chunk.choices[0].finish_reason or finish
    return [calls[index] for index in sorted(calls)], finish


# ----------------------------------------------------------------- each format to its own provider

@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_openai_client_calls_an_openai_models_tool(server, account, stubs, stream):
    calls_the_weather(stubs[0], "call_abc123")
    client = openai_client(server, account)
    calls, finish = openai_tool_calls(client, stream, model=GPT, messages=ASK, tools=[OPENAI_TOOL],
                                      tool_choice="required", parallel_tool_calls=False)
    assert calls == [{"id": "call_abc123", "name": "weather", "arguments": ARGUMENTS}]
    assert finish == "tool_calls"
    sent = stubs[0].requests[0]["body"]
    assert sent["tools"] == [OPENAI_TOOL]
    assert (sent["tool_choice"], sent["parallel_tool_calls"]) == ("required", False)
    assert_charged_exactly(server, account["user_id"], cost(GPT, 40, 12))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_anthropic_client_calls_a_claude_models_tool(server, account, stubs, stream):
    calls_the_weather(stubs[1], "toolu_01A", reply="Let me look.")
    client = anthropic_client(server, account)
    asked = dict(model=CLAUDE, max_tokens=256, messages=ASK, tools=[ANTHROPIC_TOOL],
                 tool_choice={"type": "tool", "name": "weather", "disable_parallel_tool_use": True})
    if stream:
        with client.messages.stream(**asked) as events:
            pieces = [event.partial_json for event in events if event.type == "input_json"]
            message = events.get_final_message()
        assert "".join(pieces) == ARGUMENTS and len(pieces) > 1
    else:
        message = client.messages.create(**asked)
    assert [block.type for block in message.content] == ["text", "tool_use"]
    assert message.content[0].text == "Let me look."
    used = message.content[1]
    assert (used.id, used.name, used.input) == ("toolu_01A", "weather", {"city": "Paris"})
    assert message.stop_reason == "tool_use"
    sent = stubs[1].requests[0]["body"]
    assert sent["tools"] == [ANTHROPIC_TOOL]
    assert sent["tool_choice"] == {"type": "tool", "name": "weather", "disable_parallel_tool_use": True}
    assert_charged_exactly(server, account["user_id"], cost(CLAUDE, 40, 12))


# ----------------------------------------------------------------- across formats

@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_openai_client_calls_a_claude_models_tool(server, account, stubs, stream):
    calls_the_weather(stubs[1], "toolu_01B")
    client = openai_client(server, account)
    calls, finish = openai_tool_calls(
        client, stream, model=CLAUDE, messages=[{"role": "system", "content": "Be brief."}, *ASK],
        tools=[OPENAI_TOOL], tool_choice={"type": "function", "function": {"name": "weather"}},
        parallel_tool_calls=False, stop=["END"])
    assert calls == [{"id": "toolu_01B", "name": "weather", "arguments": ARGUMENTS}]
    assert finish == "tool_calls"
    sent = stubs[1].requests[0]["body"]
    assert sent["tools"] == [ANTHROPIC_TOOL]
    assert sent["tool_choice"] == {"type": "tool", "name": "weather", "disable_parallel_tool_use": True}
    assert (sent["system"], sent["stop_sequences"]) == ("Be brief.", ["END"])
    assert_charged_exactly(server, account["user_id"], cost(CLAUDE, 40, 12))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_anthropic_client_calls_an_openai_models_tool(server, account, stubs, stream):
    calls_the_weather(stubs[0], "call_xyz")
    client = anthropic_client(server, account)
    asked = dict(model=GPT, max_tokens=256, system="Be brief.", messages=ASK, tools=[ANTHROPIC_TOOL],
                 tool_choice={"type": "any"})
    if stream:
        with client.messages.stream(**asked) as events:
            message = events.get_final_message()
    else:
        message = client.messages.create(**asked)
    assert [(block.type, block.id, block.name, block.input) for block in message.content] == [
        ("tool_use", "call_xyz", "weather", {"city": "Paris"})]
    assert message.stop_reason == "tool_use"
    sent = stubs[0].requests[0]["body"]
    assert sent["tools"] == [OPENAI_TOOL]
    assert sent["tool_choice"] == "required" and "parallel_tool_calls" not in sent
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert_charged_exactly(server, account["user_id"], cost(GPT, 40, 12))


# ----------------------------------------------------------------- a tool's result, the second call

def test_an_openai_clients_tool_result_reaches_claude_as_blocks(server, account, stubs):
    stubs[1].behaviour.reply = "It is sunny in Paris."
    conversation = [*ASK,
                    {"role": "assistant", "content": None, "tool_calls": [
                        {"id": "toolu_01C", "type": "function",
                         "function": {"name": "weather", "arguments": ARGUMENTS}}]},
                    {"role": "tool", "tool_call_id": "toolu_01C", "content": "sunny, 24 °C"}]
    completion = openai_client(server, account).chat.completions.create(model=CLAUDE, messages=conversation,
                                                                         tools=[OPENAI_TOOL])
    assert completion.choices[0].message.content == "It is sunny in Paris."
    assert completion.choices[0].finish_reason == "stop"
    assert stubs[1].requests[0]["body"]["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01C", "name": "weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01C",
                                      "content": "sunny, 24 °C"}]}]
    assert_charged_exactly(server, account["user_id"], cost(CLAUDE, 11, 7))


def test_an_anthropic_clients_tool_result_reaches_gpt_as_a_tool_message(server, account, stubs):
    stubs[0].behaviour.reply = "Sunny."
    conversation = [*ASK,
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "call_9", "name": "weather", "input": {"city": "Paris"}},
                        {"type": "tool_use", "id": "call_10", "name": "weather", "input": {"city": "Atlantis"}}]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "call_9", "content": [{"type": "text", "text": "sun"}],
                         "is_error": False},
                        {"type": "tool_result", "tool_use_id": "call_10", "content": "no such city",
                         "is_error": True},
                        {"type": "text", "text": "And tomorrow?"}]}]
    message = anthropic_client(server, account).messages.create(model=GPT, max_tokens=64, messages=conversation,
                                                                tools=[ANTHROPIC_TOOL])
    assert message.content[0].text == "Sunny." and message.stop_reason == "end_turn"
    assert stubs[0].requests[0]["body"]["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "weather", "arguments": ARGUMENTS}},
            {"id": "call_10", "type": "function", "function": {"name": "weather",
                                                              "arguments": '{"city":"Atlantis"}'}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": "sun"},
        {"role": "tool", "tool_call_id": "call_10", "content": "Error: no such city"},
        {"role": "user", "content": "And tomorrow?"}]


def test_a_tool_round_trip_is_two_calls_billed_as_two(server, account, stubs):
    stubs[1].behaviour.script = [
        {"tool_calls": [("toolu_01D", "weather", ARGUMENTS)], "reply": "", "prompt_tokens": 30,
         "completion_tokens": 9},
        {"reply": "Sunny.", "prompt_tokens": 50, "completion_tokens": 3}]
    client = anthropic_client(server, account)
    first = client.messages.create(model=CLAUDE, max_tokens=64, messages=ASK, tools=[ANTHROPIC_TOOL])
    assert first.stop_reason == "tool_use"
    second = client.messages.create(model=CLAUDE, max_tokens=64, tools=[ANTHROPIC_TOOL], messages=[
        *ASK, {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": first.content[0].id,
                                      "content": "sunny"}]}])
    assert second.content[0].text == "Sunny."
    assert Decimal(first.usage.model_extra["cost"]) + Decimal(second.usage.model_extra["cost"]) == \
        cost(CLAUDE, 30, 9) + cost(CLAUDE, 50, 3)
    assert_charged_exactly(server, account["user_id"], cost(CLAUDE, 30, 9) + cost(CLAUDE, 50, 3))


# ----------------------------------------------------------------- the hold covers everything sent

def test_a_large_tool_laden_call_is_billed_at_its_usage_never_above_its_hold(server, account, stubs):
    """Twenty tools with schemas of about a kilobyte each, as coding agents
    send them: the provider counts them as input, and the hold covered them."""
    schema = {"type": "object", "properties": {f"field_{n}": {"type": "string", "description": "x" * 30}
                                               for n in range(24)}}
    tools = [{"type": "function", "function": {"name": f"tool_{n}", "description": "d" * 100,
                                               "parameters": schema}} for n in range(20)]
    sent_bytes = len(json.dumps(tools).encode())
    assert sent_bytes > 20_000
    stubs[0].behaviour.prompt_tokens, stubs[0].behaviour.completion_tokens = 20_000, 40
    completion = openai_client(server, account).chat.completions.create(model=GPT, messages=ASK, tools=tools,
                                                                         max_tokens=100)
    assert Decimal(completion.usage.model_extra["cost"]) == cost(GPT, 20_000, 40)
    assert_charged_exactly(server, account["user_id"], cost(GPT, 20_000, 40))
    hold, = server.database.query("SELECT amount FROM transactions WHERE user_id = %s AND type = 'hold'",
                                  (account["user_id"],))[0]
    assert hold >= cost(GPT, 20_000, 100)


def test_the_anthropic_sdk_counts_a_tool_laden_prompt_for_free(server, account, stubs):
    stubs[1].behaviour.prompt_tokens = 321
    counted = anthropic_client(server, account).messages.count_tokens(model=CLAUDE, messages=ASK,
                                                                       tools=[ANTHROPIC_TOOL])
    assert counted.input_tokens == 321
    assert stubs[1].requests[0]["body"]["tools"] == [ANTHROPIC_TOOL]
    assert_charged_exactly(server, account["user_id"], 0)


@pytest.mark.parametrize("provider", [0, 1], ids=["gpt", "claude"])
def test_a_retried_stream_with_text_and_a_tool_call_replays_both_in_order(server, account, stubs, provider):
    """An Idempotency-Key retry of a stream is the stored answer streamed again:
    its text block, then its tool_use block, numbered in the order they come."""
    calls_the_weather(stubs[provider], "toolu_01R", reply="Let me look.")
    client = anthropic_client(server, account)
    asked = dict(model=[GPT, CLAUDE][provider], max_tokens=256, messages=ASK, tools=[ANTHROPIC_TOOL],
                 extra_headers={"Idempotency-Key": f"replayed-tool-stream-{provider}"})
    messages = []
    for _ in range(2):
        with client.messages.stream(**asked) as events:
            kinds = [(event.type, getattr(event, "index", None)) for event in events
                     if event.type in ("content_block_start", "content_block_stop")]
            messages.append(events.get_final_message())
    assert kinds == [("content_block_start", 0), ("content_block_stop", 0),
                     ("content_block_start", 1), ("content_block_stop", 1)]
    assert messages[1].content == messages[0].content
    assert [block.type for block in messages[1].content] == ["text", "tool_use"]
    assert messages[1].content[1].input == {"city": "Paris"}
    assert len(stubs[provider].requests) == 1
    assert_charged_exactly(server, account["user_id"], cost([GPT, CLAUDE][provider], 40, 12))
