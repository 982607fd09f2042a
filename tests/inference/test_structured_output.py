"""JSON answers (`response_format`) through the inference API, driven by the
official `openai` SDK against the service under gunicorn and provider stubs
speaking each provider's real wire format: passed as is to an OpenAI-format
provider; for Anthropic's models, asked as a forced tool whose input comes
back as the message's content, plain and streamed, ending in "stop". Then
what is refused, by the Flask test client: 400 naming the field, no
provider called, nothing held."""
import json

import pydantic
import pytest

from tests.inference.refusals import (assert_nothing_happened, assert_refused_in_openais_shape,  # noqa: F401
                                      settings, token)
from tests.inference.test_tools import OPENAI_TOOL, streamed_openai_calls
from tests.sdk_clients import account, assert_charged_exactly, close_clients, openai_client, server  # noqa: F401
from tests.support import bearer, cost

GPT = "openai/gpt-4o-mini"
CLAUDE = "anthropic/claude-3-5-haiku-20241022"
REPORT = {"type": "object", "properties": {"city": {"type": "string"}, "celsius": {"type": "integer"}},
          "required": ["city", "celsius"], "additionalProperties": False}
AS_SCHEMA = {"type": "json_schema", "json_schema": {"name": "weather_report", "schema": REPORT, "strict": True}}
ANSWER = '{"city":"Paris","celsius":24}'
ASK = [{"role": "user", "content": "Weather in Paris, as JSON?"}]


class WeatherReport(pydantic.BaseModel):
    city: str
    celsius: int


def content_of(client, stream, **asked):
    """(the answer's content, its finish reason), plain or assembled from the stream."""
    if stream:
        text, finish = "", None
        for chunk in client.chat.completions.create(**asked, stream=True):
            if chunk.choices:
                assert not chunk.choices[0].delta.tool_calls
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
        return text, finish
    choice = client.chat.completions.create(**asked).choices[0]
    assert choice.message.tool_calls is None
    return choice.message.content, choice.finish_reason


def claude_answers_with_the_tool(stub, name, arguments=ANSWER):
    stub.behaviour.tool_calls = [("toolu_01J", name, arguments)]
    stub.behaviour.reply = ""
    stub.behaviour.prompt_tokens, stub.behaviour.completion_tokens = 90, 15


# ----------------------------------------------------------------- to an OpenAI-format provider, as is

@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("response_format", [AS_SCHEMA, {"type": "json_object"}], ids=["json_schema", "json_object"])
def test_an_openai_clients_response_format_reaches_gpt_as_is(server, account, stubs, stream, response_format):
    stubs[0].behaviour.reply = ANSWER
    stubs[0].behaviour.prompt_tokens, stubs[0].behaviour.completion_tokens = 60, 12
    content, finish = content_of(openai_client(server, account), stream, model=GPT, messages=ASK,
                                 response_format=response_format)
    assert (content, finish) == (ANSWER, "stop")
    assert stubs[0].requests[0]["body"]["response_format"] == response_format
    assert_charged_exactly(server, account["user_id"], cost(GPT, 60, 12))


def test_text_is_the_default_and_is_not_sent(server, account, stubs):
    openai_client(server, account).chat.completions.create(model=GPT, messages=ASK, response_format={"type": "text"})
    assert "response_format" not in stubs[0].requests[0]["body"]


def test_gpt_may_be_offered_tools_beside_a_schema(server, account, stubs):
    stubs[0].behaviour.reply = ANSWER
    openai_client(server, account).chat.completions.create(model=GPT, messages=ASK, response_format=AS_SCHEMA,
                                                           tools=[OPENAI_TOOL])
    sent = stubs[0].requests[0]["body"]
    assert (sent["response_format"], sent["tools"]) == (AS_SCHEMA, [OPENAI_TOOL])


# ----------------------------------------------------------------- to Anthropic's models, as a forced tool

