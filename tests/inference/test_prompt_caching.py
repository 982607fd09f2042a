"""Prompt caching through the inference API, driven by the official `openai`
and `anthropic` SDKs against the service under gunicorn and provider stubs
that report cache reads and writes in each provider's own convention. Every
charge here is computed from the usage × each part's catalog price, to the
last decimal: an overcharge of a cached call (LiteLLM #11789 billed one about
7×), a write charged twice (#9812) or a cached token billed at the full input
price fails these tests."""
from decimal import Decimal

import httpx
import pytest

from app.providers import MESSAGE_OVERHEAD_TOKENS, REQUEST_OVERHEAD_TOKENS
from tests.sdk_clients import (account, anthropic_client, assert_charged_exactly, close_clients,  # noqa: F401
                               openai_client, server)

SONNET = "anthropic/claude-sonnet-4-20250514"
GPT = "openai/gpt-4o-mini"
OLD_HAIKU = "anthropic/claude-3-haiku-20240307"  # caches, with no 1-hour write price
UNCACHED = "anthropic/claude-3-5-haiku-20241022"  # no prompt cache
# catalog.json's prices per million tokens: input, output, cache read, 5-minute write, 1-hour write.
PRICES = {SONNET: ("3.00", "15.00", "0.30", "3.75", "6.00"),
          GPT: ("0.15", "0.60", "0.075", None, None),
          OLD_HAIKU: ("0.25", "1.25", "0.03", "0.30", None)}
EPHEMERAL = {"type": "ephemeral"}
HOUR = {"type": "ephemeral", "ttl": "1h"}
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}}
# A prompt long enough for the usage the stubs report: a count above the
# prompt's upper bound (its UTF-8 bytes) would be billed at that bound.
NOTES = "Project notes. " * 1000


def price(model, part):
    value = PRICES[model][("input", "output", "read", "write", "write_1h").index(part)]
    return None if value is None else Decimal(value)


def charge(model, uncached=0, read=0, write=0, write_1h=0, output=0):
    """Each part at its own price: tokens × price / 1,000,000 (exact at these
    prices, so no rounding is hidden in the sums)."""
    return sum((tokens * price(model, part) / 1_000_000 for tokens, part in (
        (uncached, "input"), (read, "read"), (write, "write"), (write_1h, "write_1h"), (output, "output"))
        if tokens), Decimal(0))


def reports(stub, uncached, output, read=0, write=0, write_1h=0):
    """The stub's usage, in its provider's convention (OpenAI's prompt_tokens count the cached ones)."""
    behaviour = stub.behaviour
    behaviour.prompt_tokens = uncached + read if stub.path.endswith("/chat/completions") else uncached
    behaviour.completion_tokens, behaviour.cache_read_tokens = output, read
    behaviour.cache_write_tokens, behaviour.cache_write_1h_tokens = write, write_1h


def claude_message(client, stream, **asked):
    if not stream:
        return client.messages.create(**asked)
    with client.messages.stream(**asked) as events:
        return events.get_final_message()


def openai_completion(client, stream, **asked):
    """(text, usage) of a completion, plain or streamed with its usage chunk."""
    if not stream:
        answer = client.chat.completions.create(**asked)
        return answer.choices[0].message.content, answer.usage
    text, usage = "", None
    for chunk in client.chat.completions.create(**asked, stream=True, stream_options={"include_usage": True}):
        text += "".join(choice.delta.content or "" for choice in chunk.choices)
        usage = chunk.usage or usage
    return text, usage


def settled_charge(server, account):
    """The charge by part on the newest ledger entry that has one, as the API shows it."""
    entries = httpx.get(f"{server.url}/api/v1/balance/transactions", headers=account["headers"]).json()
    return next(entry["charge"] for entry in entries["transactions"] if entry["charge"] is not None)


def newest_hold(server, account):
    return server.database.query("SELECT amount FROM transactions WHERE user_id = %s AND type = 'hold'"
                                 " ORDER BY id DESC LIMIT 1", (account["user_id"],))[0][0]


# ----------------------------------------------------------------- each format to its own provider

