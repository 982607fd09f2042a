"""The inference API driven by the official `openai` and `anthropic` SDKs, as
users drive it, against the service under gunicorn and provider stubs that
speak the real wire formats. Each call's bill is checked against the usage the
SDK received, and the ledger is left with nothing held."""
import threading
from decimal import Decimal

import anthropic
import httpx
import openai
import pytest

from tests.sdk_clients import (account, anthropic_client, assert_charged_exactly, close_clients,  # noqa: F401
                               eventually, ledger, openai_client, server)
from tests.support import HOUSE_OPENAI, bearer, cost, live_user


def test_models_list_is_the_catalog(server, account):
    ids = [model.id for model in openai_client(server, account).models.list()]
    assert "openai/gpt-4o-mini" in ids and "local/echo" in ids and "anthropic/claude-3-5-haiku-20241022" in ids


def test_a_chat_completion_is_billed_as_its_usage(server, account, stubs):
    stubs[0].behaviour.prompt_tokens, stubs[0].behaviour.completion_tokens = 17, 9
    completion = openai_client(server, account).chat.completions.create(
        model="openai/gpt-4o-mini", messages=[{"role": "system", "content": "Be brief."},
                                              {"role": "user", "content": "Hi"}], max_tokens=50)
    assert completion.choices[0].message.content == "Hello from the stub."
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (17, 9)
    charged = cost("openai/gpt-4o-mini", 17, 9)
    assert Decimal(completion.usage.model_extra["cost"]) == charged
    assert_charged_exactly(server, account["user_id"], charged)
    rows = ledger(server, account["user_id"])[2]
    assert [row[2:] for row in rows] == [("openai/gpt-4o-mini", account["key_id"])] * 2
    sent = stubs[0].requests[0]
    assert sent["headers"]["Authorization"] == f"Bearer {HOUSE_OPENAI}"
    assert sent["body"]["messages"][0] == {"role": "system", "content": "Be brief."}


def test_a_streamed_chat_completion_is_billed_as_the_usage_chunk_says(server, account, stubs):
    stubs[0].behaviour.prompt_tokens, stubs[0].behaviour.completion_tokens = 12, 4
    chunks = list(openai_client(server, account).chat.completions.create(
        model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], max_tokens=50, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "Hello from the stub."
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and (usage.prompt_tokens, usage.completion_tokens) == (12, 4)
    assert Decimal(usage.model_extra["cost"]) == cost("openai/gpt-4o-mini", 12, 4)
    assert_charged_exactly(server, account["user_id"], cost("openai/gpt-4o-mini", 12, 4))
    assert stubs[0].requests[0]["body"]["stream_options"] == {"include_usage": True}


def test_usage_is_asked_upstream_even_when_the_client_does_not(server, account, stubs):
    chunks = list(openai_client(server, account).chat.completions.create(
        model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], max_tokens=50, stream=True))
    assert all(chunk.usage is None for chunk in chunks)
    assert stubs[0].requests[0]["body"]["stream_options"] == {"include_usage": True}
    assert_charged_exactly(server, account["user_id"], cost("openai/gpt-4o-mini", 11, 7))


def test_anthropic_messages_create_and_stream_are_billed_as_their_usage(server, account, stubs):
    client = anthropic_client(server, account)
    stubs[1].behaviour.prompt_tokens, stubs[1].behaviour.completion_tokens = 20, 6
    message = client.messages.create(model="anthropic/claude-3-5-haiku-20241022", max_tokens=64, system="Be brief.",
                                     messages=[{"role": "user", "content": "Hi"}])
    assert message.content[0].text == "Hello from the stub."
    assert (message.usage.input_tokens, message.usage.output_tokens) == (20, 6)
    with client.messages.stream(model="anthropic/claude-3-5-haiku-20241022", max_tokens=64,
                                messages=[{"role": "user", "content": "Hi"}]) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert "".join(event.text for event in events if event.type == "text") == "Hello from the stub."
    assert (final.usage.input_tokens, final.usage.output_tokens) == (20, 6)
    usage, = [event.usage for event in events if event.type == "message_delta"]
    assert Decimal(usage.model_extra["cost"]) == cost("anthropic/claude-3-5-haiku-20241022", 20, 6)
    assert_charged_exactly(server, account["user_id"], 2 * cost("anthropic/claude-3-5-haiku-20241022", 20, 6))
    assert stubs[1].requests[0]["body"]["system"] == "Be brief."


