"""Retry-After goes on a 429 only. The official SDKs wait out a Retry-After on
any answer they retry, a 5xx included: sent on every answer (the time left in
the rate-limit window), it made one provider error cost a client minutes.
Driven with the `openai` and `anthropic` SDKs at their default retry settings,
against the service under gunicorn with its rate limits on, as in production."""
import time

import anthropic
import httpx
import httpx2  # the SDKs' own HTTP client (an httpx fork): each takes a client of it
import openai
import pytest

from tests.sdk_clients import account, stubbed_service  # noqa: F401
from tests.support import readme_ledger_query

RATE_LIMIT_HEADERS = ("retry-after", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


@pytest.fixture(scope="module")
def server(pg_server, template_db, openai_stub, anthropic_stub):
    # One worker, since memory:// counters are per process; rate limits on, as in production.
    with stubbed_service(pg_server, template_db, openai_stub, anthropic_stub, workers=1,
                         RATELIMIT_ENABLED=True) as live:
        yield live


@pytest.fixture
def answers():
    """An HTTP client for an SDK that records every answer it gets (status and headers)."""
    seen = []
    client = httpx2.Client(event_hooks={"response": [lambda response: seen.append(response)]})
    client.answers = seen
    yield client
    client.close()


def nothing_held(server, user_id):
    held = server.database.query("SELECT held_balance FROM user_balance WHERE user_id = %s", (user_id,))[0][0]
    return held == 0 and server.database.query(readme_ledger_query()) == []


def sdk_client(sdk, server, account, answers):
    """The SDK's client with its default retries."""
    if sdk == "openai":
        return openai.OpenAI(base_url=f"{server.url}/v1", api_key=account["key"], http_client=answers)
    return anthropic.Anthropic(base_url=server.url, api_key=account["key"], http_client=answers)


def call(sdk, client):
    if sdk == "openai":
        return client.chat.completions.create(model="openai/gpt-4o-mini", max_tokens=50,
                                              messages=[{"role": "user", "content": "Hi"}])
    return client.messages.create(model="anthropic/claude-3-5-haiku-20241022", max_tokens=50,
                                  messages=[{"role": "user", "content": "Hi"}])


SDKS = {"openai": (openai, 0), "anthropic": (anthropic, 1)}


@pytest.mark.parametrize("sdk", SDKS)
def test_a_provider_error_is_retried_by_the_sdk_without_waiting_for_a_retry_after(
        sdk, server, stubs, account, answers, record_property):
    module, stub_index = SDKS[sdk]
    stub = stubs[stub_index]
    stub.behaviour.status = 500
    started = time.monotonic()
    with pytest.raises(module.InternalServerError) as raised:
        call(sdk, sdk_client(sdk, server, account, answers))
    record_property("sdk_seconds", round(time.monotonic() - started, 2))
    assert raised.value.status_code == 502
    attempts = 1 + module.DEFAULT_MAX_RETRIES
    assert len(stub.requests) == attempts
    assert [answer.status_code for answer in answers.answers] == [502] * attempts
    assert [answer.headers.get("Retry-After") for answer in answers.answers] == [None] * attempts
    assert nothing_held(server, account["user_id"])


@pytest.mark.parametrize("sdk", SDKS)
def test_an_answer_carries_no_retry_after(sdk, server, stubs, account, answers):
    call(sdk, sdk_client(sdk, server, account, answers))
    assert [answer.status_code for answer in answers.answers] == [200]
    assert "Retry-After" not in answers.answers[0].headers
    assert nothing_held(server, account["user_id"])


def test_rate_limit_headers_are_sent_only_where_the_document_declares_them(server, stubs, account, answers):
    """/openapi.json declares Retry-After on 429 answers: no other answer may carry it (or its kin)."""
    stubs[0].behaviour.status = 500
    headers = {"Authorization": f"Bearer {account['key']}"}
    body = {"model": "openai/gpt-4o-mini", "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]}
    failed = answers.post(f"{server.url}/v1/chat/completions", json=body, headers=headers)
    stubs[0].reset()
    served = answers.post(f"{server.url}/v1/chat/completions", json=body, headers=headers)
    assert (failed.status_code, served.status_code) == (502, 200)
    declared = httpx.get(f"{server.url}/openapi.json").json()["paths"]["/v1/chat/completions"]["post"]["responses"]
    for answer in (failed, served):
        documented = {name.lower() for name in declared[str(answer.status_code)].get("headers", {})}
        sent = {name for name in RATE_LIMIT_HEADERS if name in answer.headers}
        assert sent <= documented, (answer.status_code, sent)
    assert "retry-after" in {name.lower() for name in declared["429"]["headers"]}
    assert nothing_held(server, account["user_id"])