@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_claudes_cache_marks_pass_through_and_each_part_is_billed_at_its_price(server, account, stubs, stream):
    reports(stubs[1], uncached=50, output=40, read=2000, write=300, write_1h=100)
    message = claude_message(
        anthropic_client(server, account), stream, model=SONNET, max_tokens=256,
        system=[{"type": "text", "text": "You are terse."},
                {"type": "text", "text": NOTES, "cache_control": EPHEMERAL}],
        tools=[{"name": "weather", "input_schema": WEATHER, "cache_control": HOUR}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "Weather?", "cache_control": EPHEMERAL}]}])

    sent = stubs[1].requests[0]["body"]
    assert sent["system"] == [{"type": "text", "text": "You are terse."},
                              {"type": "text", "text": NOTES, "cache_control": EPHEMERAL}]
    assert sent["tools"][0]["cache_control"] == HOUR
    assert sent["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Weather?", "cache_control": EPHEMERAL}]}]
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens,
            usage.output_tokens) == (50, 2000, 400, 40)
    expected = charge(SONNET, uncached=50, read=2000, write=300, write_1h=100, output=40)
    assert expected == Decimal("0.003075")  # 150 + 600 + 1,125 + 600 + 600 millionths
    if not stream:  # a stream's split and cost come in message_delta, whose other fields the SDK drops
        assert (usage.cache_creation.ephemeral_5m_input_tokens,
                usage.cache_creation.ephemeral_1h_input_tokens) == (300, 100)
        assert Decimal(usage.model_extra["cost"]) == expected
    parts = {"input_tokens": 50, "cached_input_tokens": 2000, "cache_write_tokens": 300, "cache_write_1h_tokens": 100,
             "output_tokens": 40, "reasoning_tokens": None, "input_cost": "0.00015", "cached_input_cost": "0.0006",
             "cache_write_cost": "0.001725", "output_cost": "0.0006", "cost": "0.003075", "model_id": SONNET,
             "provider": "anthropic"}
    assert settled_charge(server, account) == parts
    activity = httpx.get(f"{server.url}/api/v1/activity", headers=account["headers"]).json()["activity"]
    assert [item["charge"] for item in activity if item["charge"] is not None] == [parts]
    assert_charged_exactly(server, account["user_id"], expected)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_openais_cached_tokens_are_billed_once_at_the_cached_input_price(server, account, stubs, stream):
    reports(stubs[0], uncached=2000, read=8000, output=100)
    text, usage = openai_completion(openai_client(server, account), stream, model=GPT,
                                    messages=[{"role": "user", "content": NOTES}])
    assert text == "Hello from the stub."
    assert (usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens, usage.completion_tokens) == (10000, 8000,
                                                                                                         100)
    expected = charge(GPT, uncached=2000, read=8000, output=100)
    assert expected == Decimal("0.00096")  # the 8,000 cached at 0.075, not also at 0.15
    assert settled_charge(server, account)["cached_input_cost"] == "0.0006"
    assert_charged_exactly(server, account["user_id"], expected)


# ----------------------------------------------------------------- across formats

@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_openai_client_caches_a_claude_prompt_and_reads_openais_usage(server, account, stubs, stream):
    reports(stubs[1], uncached=50, output=40, read=2000, write=300)
    text, usage = openai_completion(openai_client(server, account), stream, model=SONNET, max_tokens=256, messages=[
        {"role": "system", "content": [{"type": "text", "text": NOTES, "cache_control": EPHEMERAL}]},
        {"role": "user", "content": "Hi"}])
    assert text == "Hello from the stub."
    sent = stubs[1].requests[0]["body"]
    assert sent["system"] == [{"type": "text", "text": NOTES, "cache_control": EPHEMERAL}]
    # OpenAI's convention: prompt_tokens count every input token, the cached ones among them.
    assert (usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens) == (2350, 2000)
    assert usage.model_extra["cache_creation_input_tokens"] == 300
    assert_charged_exactly(server, account["user_id"], charge(SONNET, uncached=50, read=2000, write=300, output=40))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_anthropic_client_reads_openais_cache_in_its_own_convention(server, account, stubs, stream):
    reports(stubs[0], uncached=2000, read=8000, output=100)
    message = claude_message(anthropic_client(server, account), stream, model=GPT, max_tokens=256,
                             system=[{"type": "text", "text": NOTES, "cache_control": EPHEMERAL}],
                             messages=[{"role": "user", "content": "Hi"}])
    sent = stubs[0].requests[0]["body"]
    assert sent["messages"][0] == {"role": "system", "content": NOTES}  # OpenAI caches by itself
    assert "cache_control" not in str(sent)
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (2000, 8000, 0)
    assert_charged_exactly(server, account["user_id"], charge(GPT, uncached=2000, read=8000, output=100))


# ----------------------------------------------------------------- the hold covers the worst case