def test_either_format_reaches_any_model(server, account, stubs):
    message = anthropic_client(server, account).messages.create(
        model="openai/gpt-4o-mini", max_tokens=64, messages=[{"role": "user", "content": "Hi"}])
    assert message.content[0].text == "Hello from the stub." and stubs[0].requests
    completion = openai_client(server, account).chat.completions.create(
        model="local/echo", messages=[{"role": "user", "content": "ping"}])
    assert "ping" in completion.choices[0].message.content


def test_a_client_that_hangs_up_mid_stream_is_billed_exactly(server, account, stubs):
    openai_stub = stubs[0]
    openai_stub.behaviour.chunks = [f"word{n} " for n in range(10)]
    openai_stub.behaviour.chunk_delay_seconds = 0.2
    openai_stub.behaviour.prompt_tokens, openai_stub.behaviour.completion_tokens = 15, 10
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", headers=bearer(account["key"]), timeout=10,
                      json={"model": "openai/gpt-4o-mini", "stream": True, "max_tokens": 100,
                            "messages": [{"role": "user", "content": "Hi"}]}) as response:
        lines = response.iter_lines()
        received = [line for line, _ in zip(lines, range(6)) if line.startswith("data:")]
    assert len(received) >= 2
    # The service reads the rest of the provider's stream and settles on its usage.
    eventually(lambda: len(ledger(server, account["user_id"])[2]) == 2)
    assert_charged_exactly(server, account["user_id"], cost("openai/gpt-4o-mini", 15, 10))
    assert openai_stub.abandoned == 0


@pytest.mark.parametrize("how", ["cut_after_chunks", "error_event_after_chunks"])
def test_a_stream_the_provider_breaks_is_billed_on_what_came_and_ends_in_an_error(server, account, stubs, how):
    anthropic_stub = stubs[1]
    anthropic_stub.behaviour.chunks = ["one ", "two ", "three ", "four "]
    setattr(anthropic_stub.behaviour, how, 2)
    client = anthropic_client(server, account)
    received = []
    with pytest.raises(anthropic.APIStatusError) as failure:
        with client.messages.stream(model="anthropic/claude-3-5-haiku-20241022", max_tokens=64,
                                    messages=[{"role": "user", "content": "Hi"}]) as stream:
            received.extend(stream.text_stream)
    assert "".join(received) == "one two "
    assert "broke off" in str(failure.value)
    # Billed on the usage as far as it came: message_start's 11 input tokens; the output, which only
    # message_delta counts, estimated at the bytes of the text the provider sent ("one two ").
    assert_charged_exactly(server, account["user_id"], cost("anthropic/claude-3-5-haiku-20241022", 11, 8))


def test_errors_come_in_each_formats_own_shape(server, account):
    with pytest.raises(openai.NotFoundError) as missing:
        openai_client(server, account).chat.completions.create(model="openai/nope", messages=[
            {"role": "user", "content": "Hi"}])
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(anthropic.BadRequestError) as bad:
        anthropic_client(server, account).messages.create(model="local/echo", max_tokens=0, messages=[
            {"role": "user", "content": "Hi"}])
    assert bad.value.body["error"]["type"] == "invalid_request_error" and "max_tokens" in str(bad.value)
    with pytest.raises(openai.AuthenticationError):
        openai_client(server, account, key="qm-unknown").models.list()
    with pytest.raises(openai.BadRequestError) as tools:
        openai_client(server, account).chat.completions.create(model="local/echo", messages=[
            {"role": "user", "content": "Hi"}], tools=[{"type": "function", "function": {"name": "f"}}])
    assert tools.value.body["param"] == "tools"


