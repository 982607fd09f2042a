"""OpenAI's Responses API at /v1/responses, driven by the official `openai`
SDK (`client.responses.create` and `client.responses.stream`) against the
service under gunicorn and provider stubs speaking each provider's real wire
format: text answers, function calls and their outputs, JSON answers and an
answer cut at max_output_tokens, from GPT and from Claude, each billed
exactly. Then what is refused, by the Flask test client: 400 naming the
field, no provider called, nothing held."""
import json

import httpx
import pydantic
import pytest

from tests.inference.refusals import (assert_nothing_happened, assert_refused_in_openais_shape,  # noqa: F401
                                      settings, token)
from tests.sdk_clients import account, assert_charged_exactly, close_clients, openai_client, server  # noqa: F401
from tests.support import bearer, cost

GPT = "openai/gpt-4o-mini"
CLAUDE = "anthropic/claude-3-5-haiku-20241022"
MODELS = {"gpt": (GPT, 0), "claude": (CLAUDE, 1)}  # the model, and the stub that serves it
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
           "additionalProperties": False}
TOOL = {"type": "function", "name": "weather", "description": "The weather in a city", "parameters": WEATHER,
        "strict": True}
ARGUMENTS = '{"city":"Paris"}'
REPORT = {"type": "object", "properties": {"city": {"type": "string"}, "celsius": {"type": "integer"}},
          "required": ["city", "celsius"], "additionalProperties": False}
ANSWER = '{"city":"Paris","celsius":24}'
STREAM_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
                 "response.content_part.added", "response.output_text.delta", "response.output_text.done",
                 "response.content_part.done", "response.output_item.done", "response.completed"]


class WeatherReport(pydantic.BaseModel):
    city: str
    celsius: int


def created(client, stream, **asked):
    """The final response, plain or as response.completed (or .incomplete)
    ended the stream, and the stream's events (none when plain)."""
    if not stream:
        return client.responses.create(**asked), []
    events = list(client.responses.create(**asked, stream=True))
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert events[-1].type in ("response.completed", "response.incomplete")
    return events[-1].response, events


def sent(stubs, which):
    (request,) = stubs[which].requests
    return request["body"]


# ----------------------------------------------------------------- text

@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("model", MODELS, ids=list(MODELS))
def test_a_text_answer(server, account, stubs, model, stream):
    model_id, which = MODELS[model]
    stubs[which].behaviour.reply = "Sunny in Paris today."
    stubs[which].behaviour.prompt_tokens, stubs[which].behaviour.completion_tokens = 30, 6
    client = openai_client(server, account)
    response, events = created(client, stream, model=model_id, instructions="Be brief.", input="Weather in Paris?",
                               max_output_tokens=100, temperature=0.2)
    assert response.output_text == "Sunny in Paris today."
    assert (response.status, response.model, response.object) == ("completed", model_id, "response")
    assert response.id.startswith("resp_") and response.output[0].id.startswith("msg_")
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (30, 6, 36)
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    assert response.usage.model_extra["cost"] == str(cost(model_id, 30, 6)).rstrip("0")
    if stream:
        kinds = [event.type for event in events]
        assert [kind for index, kind in enumerate(kinds) if kind not in kinds[:index]] == STREAM_EVENTS
        assert "".join(event.delta for event in events if event.type == "response.output_text.delta") == \
            "Sunny in Paris today."
    body = sent(stubs, which)
    if which == 0:
        assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "Weather in Paris?"}]
        assert (body["max_tokens"], body["temperature"]) == (100, 0.2)
    else:
        assert body["system"] == "Be brief." and body["messages"] == [{"role": "user", "content": "Weather in Paris?"}]
        assert (body["max_tokens"], body["temperature"]) == (100, 0.2)
    assert_charged_exactly(server, account["user_id"], cost(model_id, 30, 6))


def test_the_sdks_stream_helper_assembles_the_answer(server, account, stubs):
    stubs[0].behaviour.reply = "Sunny in Paris today."
    client = openai_client(server, account)
    with client.responses.stream(model=GPT, input=[{"role": "user", "content": "Weather?"}]) as stream:
        texts = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(texts) == final.output_text == "Sunny in Paris today."
    assert_charged_exactly(server, account["user_id"], cost(GPT, 11, 7))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("model", MODELS, ids=list(MODELS))
