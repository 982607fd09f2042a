"""POST /v1/messages/count_tokens, which Claude Code calls: the provider's own
count for Anthropic models, the local models' exact count, an estimate for
the others. It is free (no hold, no charge) and needs an access key or a JWT
like every /v1 route; its errors take Anthropic's shape."""
import pytest

from app.providers import estimated_prompt_tokens
from tests.inference.refusals import settings, token  # noqa: F401
from tests.support import HOUSE_ANTHROPIC, bearer

CLAUDE = "anthropic/claude-3-5-haiku-20241022"
COUNT = "/v1/messages/count_tokens"
TOOL = {"name": "weather", "description": "The weather", "input_schema": {"type": "object"}}



def count(client, token, **body):
    return client.post(COUNT, headers={"x-api-key": token},
                       json={"messages": [{"role": "user", "content": "Hello world!"}], **body})


def assert_free(database):
    assert database.query("SELECT count(*) FROM transactions WHERE type <> 'deposit'") == [(0,)]


def test_an_anthropic_models_tokens_are_the_providers_own_count(client, token, database, stubs):
    stubs[1].behaviour.prompt_tokens = 4321
    response = count(client, token, model=CLAUDE, system="Be brief.", tools=[TOOL], max_tokens=100)
    assert response.status_code == 200 and response.get_json() == {"input_tokens": 4321}
    sent, = stubs[1].requests
    assert sent["path"] == "/v1/messages/count_tokens"
    assert sent["headers"]["x-api-key"] == HOUSE_ANTHROPIC
    assert sent["body"] == {"model": "claude-3-5-haiku-20241022", "system": "Be brief.", "tools": [TOOL],
                            "tool_choice": {"type": "auto"},
                            "messages": [{"role": "user", "content": "Hello world!"}]}
    assert_free(database)


def test_other_models_are_estimated_without_a_provider(client, token, database, stubs):
    response = count(client, token, model="openai/gpt-4o-mini")
    # 12 bytes at 4 a token, and 3 tokens around each of 1 message and the reply.
    assert response.get_json() == {"input_tokens": 3 + 3 * 2}
    assert estimated_prompt_tokens([{"role": "user", "content": "Hello world!"}]) == 9
    assert stubs[0].requests == [] and stubs[1].requests == []
    assert_free(database)


def test_a_local_models_count_is_what_its_call_bills(client, token, database):
    asked = [{"role": "user", "content": "Count these five words."}]
    counted = count(client, token, model="local/echo", messages=asked).get_json()["input_tokens"]
    called = client.post("/v1/messages", headers={"x-api-key": token},
                         json={"model": "local/echo", "max_tokens": 50, "messages": asked}).get_json()
    assert counted == called["usage"]["input_tokens"]


@pytest.mark.parametrize("headers, body, status, kind", [
    ({}, {"model": CLAUDE}, 401, "authentication_error"),
    (None, {"model": "anthropic/nope"}, 404, "not_found_error"),
    (None, {"model": "local/echo", "tools": [TOOL]}, 400, "invalid_request_error"),
    (None, {"model": CLAUDE, "messages": []}, 400, "invalid_request_error"),
], ids=["no credential", "unknown model", "tools to a model without them", "no messages"])
def test_refusals_take_anthropics_shape_and_cost_nothing(client, token, database, stubs, headers, body, status, kind):
    response = client.post(COUNT, headers={"x-api-key": token} if headers is None else headers,
                           json={"messages": [{"role": "user", "content": "Hi"}], **body})
    assert response.status_code == status
    assert response.get_json()["type"] == "error" and response.get_json()["error"]["type"] == kind
    assert stubs[1].requests == []
    assert_free(database)


def test_a_failing_provider_is_a_502_and_nothing_is_held(client, token, database, stubs):
    stubs[1].behaviour.status = 500
    response = count(client, token, model=CLAUDE)
    assert response.status_code == 502 and response.get_json()["error"]["type"] == "api_error"
    assert_free(database)


def test_an_access_keys_allow_list_holds_for_counting(client, token, database):
    key = client.post("/api/v1/access-keys", headers=bearer(token),
                      json={"name": "narrow", "allowed_models": ["local/echo"]}).get_json()["key"]
    assert count(client, key, model="local/echo").status_code == 200
    refused = count(client, key, model=CLAUDE)
    assert refused.status_code == 403 and refused.get_json()["error"]["type"] == "permission_error"