def test_a_keys_allow_list_spend_limit_and_revocation(server, account, stubs):
    url, headers = f"{server.url}/api/v1/access-keys", account["headers"]
    limited = httpx.post(url, headers=headers, json={"name": "limited", "allowed_models": ["openai/gpt-4o-mini"],
                                                      "spend_limit": "0.0001", "spend_limit_period": "day"}).json()
    client = openai_client(server, account, key=limited["key"])
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="local/echo", messages=[{"role": "user", "content": "Hi"}])
    # Each hold is the most 1,000 tokens could cost (0.0006 at 0.60 per million): past the 0.0001 limit.
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="openai/gpt-4o-mini", max_tokens=1000,
                                       messages=[{"role": "user", "content": "Hi"}])
    assert refused.value.status_code == 402 and refused.value.body["code"] == "spend_limit_reached"
    assert [model.id for model in client.models.list()] == ["openai/gpt-4o-mini"]
    assert httpx.delete(f"{url}/{limited['id']}", headers=headers).status_code == 204
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_a_keys_spend_limit_holds_under_a_parallel_burst(server, account, stubs):
    url, headers = f"{server.url}/api/v1/access-keys", account["headers"]
    # Each call holds 26 × 0.15 + 100 × 0.60 per million = 0.0000639; the limit fits three.
    key = httpx.post(url, headers=headers, json={"name": "burst", "spend_limit": "0.0002",
                                                  "spend_limit_period": "total"}).json()
    # Long enough that every hold is made while the first three calls still run.
    stubs[0].behaviour.stall_seconds = 3
    barrier, statuses = threading.Barrier(10), []

    def call():
        barrier.wait()
        response = httpx.post(f"{server.url}/v1/chat/completions", headers=bearer(key["key"]), timeout=20,
                              json={"model": "openai/gpt-4o-mini", "max_tokens": 100,
                                    "messages": [{"role": "user", "content": "Hi"}]})
        statuses.append(response.status_code)

    threads = [threading.Thread(target=call) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] * 3 + [402] * 7
    listed = {item["id"]: item for item in httpx.get(url, headers=headers).json()["access_keys"]}
    assert Decimal(listed[key["id"]]["spent"]) == 3 * cost("openai/gpt-4o-mini", 11, 7)


def test_a_retried_stream_replays_in_the_format_it_asked_for(server, account, stubs):
    headers = {**bearer(account["key"]), "Idempotency-Key": "sdk-stream-1"}
    body = {"model": "openai/gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Hi"}]}

    def lines():
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, headers=headers) as response:
            return response.headers.get("Idempotent-Replayed"), [line for line in response.iter_lines() if line]

    first_replayed, first = lines()
    again_replayed, again = lines()
    assert (first_replayed, again_replayed) == (None, "true")
    assert again[-1] == first[-1] == "data: [DONE]"
    # One delta with the whole text, the finish, the usage: the same usage as the first time.
    assert len(again) == 5 and again[-2] == first[-2]
    assert len(stubs[0].requests) == 1
    assert_charged_exactly(server, account["user_id"], cost("openai/gpt-4o-mini", 11, 7))


def test_stop_sequences_are_honoured_in_either_format(server, account, stubs):
    completion = openai_client(server, account).chat.completions.create(
        model="local/echo", messages=[{"role": "user", "content": "alpha beta gamma"}], stop="gamma")
    assert completion.choices[0].message.content == "You said : alpha beta "
    openai_client(server, account).chat.completions.create(
        model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], stop=["END", "###"])
    anthropic_client(server, account).messages.create(
        model="anthropic/claude-3-5-haiku-20241022", max_tokens=20, stop_sequences=["END"],
        messages=[{"role": "user", "content": "Hi"}])
    assert stubs[0].requests[0]["body"]["stop"] == ["END", "###"]
    assert stubs[1].requests[0]["body"]["stop_sequences"] == ["END"]