def test_an_answer_cut_at_max_output_tokens_is_incomplete(server, account, stubs, model, stream):
    model_id, which = MODELS[model]
    stubs[which].behaviour.reply = "Sunny in"
    stubs[which].behaviour.stop_reason = "length" if which == 0 else "max_tokens"
    stubs[which].behaviour.completion_tokens = 2
    response, events = created(openai_client(server, account), stream, model=model_id, input="Weather?",
                               max_output_tokens=16)
    assert (response.status, response.incomplete_details.reason) == ("incomplete", "max_output_tokens")
    assert response.output[0].status == "incomplete" and response.output_text == "Sunny in"
    if stream:
        assert events[-1].type == "response.incomplete"
    assert_charged_exactly(server, account["user_id"], cost(model_id, 11, 2))


# ----------------------------------------------------------------- function calls

@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("model", MODELS, ids=list(MODELS))
def test_a_function_call(server, account, stubs, model, stream):
    model_id, which = MODELS[model]
    call_id = "call_abc123" if which == 0 else "toolu_01A"
    stubs[which].behaviour.tool_calls = [(call_id, "weather", ARGUMENTS)]
    stubs[which].behaviour.reply = ""
    stubs[which].behaviour.prompt_tokens, stubs[which].behaviour.completion_tokens = 40, 12
    response, events = created(openai_client(server, account), stream, model=model_id, input="Weather in Paris?",
                               tools=[TOOL], tool_choice="required", parallel_tool_calls=False)
    (call,) = response.output
    assert (call.type, call.call_id, call.name, call.arguments, call.status) == (
        "function_call", call_id, "weather", ARGUMENTS, "completed")
    assert call.id.startswith("fc_") and response.status == "completed"
    assert (response.tool_choice, response.parallel_tool_calls, response.tools[0].name) == ("required", False,
                                                                                              "weather")
    if stream:
        added = [event for event in events if event.type == "response.output_item.added"]
        assert [(event.item.type, event.item.call_id, event.item.name) for event in added] == [
            ("function_call", call_id, "weather")]
        pieces = [event.delta for event in events if event.type == "response.function_call_arguments.delta"]
        assert len(pieces) > 1 and "".join(pieces) == ARGUMENTS
        (done,) = [event for event in events if event.type == "response.function_call_arguments.done"]
        assert (done.arguments, done.item_id) == (ARGUMENTS, call.id)
    body = sent(stubs, which)
    if which == 0:
        assert body["tools"] == [{"type": "function", "function": {
            "name": "weather", "description": "The weather in a city", "parameters": WEATHER}}]
        assert (body["tool_choice"], body["parallel_tool_calls"]) == ("required", False)
    else:
        assert body["tools"] == [{"name": "weather", "description": "The weather in a city", "input_schema": WEATHER}]
        assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert_charged_exactly(server, account["user_id"], cost(model_id, 40, 12))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("model", MODELS, ids=list(MODELS))
def test_a_function_calls_output_goes_back(server, account, stubs, model, stream):
    model_id, which = MODELS[model]
    stubs[which].behaviour.reply = "It is sunny in Paris."
    history = [{"role": "developer", "content": "Use the tool."},
               {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
               {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
                "content": [{"type": "output_text", "text": "Let me look.", "annotations": []}]},
               {"type": "function_call", "id": "fc_1", "call_id": "call_w1", "name": "weather",
                "arguments": ARGUMENTS, "status": "completed"},
               {"type": "function_call_output", "call_id": "call_w1", "output": "sunny, 24 °C"}]
    response, _ = created(openai_client(server, account), stream, model=model_id, input=history, tools=[TOOL])
    assert response.output_text == "It is sunny in Paris."
    body = sent(stubs, which)
    if which == 0:
        assert body["messages"] == [
            {"role": "system", "content": "Use the tool."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [
                {"id": "call_w1", "type": "function", "function": {"name": "weather", "arguments": ARGUMENTS}}]},
            {"role": "tool", "tool_call_id": "call_w1", "content": "sunny, 24 °C"}]
    else:
        assert body["system"] == "Use the tool."
        assert body["messages"] == [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "call_w1", "name": "weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_w1", "content": "sunny, 24 °C"}]}]
    assert_charged_exactly(server, account["user_id"], cost(model_id, 11, 7))


# ----------------------------------------------------------------- JSON answers