@pytest.mark.parametrize("model, mark, prompt_price", [
    (SONNET, None, "input"), (SONNET, EPHEMERAL, "write"), (SONNET, HOUR, "write_1h"),
    (OLD_HAIKU, HOUR, "write"),  # no 1-hour price: its 5-minute one
    (GPT, EPHEMERAL, "input"),   # OpenAI writes at no premium
], ids=["no mark", "5-minute mark", "1-hour mark", "1-hour mark, no 1-hour price", "openai"])
def test_the_hold_prices_every_prompt_token_at_the_highest_write_the_marks_allow(server, account, stubs, model,
                                                                               mark, prompt_price):
    reports(stubs[0], uncached=5, output=3)
    reports(stubs[1], uncached=5, output=3)
    block = {"type": "text", "text": "Hi", **({"cache_control": mark} if mark else {})}
    claude_message(anthropic_client(server, account), False, model=model, max_tokens=100,
                   messages=[{"role": "user", "content": [block]}])
    prompt_bound = REQUEST_OVERHEAD_TOKENS + MESSAGE_OVERHEAD_TOKENS + len("Hi")
    assert newest_hold(server, account) == (prompt_bound * price(model, prompt_price)
                                            + 100 * price(model, "output")) / 1_000_000


def test_cache_writes_a_call_did_not_ask_for_are_billed_at_the_holds_price(server, account, stubs):
    """A provider reporting writes for a prompt with no mark: billed as input,
    the price the hold was taken at, so the charge stays within the hold."""
    reports(stubs[1], uncached=10, write=20, output=3)
    claude_message(anthropic_client(server, account), False, model=SONNET, max_tokens=100,
                   messages=[{"role": "user", "content": "Hi there, a long enough prompt to hold thirty tokens."}])
    expected = (30 * price(SONNET, "input") + 3 * price(SONNET, "output")) / 1_000_000
    assert settled_charge(server, account)["cache_write_cost"] == "0.00006"  # 20 at 3.00, not 3.75
    assert expected <= newest_hold(server, account)
    assert_charged_exactly(server, account["user_id"], expected)


# ----------------------------------------------------------------- refused

@pytest.mark.parametrize("asked, field", [
    ({"system": [{"type": "text", "text": "Rules", "cache_control": EPHEMERAL}],
      "messages": [{"role": "user", "content": "Hi"}]}, "system.0.cache_control"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": EPHEMERAL}]}]},
     "messages.0.content.0.cache_control"),
    ({"tools": [{"name": "weather", "input_schema": WEATHER, "cache_control": HOUR}],
      "messages": [{"role": "user", "content": "Hi"}]}, "tools.0.cache_control"),
], ids=["system", "message", "tool"])
def test_cache_marks_on_a_model_without_a_cache_are_refused_by_name(server, account, stubs, asked, field):
    response = httpx.post(f"{server.url}/v1/messages", headers={"x-api-key": account["key"]},
                          json={"model": UNCACHED, "max_tokens": 64, **asked})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert field in response.json()["error"]["message"] and "prompt cache" in response.json()["error"]["message"]
    assert stubs[1].requests == []
    assert_charged_exactly(server, account["user_id"], 0)


def test_an_openai_clients_cache_mark_on_a_local_model_is_refused_by_name(server, account, stubs):
    response = httpx.post(f"{server.url}/v1/chat/completions", headers={"Authorization": f"Bearer {account['key']}"},
                          json={"model": "local/echo", "messages": [{"role": "user", "content": [
                              {"type": "text", "text": "Hi", "cache_control": EPHEMERAL}]}]})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages.0.content.0.cache_control"
    assert_charged_exactly(server, account["user_id"], 0)


@pytest.mark.parametrize("mark", [{"type": "persistent"}, {"type": "ephemeral", "ttl": "2h"}],
                         ids=["unknown type", "unknown ttl"])
def test_a_cache_mark_of_no_known_kind_is_refused(server, account, stubs, mark):
    response = httpx.post(f"{server.url}/v1/messages", headers={"x-api-key": account["key"]},
                          json={"model": SONNET, "max_tokens": 64, "messages": [
                              {"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": mark}]}]})
    assert response.status_code == 400 and "cache_control" in response.json()["error"]["message"]
    assert stubs[1].requests == []


# ----------------------------------------------------------------- the catalog

def test_the_model_lists_show_cache_prices_and_features(server, account):
    listed = {model["id"]: model for model in httpx.get(
        f"{server.url}/v1/models", headers={"Authorization": f"Bearer {account['key']}"}).json()["data"]}
    catalog = {model["id"]: model for model in httpx.get(f"{server.url}/api/v1/models").json()["models"]}
    for shown in (listed[SONNET], catalog[SONNET]):
        assert (shown["cache_read_price_per_mtok"], shown["cache_write_price_per_mtok"],
                shown["cache_write_1h_price_per_mtok"]) == ("0.30", "3.75", "6.00")
        assert {"caching", "reasoning"} <= set(shown["features"])
    for shown in (listed[GPT], catalog[GPT]):
        assert (shown["cache_read_price_per_mtok"], shown["cache_write_price_per_mtok"]) == ("0.075", None)
    for shown in (listed[UNCACHED], catalog[UNCACHED]):
        assert shown["cache_read_price_per_mtok"] is None and "caching" not in shown["features"]