def test_why_an_answer_ended_reaches_either_sdk(server, account, stubs):
    """As the provider said it, in the client's format; a local model names the stop sequence it cut at."""
    claude = "anthropic/claude-3-5-haiku-20241022"
    messages = [{"role": "user", "content": "alpha beta gamma"}]
    local = anthropic_client(server, account).messages.create(
        model="local/echo", max_tokens=20, stop_sequences=["gamma"], messages=messages)
    assert (local.stop_reason, local.stop_sequence, local.content[0].text) == ("stop_sequence", "gamma",
                                                                               "You said : alpha beta ")
    stubs[1].behaviour.stop_reason, stubs[1].behaviour.stop_sequence = "stop_sequence", "END"
    plain = anthropic_client(server, account).messages.create(
        model=claude, max_tokens=20, stop_sequences=["END"], messages=messages)
    with anthropic_client(server, account).messages.stream(
            model=claude, max_tokens=20, stop_sequences=["END"], messages=messages) as streamed:
        final = streamed.get_final_message()
    assert (plain.stop_reason, plain.stop_sequence) == (final.stop_reason, final.stop_sequence) == (
        "stop_sequence", "END")
    # OpenAI's own words: a provider that says "length" early is believed, in either format.
    stubs[0].behaviour.stop_reason = "length"
    gpt = openai_client(server, account).chat.completions.create(model="openai/gpt-4o-mini", messages=messages)
    chunks = list(openai_client(server, account).chat.completions.create(
        model="openai/gpt-4o-mini", messages=messages, stream=True))
    as_claude = anthropic_client(server, account).messages.create(
        model="openai/gpt-4o-mini", max_tokens=100, messages=messages)
    assert gpt.choices[0].finish_reason == chunks[-1].choices[0].finish_reason == "length"
    assert (as_claude.stop_reason, as_claude.stop_sequence) == ("max_tokens", None)


def test_an_openai_stream_the_provider_breaks_ends_in_an_error_the_sdk_raises(server, account, stubs):
    stubs[0].behaviour.chunks = ["one ", "two ", "three ", "four "]
    stubs[0].behaviour.error_event_after_chunks = 2
    received = []
    with pytest.raises(openai.APIError) as failure:
        for chunk in openai_client(server, account).chat.completions.create(
                model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], max_tokens=50, stream=True):
            received.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "".join(received) == "one two "
    assert "broke off" in str(failure.value)
    # No usage came: billed on the estimate, the completion at the bytes delivered.
    assert_charged_exactly(server, account["user_id"],
                           cost("openai/gpt-4o-mini", 16 + 8 + 2, len("one two ".encode())))


def test_parallel_streams_never_overspend_and_leave_nothing_held(server, stubs):
    """Ten streams at once against a balance that holds three: three stream, seven
    are refused before any text, and every hold is settled."""
    # Each hold: 26 × 0.15 + 10,000 × 0.60 per million = 0.0060039, so 0.02 holds three at once.
    headers, user_id = live_user(server.url, "0.02")
    stubs[0].behaviour.chunks = ["a ", "b ", "c "]
    stubs[0].behaviour.chunk_delay_seconds = 1
    barrier, outcomes = threading.Barrier(10), []

    def stream():
        barrier.wait()
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", headers=headers, timeout=30,
                          json={"model": "openai/gpt-4o-mini", "stream": True, "max_tokens": 10_000,
                                "messages": [{"role": "user", "content": "Hi"}]}) as response:
            outcomes.append((response.status_code, "".join(response.iter_lines())))

    threads = [threading.Thread(target=stream) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(status for status, _ in outcomes) == [200] * 3 + [402] * 7
    assert all("[DONE]" in text for status, text in outcomes if status == 200)
    assert len(ledger(server, user_id)[2]) == 6
    assert_charged_exactly(server, user_id, 3 * cost("openai/gpt-4o-mini", 11, 7))
