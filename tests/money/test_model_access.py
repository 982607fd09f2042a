"""What a user can call (SPEC §11): each model is callable now through their
own key, the service's house key or no key at all (local), or needs a key of
their own first. The models' access, Recommend and chat creation agree on it.
Here the service holds an OpenAI house key and no Anthropic one."""
import pytest

from tests.money.test_who_pays import OPENAI_HOUSE_KEY, store_key
from tests.support import assert_error, bearer, user

ACCESS = "/api/v1/models/access"
RECOMMEND = "/api/v1/models/recommend"
HAIKU = "anthropic/claude-3-5-haiku-20241022"
TASK = "Fix a bug in my Python function"


@pytest.fixture
def settings(stubbed_settings):
    return {**stubbed_settings, "OPENAI_API_KEY": OPENAI_HOUSE_KEY}


def access(client, token):
    response = client.get(ACCESS, headers=bearer(token))
    assert response.status_code == 200, response.get_json()
    return {item["model_id"]: item for item in response.get_json()["access"]}


def test_each_model_says_whose_key_would_serve_it(client):
    token = user(client)
    every = access(client, token)
    catalog = [model["id"] for model in client.get("/api/v1/models").get_json()["models"]]
    assert sorted(every) == sorted(catalog)
    assert (every["local/echo"]["via"], every["local/echo"]["callable"]) == ("local", True)
    assert (every["openai/gpt-4o-mini"]["via"], every["openai/gpt-4o-mini"]["callable"]) == ("house_key", True)
    assert every[HAIKU] == {"model_id": HAIKU, "callable": False, "via": "needs_key", "providers": ["anthropic"]}
    store_key(client, token, "anthropic", "sk-ant-users-own-key-000000000042")
    assert access(client, token)[HAIKU]["via"] == "own_key"
    assert_error(client.get(ACCESS), 401, "unauthorized")


def test_recommend_ranks_callable_models_first_and_says_why(client):
    token = user(client)
    every = access(client, token)
    ranked = client.post(RECOMMEND, json={"task": TASK, "limit": 50}, headers=bearer(token)).get_json()
    callable_flags = [item["access"]["callable"] for item in ranked["recommendations"]]
    assert callable_flags == sorted(callable_flags, reverse=True) and not all(callable_flags)
    top = ranked["recommendations"][:5]
    assert all(item["access"]["callable"] for item in top)
    assert all(item["access"] == every[item["model"]["id"]] for item in ranked["recommendations"])
    assert "you can call now come first" in ranked["notice"]
    needs = next(item for item in ranked["recommendations"] if not item["access"]["callable"])
    assert "needs an Anthropic key you have not added" in needs["reasons"]

    by_fit = client.post(RECOMMEND, json={"task": TASK, "limit": 50, "callable_first": False},
                         headers=bearer(token)).get_json()
    scores = [item["score"] for item in by_fit["recommendations"]]
    assert scores == sorted(scores, reverse=True) and by_fit["notice"] is None
    assert_error(client.post(RECOMMEND, json={"task": TASK, "callable_first": "no"}, headers=bearer(token)),
                 400, "validation_error")


def test_a_chat_with_a_model_that_needs_a_key_is_not_created(client, database):
    token = user(client)
    refused = client.post("/api/v1/chat/sessions", json={"model_id": HAIKU}, headers=bearer(token))
    assert assert_error(refused, 422, "missing_api_key")["details"] == {"provider": "anthropic", "model_id": HAIKU}
    assert database.query("SELECT count(*) FROM chat_sessions") == [(0,)]
    for model_id in ("local/echo", "openai/gpt-4o-mini"):  # local, and the house key's
        assert client.post("/api/v1/chat/sessions", json={"model_id": model_id},
                           headers=bearer(token)).status_code == 201