@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_schema_reaches_claude_as_a_forced_tool_whose_input_is_the_answer(server, account, stubs, stream):
    claude_answers_with_the_tool(stubs[1], "weather_report")
    content, finish = content_of(openai_client(server, account), stream, model=CLAUDE, messages=ASK,
                                 response_format={**AS_SCHEMA, "json_schema": {
                                     **AS_SCHEMA["json_schema"], "description": "A city's weather"}})
    assert json.loads(content) == {"city": "Paris", "celsius": 24}
    assert finish == "stop"
    sent = stubs[1].requests[0]["body"]
    assert sent["tools"] == [{"name": "weather_report", "input_schema": REPORT, "description": "A city's weather"}]
    assert sent["tool_choice"] == {"type": "tool", "name": "weather_report"}
    assert "response_format" not in sent
    assert_charged_exactly(server, account["user_id"], cost(CLAUDE, 90, 15))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_json_object_reaches_claude_as_a_forced_tool_taking_any_object(server, account, stubs, stream):
    claude_answers_with_the_tool(stubs[1], "json_object", '{"anything":[1,2]}')
    content, finish = content_of(openai_client(server, account), stream, model=CLAUDE, messages=ASK,
                                 response_format={"type": "json_object"})
    assert (json.loads(content), finish) == ({"anything": [1, 2]}, "stop")
    sent = stubs[1].requests[0]["body"]
    assert sent["tools"] == [{"name": "json_object", "input_schema": {"type": "object"}}]
    assert sent["tool_choice"] == {"type": "tool", "name": "json_object"}
    assert_charged_exactly(server, account["user_id"], cost(CLAUDE, 90, 15))


def test_the_sdks_parse_gets_its_model_back_from_claude(server, account, stubs):
    """The SDK's own structured-output helper: a pydantic model in, its strict
    schema sent, the answer parsed back into the model."""
    claude_answers_with_the_tool(stubs[1], "WeatherReport")
    completion = openai_client(server, account).chat.completions.parse(model=CLAUDE, messages=ASK,
                                                                       response_format=WeatherReport)
    assert completion.choices[0].message.parsed == WeatherReport(city="Paris", celsius=24)
    tool, = stubs[1].requests[0]["body"]["tools"]
    assert tool["name"] == "WeatherReport" and tool["input_schema"]["required"] == ["city", "celsius"]
    assert_charged_exactly(server, account["user_id"], cost(CLAUDE, 90, 15))


def test_a_streamed_json_answer_comes_as_several_content_deltas(server, account, stubs):
    claude_answers_with_the_tool(stubs[1], "weather_report")
    chunks = list(openai_client(server, account).chat.completions.create(
        model=CLAUDE, messages=ASK, response_format=AS_SCHEMA, stream=True))
    pieces = [chunk.choices[0].delta.content for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]
    assert "".join(pieces) == ANSWER and len(pieces) > 1
    assert streamed_openai_calls(chunks) == ([], "stop")


# ----------------------------------------------------------------- refused


REFUSALS = {
    "a schema that is no object": (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": ["a schema"]}}},
        "response_format.json_schema.schema"),
    "a schema name a provider refuses": (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "a report", "schema": REPORT}}},
        "response_format.json_schema.name"),
    "a json_schema without its json_schema": ({"response_format": {"type": "json_schema"}},
                                              "response_format.json_schema"),
    "JSON of a model without structured output": (
        {"model": "local/echo", "response_format": {"type": "json_object"}}, "response_format"),
    "a schema and tools for Claude": (
        {"model": CLAUDE, "response_format": AS_SCHEMA, "tools": [OPENAI_TOOL]}, "response_format"),
}


@pytest.mark.parametrize("change, field", REFUSALS.values(), ids=REFUSALS.keys())
def test_response_format_refusals_name_the_field(client, token, database, stubs, change, field):
    response = client.post("/v1/chat/completions", headers=bearer(token),
                           json={"model": GPT, "messages": ASK, **change})
    assert_refused_in_openais_shape(response, field)
    assert_nothing_happened(database, stubs)


def test_text_is_asked_of_any_model(client, token, database, stubs):
    response = client.post("/v1/chat/completions", headers=bearer(token), json={
        "model": "local/echo", "messages": ASK, "response_format": {"type": "text"}})
    assert response.status_code == 200, response.get_json()
