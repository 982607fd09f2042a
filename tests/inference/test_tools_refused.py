"""What the inference API refuses about tools: each gets 400 in the format's
own error shape naming the field, no provider is called, and nothing is held."""
import pytest

from tests.inference.refusals import (assert_nothing_happened, assert_refused_in_anthropics_shape,  # noqa: F401
                                      assert_refused_in_openais_shape, settings, token)
from tests.support import bearer

GPT = "openai/gpt-4o-mini"
CLAUDE = "anthropic/claude-3-5-haiku-20241022"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
ASK = {"role": "user", "content": "Weather?"}
CALLED = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]}


def function(name="weather", parameters=SCHEMA):
    return {"type": "function", "function": {"name": name, "parameters": parameters}}



OPENAI_REFUSALS = {
    "a tool schema that is no object": (
        {"tools": [function(parameters="a schema")]}, "tools.0.function.parameters"),
    "a tool's result for no call": (
        {"messages": [ASK, {"role": "tool", "tool_call_id": "call_none", "content": "sun"}]},
        "messages.1.tool_call_id"),
    "a tool's result without its call's id": (
        {"messages": [ASK, CALLED, {"role": "tool", "content": "sun"}]}, "messages.2.tool_call_id"),
    "a choice of a tool not offered": (
        {"tools": [function()], "tool_choice": {"type": "function", "function": {"name": "clock"}}},
        "tool_choice.function.name"),
    "a choice without tools": ({"tool_choice": "required"}, "tool_choice"),
    "two tools of one name": ({"tools": [function(), function()]}, "tools.1.function.name"),
    "arguments that are no JSON object": (
        {"messages": [ASK, {**CALLED, "tool_calls": [{**CALLED["tool_calls"][0], "function": {
            "name": "weather", "arguments": "[1, 2]"}}]}]}, "messages.1.tool_calls.0.function.arguments"),
    "a tool name a provider refuses": ({"tools": [function(name="the weather")]}, "tools.0.function.name"),
    "tools to a model without them": ({"model": "local/echo", "tools": [function()]}, "tools"),
    "a tool call to a model without tools": ({"model": "local/echo", "messages": [ASK, CALLED]}, "tools"),
}

ANTHROPIC_REFUSALS = {
    "a tool schema that is no object": (
        {"tools": [{"name": "weather", "input_schema": ["a schema"]}]}, "tools.0.input_schema"),
    "a tool's result for no call": (
        {"messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_none", "content": "sun"}]}]},
        "messages.0.content.0.tool_use_id"),
    "a choice of a tool not offered": (
        {"tools": [{"name": "weather", "input_schema": SCHEMA}], "tool_choice": {"type": "tool", "name": "clock"}},
        "tool_choice.name"),
    "a server tool": ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
    "a tool's use in the user's turn": (
        {"messages": [{"role": "user", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}]}]}, "messages.0.content.0"),
    "tools to a model without them": (
        {"model": "local/echo", "tools": [{"name": "weather", "input_schema": SCHEMA}]}, "tools"),
}


@pytest.mark.parametrize("change, field", OPENAI_REFUSALS.values(), ids=OPENAI_REFUSALS.keys())
def test_openai_format_refusals_name_the_field(client, token, database, stubs, change, field):
    response = client.post("/v1/chat/completions", headers=bearer(token),
                           json={"model": GPT, "messages": [ASK], **change})
    assert_refused_in_openais_shape(response, field)
    assert_nothing_happened(database, stubs)


@pytest.mark.parametrize("model", [CLAUDE, GPT])
@pytest.mark.parametrize("change, field", ANTHROPIC_REFUSALS.values(), ids=ANTHROPIC_REFUSALS.keys())
def test_anthropic_format_refusals_name_the_field(client, token, database, stubs, change, field, model):
    response = client.post("/v1/messages", headers={"x-api-key": token},
                           json={"model": model, "max_tokens": 64, "messages": [ASK], **change})
    assert_refused_in_anthropics_shape(response, field)
    assert_nothing_happened(database, stubs)