@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("model", MODELS, ids=list(MODELS))
def test_a_json_schema_answer(server, account, stubs, model, stream):
    model_id, which = MODELS[model]
    if which == 0:
        stubs[0].behaviour.reply = ANSWER
    else:
        stubs[1].behaviour.tool_calls = [("toolu_01J", "weather_report", ANSWER)]
        stubs[1].behaviour.reply = ""
    text = {"format": {"type": "json_schema", "name": "weather_report", "schema": REPORT, "strict": True}}
    response, _ = created(openai_client(server, account), stream, model=model_id, input="Weather in Paris, as JSON?",
                          text=text)
    assert json.loads(response.output_text) == {"city": "Paris", "celsius": 24}
    assert [item.type for item in response.output] == ["message"]
    body = sent(stubs, which)
    if which == 0:
        assert body["response_format"] == {"type": "json_schema", "json_schema": {
            "name": "weather_report", "schema": REPORT, "strict": True}}
    else:
        assert body["tool_choice"] == {"type": "tool", "name": "weather_report"}
    assert_charged_exactly(server, account["user_id"], cost(model_id, 11, 7))


def test_the_sdks_parse_reads_a_json_answer(server, account, stubs):
    stubs[0].behaviour.reply = ANSWER
    parsed = openai_client(server, account).responses.parse(model=GPT, input="Weather in Paris?",
                                                             text_format=WeatherReport)
    assert parsed.output_parsed == WeatherReport(city="Paris", celsius=24)
    assert stubs[0].requests[0]["body"]["response_format"]["json_schema"]["name"] == "WeatherReport"


# ----------------------------------------------------------------- idempotency

def test_a_retried_stream_replays_the_answer_unbilled(server, account, stubs):
    stubs[0].behaviour.tool_calls = [("call_abc123", "weather", ARGUMENTS)]
    stubs[0].behaviour.reply = "Let me look."
    client = openai_client(server, account)
    asked = dict(model=GPT, input="Weather?", tools=[TOOL], stream=True,
                 extra_headers={"Idempotency-Key": "responses-retry-1"})
    first = list(client.responses.create(**asked))[-1].response
    again = list(client.responses.create(**asked))
    assert [event.sequence_number for event in again] == list(range(len(again)))
    assert again[-1].response.model_dump() == first.model_dump()
    assert [item.id for item in first.output] == [event.item.id for event in again
                                                 if event.type == "response.output_item.added"]
    assert len(stubs[0].requests) == 1
    assert_charged_exactly(server, account["user_id"], cost(GPT, 11, 7))


# ----------------------------------------------------------------- refused

ASK = {"role": "user", "content": "Weather?"}
REFUSALS = {
    "store": ({"store": True}, "store"),
    "previous_response_id": ({"previous_response_id": "resp_123"}, "previous_response_id"),
    "an item of an unknown type": ({"input": [ASK, {"type": "item_reference", "id": "msg_1"}]}, "input.1"),
    "an output for no call": (
        {"input": [ASK, {"type": "function_call_output", "call_id": "call_none", "output": "sun"}]},
        "input.1.call_id"),
    "an output before its call": (
        {"input": [ASK, {"type": "function_call_output", "call_id": "call_1", "output": "sun"},
                   {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{}"}]},
        "input.1.call_id"),
    "a tool to a model without tools": ({"model": "local/echo", "tools": [TOOL]}, "tools"),
    "a tool of a type not served": ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
    "a choice of a tool not offered": ({"tools": [TOOL], "tool_choice": {"type": "function", "name": "clock"}},
                                       "tool_choice.name"),
    "a JSON answer from a model without it": (
        {"model": "local/echo", "text": {"format": {"type": "json_object"}}}, "text.format"),
    "arguments that are no JSON object": (
        {"input": [ASK, {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "[1]"}]},
        "input.1.arguments"),
}


@pytest.mark.parametrize("change, field", REFUSALS.values(), ids=list(REFUSALS))
def test_refused_naming_the_field(client, database, stubs, token, change, field):
    response = client.post("/v1/responses", headers=bearer(token),
                           json={"model": GPT, "input": [ASK], **change})
    assert_refused_in_openais_shape(response, field)
    if field in ("store", "previous_response_id"):
        assert "send the whole conversation in input" in response.get_json()["error"]["message"]
    assert_nothing_happened(database, stubs)


def test_a_stream_cut_short_ends_in_response_failed(server, account, stubs):
    stubs[0].behaviour.cut_after_chunks = 2
    stubs[0].behaviour.reply = "one two three four"
    with httpx.stream("POST", f"{server.url}/v1/responses", headers=bearer(account["key"]),
                      json={"model": GPT, "input": "Hi", "stream": True}) as answer:
        events = [json.loads(line[len("data: "):]) for line in answer.iter_lines() if line.startswith("data: ")]
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["status"] == "failed" and events[-1]["response"]["error"]["code"] == "provider_error"
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
