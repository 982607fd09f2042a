"""OpenAI's Agents SDK runs an agent with a function tool through
/v1/chat/completions and through /v1/responses (its default model,
OpenAIResponsesModel), plain and streamed: the model (the OpenAI stub) calls
the tool, the SDK runs it and sends its result, and the final answer, which
the stub makes from that result, comes back. Tracing, which would call
OpenAI, is off."""
import asyncio
import os

import pytest
from agents import (Agent, OpenAIChatCompletionsModel, OpenAIResponsesModel, Runner, function_tool,
                    set_tracing_disabled)
from openai import AsyncOpenAI

from tests.sdk_clients import account, assert_charged_exactly, server  # noqa: F401
from tests.support import cost

MODEL = "openai/gpt-4o-mini"
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
set_tracing_disabled(True)


@function_tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny and 24 °C in {city}"


def answers_from_the_tool(body):
    """The stub as the model: it calls the tool, then answers with what the tool said."""
    results = [message["content"] for message in body["messages"] if message["role"] == "tool"]
    if results:
        return {"reply": f"It is {results[-1]}.", "tool_calls": []}
    return {"reply": "", "tool_calls": [("call_weather_1", "weather", '{"city":"Paris"}')]}


async def run_agent(server, key, stream, model_class=OpenAIChatCompletionsModel):
    client = AsyncOpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    agent = Agent(name="forecaster", instructions="Answer with the weather tool.", tools=[weather],
                  model=model_class(model=MODEL, openai_client=client))
    try:
        if not stream:
            return (await Runner.run(agent, "What is the weather in Paris?")).final_output
        result = Runner.run_streamed(agent, "What is the weather in Paris?")
        kinds = {event.type async for event in result.stream_events()}
        assert "raw_response_event" in kinds
        return result.final_output
    finally:
        await client.close()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_agent_runs_its_function_tool_through_the_service(server, account, stubs, stream):  # noqa: F811
    openai_stub, key, user_id = stubs[0], account["key"], account["user_id"]
    openai_stub.behaviour.respond = answers_from_the_tool
    final = asyncio.run(run_agent(server, key, stream))
    assert final == "It is sunny and 24 °C in Paris."
    first, second = openai_stub.requests
    assert [tool["function"]["name"] for tool in first["body"]["tools"]] == ["weather"]
    assert second["body"]["messages"][-1] == {"role": "tool", "tool_call_id": "call_weather_1",
                                              "content": "sunny and 24 °C in Paris"}
    assert first["body"].get("stream", False) is stream
    assert_charged_exactly(server, user_id, 2 * cost(MODEL, 11, 7))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_agent_on_the_responses_api_runs_its_function_tool(server, account, stubs, stream):  # noqa: F811
    openai_stub, key, user_id = stubs[0], account["key"], account["user_id"]
    openai_stub.behaviour.respond = answers_from_the_tool
    final = asyncio.run(run_agent(server, key, stream, OpenAIResponsesModel))
    assert final == "It is sunny and 24 °C in Paris."
    first, second = openai_stub.requests
    assert first["body"]["messages"][0] == {"role": "system", "content": "Answer with the weather tool."}
    assert [tool["function"]["name"] for tool in first["body"]["tools"]] == ["weather"]
    assert second["body"]["messages"][-2]["tool_calls"][0]["id"] == "call_weather_1"
    assert second["body"]["messages"][-1] == {"role": "tool", "tool_call_id": "call_weather_1",
                                              "content": "sunny and 24 °C in Paris"}
    assert first["body"].get("stream", False) is stream
    assert_charged_exactly(server, user_id, 2 * cost(MODEL, 11, 7))
