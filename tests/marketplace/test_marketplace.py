"""The marketplace (SPEC §4, §5 spend limits, §6 endpoints 17–23, §9): the catalog,
ratings, recommendations, preferences and their enforcement on chat, activity,
`flask catalog load`, and the analytics_user role."""
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from decimal import Decimal

import httpx
import psycopg2.errors
import pytest
from psycopg2 import sql

from app import close_app, create_app
from tests.support import ROOT, assert_error, bearer, new_session, send, user

MODELS = "/api/v1/models"
RECOMMEND = "/api/v1/models/recommend"
PREFERENCES = "/api/v1/preferences"
ACTIVITY = "/api/v1/activity"
OPENAI_KEY = "sk-proj-" + "a1B2c3D4e5F6g7H8i9J0k1L2"
MONEY_TEXT = re.compile(r"^[0-9]+\.[0-9]{2,10}$")
TICK = Decimal("0.0000000001")  # the ledger's smallest step
CATALOG = json.loads((ROOT / "catalog.json").read_text())["models"]
ECHO_PRICES = (Decimal("0.01"), Decimal("0.02"))  # local/echo in catalog.json, per million tokens
DEFAULT_PREFERENCES = {"default_model_id": None, "preferred_providers": [], "daily_spend_limit": None,
                       "max_cost_per_message": None, "theme": "system", "house_key_fallback": False}
ALERT_PREFERENCES = {"low_balance_threshold": None, "email_alerts": False}


# ----------------------------------------------------------------- helpers



def catalog(client, **query):
    response = client.get(MODELS, query_string=query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["models"]


def ids(models):
    return [model["id"] for model in models]


def blended(model):
    return (Decimal(model["input_price_per_mtok"]) + Decimal(model["output_price_per_mtok"])) / 2


def chat(client, token, model_id, times):
    session_id = new_session(client, token, model_id)
    for _ in range(times):
        assert send(client, token, session_id).status_code == 201


def rate(client, token, model_id, body):
    return client.put(f"{MODELS}/{model_id}/rating", json=body, headers=bearer(token))


def put_preferences(client, token, **document):
    return client.put(PREFERENCES, json=document, headers=bearer(token))


def recommend(client, token, task, **extra):
    """Ranked on fit alone unless asked otherwise: these tests are about the score."""
    response = client.post(RECOMMEND, json={"task": task, "callable_first": False, **extra}, headers=bearer(token))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def scores(body):
    return {item["model"]["id"]: item["score"] for item in body["recommendations"]}


def hold_for(content, max_tokens, prices=ECHO_PRICES):
    """The hold app/billing.py makes for one message in an empty session:
    (request overhead 16 + UTF-8 bytes + message overhead 8) × input price
    + max_tokens × output price, per million tokens."""
    input_price, output_price = prices
    return ((16 + len(content.encode()) + 8) * input_price + max_tokens * output_price).scaleb(-6)


def money(amount):
    return format(Decimal(amount), "f")


def ledger(database):
    """Every non-deposit movement: [(type, amount)] in order."""
    return database.query("SELECT type, amount FROM transactions WHERE type <> 'deposit' ORDER BY id")


def money_state(database):
    return (database.query("SELECT * FROM transactions ORDER BY id"),
            database.query("SELECT total_balance, spent_balance, held_balance FROM user_balance ORDER BY user_id"))


def user_id_of(database, name="ada"):
    return database.query("SELECT id FROM users WHERE username = %s", (name,))[0][0]


def model_rows(database):
    return database.query("SELECT * FROM models ORDER BY id")


@pytest.fixture
def token(client):
    return user(client, funds="10")


# ------------------------------------------------------------------ catalog

def test_the_catalog_is_public_and_complete(client):
    response = client.get(MODELS)
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"models", "next_cursor"} and body["next_cursor"] is None
    models = body["models"]
    assert len(models) >= 12
    assert {model["provider"] for model in models} == {"local", "openai", "anthropic"}
    assert ids(models) == sorted(entry["id"] for entry in CATALOG)
    for model in models:
        assert model["id"].startswith(model["provider"] + "/")
        assert MONEY_TEXT.match(model["input_price_per_mtok"]) and MONEY_TEXT.match(model["output_price_per_mtok"])
        assert isinstance(model["context_window"], int) and 0 < model["max_output_tokens"] <= model["context_window"]
        assert model["capabilities"] and re.match(r"^\d{4}-\d{2}-\d{2}$", model["prices_as_of"])
        assert model["rating"] == {"count": 0, "average": None, "bayesian_average": "3.50",
                                   "distribution": {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0}}
        assert model["usage"]["request_count"] == model["usage"]["prompt_tokens"] == 0
        assert model["usage"]["completion_tokens"] == 0
    echo = next(model for model in models if model["id"] == "local/echo")
    assert (echo["input_price_per_mtok"], echo["output_price_per_mtok"]) == ("0.01", "0.02")


@pytest.mark.parametrize("provider", ["local", "openai", "anthropic"])
def test_the_catalog_filters_by_provider(client, provider):
    models = catalog(client, provider=provider)
    assert ids(models) == sorted(entry["id"] for entry in CATALOG if entry["provider"] == provider)


@pytest.mark.parametrize("capability", ["coding", "reasoning", "long-context", "vision", "writing", "translation",
                                        "fast", "cheap"])
def test_the_catalog_filters_by_capability(client, capability):
    models = catalog(client, capability=capability)
    assert ids(models) == sorted(entry["id"] for entry in CATALOG if capability in entry["capabilities"])
    assert models and all(capability in model["capabilities"] for model in models)


def test_each_model_shows_its_features_input_modalities_and_aliases(client):
    models = {model["id"]: model for model in catalog(client)}
    for entry in CATALOG:
        shown = models[entry["id"]]
        assert (shown["features"], shown["input_modalities"], shown["aliases"]) == (
            entry["features"], entry["input_modalities"], entry.get("aliases", []))
        detail = client.get(f"{MODELS}/{entry['id']}").get_json()
        assert (detail["features"], detail["input_modalities"], detail["aliases"]) == (
            entry["features"], entry["input_modalities"], entry.get("aliases", []))
    assert models["local/echo"]["features"] == [] and models["local/echo"]["input_modalities"] == ["text"]
    assert models["openai/o3-mini"]["features"] == ["tools", "structured_output", "caching", "reasoning"]
    assert models["openai/o3-mini"]["input_modalities"] == ["text"]
    assert models["anthropic/claude-sonnet-4-20250514"]["features"] == [
        "tools", "structured_output", "images", "caching", "reasoning"]
    assert models["anthropic/claude-sonnet-4-20250514"]["input_modalities"] == ["text", "image"]
    assert models["anthropic/claude-sonnet-4-20250514"]["aliases"] == ["claude-sonnet-4", "claude-sonnet-4-0"]


def test_filters_combine(client):
    assert ids(catalog(client, provider="anthropic", capability="vision")) == sorted(
        model["id"] for model in CATALOG if model["provider"] == "anthropic" and "vision" in model["capabilities"])
    assert "anthropic/claude-3-5-haiku-20241022" not in ids(catalog(client, provider="anthropic", capability="vision"))


def test_sort_by_price_is_by_the_mean_of_input_and_output_price(client):
    models = catalog(client, sort="price")
    assert [blended(model) for model in models] == sorted(blended(model) for model in models)
    assert ids(models)[:2] == ["local/reverse", "local/echo"]
    assert ids(models)[-1] == "anthropic/claude-opus-4-20250514"


def test_sort_by_rating_is_by_bayesian_average_descending(client):
    ada, bob = user(client, "ada"), user(client, "bob")
    for token in (ada, bob):
        assert rate(client, token, "openai/gpt-4o", {"rating": 5}).status_code == 201
    assert rate(client, ada, "local/echo", {"rating": 1}).status_code == 201
    assert rate(client, bob, "anthropic/claude-3-haiku-20240307", {"rating": 4}).status_code == 201
    models = catalog(client, sort="rating")
    averages = [Decimal(model["rating"]["bayesian_average"]) for model in models]
    assert averages == sorted(averages, reverse=True)
    assert ids(models)[:2] == ["openai/gpt-4o", "anthropic/claude-3-haiku-20240307"]
    assert ids(models)[-1] == "local/echo"


def test_sort_by_popularity_follows_the_chat_calls(client, token):
    chat(client, token, "local/reverse", 3)
    chat(client, token, "local/echo", 1)
    models = catalog(client, sort="popularity")
    assert ids(models)[:2] == ["local/reverse", "local/echo"]
    usage = {model["id"]: model["usage"] for model in models}
    assert usage["local/reverse"]["request_count"] == 3 and usage["local/reverse"]["popularity_rank"] == 1
    assert usage["local/echo"]["request_count"] == 1 and usage["local/echo"]["popularity_rank"] == 2
    assert usage["local/echo"]["prompt_tokens"] > 0 and usage["local/echo"]["completion_tokens"] > 0
    assert all(usage[model_id]["request_count"] == 0 for model_id in ids(models)[2:])
    assert [model["usage"]["request_count"] for model in models] == sorted(
        (model["usage"]["request_count"] for model in models), reverse=True)


BAD_FILTERS = [{"provider": "mistral"}, {"provider": ""}, {"provider": "OpenAI"}, {"capability": "telepathy"},
               {"capability": ""}, {"sort": "cheapest"}, {"sort": ""}, {"sort": "price; DROP TABLE models"}]


@pytest.mark.parametrize("query", BAD_FILTERS, ids=[repr(query) for query in BAD_FILTERS])
def test_bad_filters_are_refused(client, query):
    error = assert_error(client.get(MODELS, query_string=query), 400, "validation_error")
    assert set(query) <= set(error["details"])


def test_retired_models_are_not_offered(client, token, database):
    database.query("UPDATE models SET is_active = false WHERE id = 'local/reverse'")
    assert "local/reverse" not in ids(catalog(client))
    assert "local/reverse" not in ids(catalog(client, provider="local"))
    assert_error(client.get(f"{MODELS}/local/reverse"), 404, "not_found")
    assert_error(rate(client, token, "local/reverse", {"rating": 5}), 404, "not_found")
    assert database.query("SELECT count(*) FROM model_ratings") == [(0,)]


# ------------------------------------------------------------- one model

def test_one_model_with_its_rating_summary_and_usage_by_day(client, token, database):
    for name, stars in (("bob", 5), ("cyd", 5), ("dina", 4)):
        assert rate(client, user(client, name), "local/echo", {"rating": stars}).status_code == 201
    chat(client, token, "local/echo", 2)
    response = client.get(f"{MODELS}/local/echo")
    assert response.status_code == 200
    model = response.get_json()
    assert model["id"] == "local/echo" and model["provider"] == "local"
    # Bayesian prior: 5 votes of 3.5, so (3.5 × 5 + 14) / 8 = 3.9375.
    assert model["rating"] == {"count": 3, "average": "4.67", "bayesian_average": "3.94",
                               "distribution": {"1": 0, "2": 0, "3": 0, "4": 1, "5": 2}}
    (today,), = database.query("SELECT (now() AT TIME ZONE 'UTC')::date::text")
    (prompt_tokens, completion_tokens), = database.query(
        "SELECT sum(prompt_tokens), sum(completion_tokens) FROM model_usage_stats WHERE model_id = 'local/echo'")
    assert model["usage_by_day"] == [{"day": today, "request_count": 2, "prompt_tokens": prompt_tokens,
                                      "completion_tokens": completion_tokens}]
    assert model["usage"]["request_count"] == 2
    assert {key: value for key, value in model.items() if key not in ("usage_by_day", "deployments")} == next(
        entry for entry in catalog(client) if entry["id"] == "local/echo")
    served, = model["deployments"]  # the two chats, as this worker measured them
    assert (served["provider"], served["model"], served["circuit"]) == ("local", "echo", "closed")
    assert (served["health"]["5m"]["attempts"], served["health"]["5m"]["errors"]) == (2, 0)


def test_a_model_id_with_dots_and_dashes_is_found(client):
    response = client.get(f"{MODELS}/anthropic/claude-3-5-haiku-20241022")
    assert response.status_code == 200 and response.get_json()["usage_by_day"] == []
    assert client.get(f"{MODELS}/openai/gpt-4.1-mini").get_json()["name"] == "GPT-4.1 mini"


# The marketplace names a model by its id only: an alias (claude-opus-4) is no path.
@pytest.mark.parametrize("path", ["openai/no-such-model", "mistral/large", "local/ECHO", "local/echo/extra",
                                  "local", "local/echo%00", "local/%27%20OR%20%271%27%3D%271",
                                  "anthropic/claude-opus-4"])
def test_an_unknown_model_is_not_found(client, path):
    assert_error(client.get(f"{MODELS}/{path}"), 404, "not_found")


def test_an_url_encoded_slash_in_the_id_works(client):
    # The WSGI layer decodes %2F before routing, so it reaches the same model.
    response = client.get(f"{MODELS}/local%2Fecho")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["id"] == "local/echo"


# ------------------------------------------------------------------ ratings

def test_rating_needs_a_token(client, database):
    assert_error(client.put(f"{MODELS}/local/echo/rating", json={"rating": 5}), 401, "unauthorized")
    assert database.query("SELECT count(*) FROM model_ratings") == [(0,)]


def test_a_rating_is_created_then_replaced_and_audited(client, token, database):
    first = rate(client, token, "local/echo", {"rating": 2, "review": "Too literal."})
    assert first.status_code == 201
    assert {key: first.get_json()[key] for key in ("model_id", "rating", "review")} == {
        "model_id": "local/echo", "rating": 2, "review": "Too literal."}
    second = rate(client, token, "local/echo", {"rating": 4})
    assert second.status_code == 200
    assert (second.get_json()["rating"], second.get_json()["review"]) == (4, None)
    assert second.get_json()["created_at"] == first.get_json()["created_at"]
    ada = user_id_of(database)
    assert database.query("SELECT user_id, model_id, rating, review FROM model_ratings") == [
        (ada, "local/echo", 4, None)]
    audit = database.query("SELECT operation, acting_user_id, new_row ->> 'rating' FROM audit_log "
                           "WHERE table_name = 'model_ratings' ORDER BY id")
    assert audit == [("INSERT", ada, "2"), ("UPDATE", ada, "4")]
    assert client.get(f"{MODELS}/local/echo").get_json()["rating"]["count"] == 1


BAD_RATINGS = {
    "zero": {"rating": 0}, "six": {"rating": 6}, "negative": {"rating": -1}, "true": {"rating": True},
    "string": {"rating": "5"}, "float": {"rating": 4.5}, "null": {"rating": None}, "missing": {},
    "review only": {"review": "great"}, "long review": {"rating": 5, "review": "x" * 2001},
    "NUL in review": {"rating": 5, "review": "ok\x00"}, "review number": {"rating": 5, "review": 5},
    "unknown field": {"rating": 5, "user_id": "00000000-0000-0000-0000-000000000000"},
    "model field": {"rating": 5, "model_id": "openai/gpt-4o"},
}


@pytest.mark.parametrize("body", BAD_RATINGS.values(), ids=BAD_RATINGS.keys())
def test_bad_ratings_are_refused(client, token, database, body):
    assert_error(rate(client, token, "local/echo", body), 400, "validation_error")
    assert database.query("SELECT count(*) FROM model_ratings") == [(0,)]


def test_a_long_review_up_to_the_limit_is_kept(client, token):
    response = rate(client, token, "local/echo", {"rating": 3, "review": "é" * 2000})
    assert response.status_code == 201 and response.get_json()["review"] == "é" * 2000


@pytest.mark.parametrize("model_id", ["openai/no-such-model", "mistral/large", "local/echo%00"])
def test_rating_an_unknown_model_is_not_found(client, token, database, model_id):
    assert_error(rate(client, token, model_id, {"rating": 5}), 404, "not_found")
    assert database.query("SELECT count(*) FROM model_ratings") == [(0,)]


# ---------------------------------------------------------- recommendations

TASKS = {
    "Fix a bug in my Python function": "coding",
    "Describe this screenshot": "vision",
    "Prove this theorem about prime numbers": "reasoning",
    "Summarize a 300-page PDF contract": "long-context",
    "Translate my restaurant menu into Japanese": "translation",
    "Write a blog post about spring gardening": "writing",
    "A cheap chatbot for many requests": "cheap",
}


def test_recommend_needs_a_token(client):
    assert_error(client.post(RECOMMEND, json={"task": "Fix a bug"}), 401, "unauthorized")


@pytest.mark.parametrize("task, capability", TASKS.items(), ids=TASKS.values())
def test_the_top_recommendation_has_what_the_task_needs(client, token, task, capability):
    body = recommend(client, token, task)
    assert set(body) >= {"recommendations", "notice"} and body["notice"] is None
    top = body["recommendations"][0]
    assert capability in top["model"]["capabilities"]
    assert f"matches {capability}" in top["reasons"]
    assert len(body["recommendations"]) == 5
    ranked = [item["score"] for item in body["recommendations"]]
    assert ranked == sorted(ranked, reverse=True) and all(0 <= score <= 1 for score in ranked)
    assert all(item["reasons"] for item in body["recommendations"])


def test_asked_capabilities_count_like_inferred_ones(client, token):
    top = recommend(client, token, "Help me with my work", capabilities=["vision", "coding"])["recommendations"][0]
    assert {"vision", "coding"} <= set(top["model"]["capabilities"])
    assert {"matches vision", "matches coding"} <= set(top["reasons"])


def test_a_budget_keeps_every_result_within_it(client, token):
    body = recommend(client, token, "Fix a bug in my Python function", max_price_per_mtok="1.00", limit=50)
    assert body["notice"] is None and body["recommendations"]
    for item in body["recommendations"]:
        assert blended(item["model"]) <= 1
        assert any(reason.startswith("within your budget") for reason in item["reasons"])
    affordable = [model for model in catalog(client) if blended(model) <= 1]
    assert sorted(scores(body)) == sorted(ids(affordable))


def test_a_budget_no_model_meets_shows_the_cheapest_with_a_notice(client, token):
    body = recommend(client, token, "Fix a bug in my Python function", max_price_per_mtok="0.0001")
    assert body["recommendations"] and "0.0001" in body["notice"]
    assert not any(reason.startswith("within your budget")
                   for item in body["recommendations"] for reason in item["reasons"])


def test_holding_an_openai_key_raises_openai_models(client, token):
    before = recommend(client, token, "Fix a bug in my Python function", limit=50)
    response = client.post("/api/v1/keys", json={"provider": "openai", "api_key": OPENAI_KEY}, headers=bearer(token))
    assert response.status_code == 201
    after = recommend(client, token, "Fix a bug in my Python function", limit=50)
    for item in after["recommendations"]:
        model_id = item["model"]["id"]
        if item["model"]["provider"] == "openai":
            assert "you hold an OpenAI key" in item["reasons"]
            assert item["score"] > scores(before)[model_id]
        else:
            assert "you hold an OpenAI key" not in item["reasons"]
            assert item["score"] == scores(before)[model_id]


def test_preferred_providers_raise_their_models(client, token):
    before = recommend(client, token, "Write a poem", limit=50)
    assert put_preferences(client, token, preferred_providers=["anthropic"]).status_code == 200
    after = recommend(client, token, "Write a poem", limit=50)
    for item in after["recommendations"]:
        preferred = item["model"]["provider"] == "anthropic"
        assert any("a provider you prefer" in reason for reason in item["reasons"]) == preferred
        assert (item["score"] > scores(before)[item["model"]["id"]]) == preferred


def test_ratings_and_usage_show_in_the_reasons(client, token):
    assert rate(client, token, "local/echo", {"rating": 5}).status_code == 201
    chat(client, token, "local/echo", 1)
    item = next(item for item in recommend(client, token, "quick answers", limit=50)["recommendations"]
                if item["model"]["id"] == "local/echo")
    assert {"among the most used here (#1)", "runs locally with no key"} <= set(item["reasons"])
    assert any(re.fullmatch(r"rated 5(\.0)? by 1 user", reason) for reason in item["reasons"])


def test_recommendations_are_deterministic(client, token):
    request = {"task": "Summarize a long report and fix its SQL", "max_price_per_mtok": 5, "limit": 7}
    first = client.post(RECOMMEND, json=request, headers=bearer(token))
    second = client.post(RECOMMEND, json=request, headers=bearer(token))
    assert first.status_code == second.status_code == 200
    assert first.get_data() == second.get_data()
    assert len(first.get_json()["recommendations"]) == 7


@pytest.mark.parametrize("limit", [1, 3, 20])
def test_recommend_respects_the_limit(client, token, limit):
    assert len(recommend(client, token, "anything", limit=limit)["recommendations"]) == min(limit, len(CATALOG))


BAD_RECOMMEND = {
    "no task": {}, "empty task": {"task": ""}, "task number": {"task": 5}, "NUL task": {"task": "a\x00b"},
    "long task": {"task": "x" * 2001}, "unknown capability": {"task": "t", "capabilities": ["telepathy"]},
    "capabilities string": {"task": "t", "capabilities": "coding"},
    "negative budget": {"task": "t", "max_price_per_mtok": "-1"},
    "negative budget number": {"task": "t", "max_price_per_mtok": -1},
    "budget words": {"task": "t", "max_price_per_mtok": "cheap"},
    "budget bool": {"task": "t", "max_price_per_mtok": True}, "budget NaN": {"task": "t", "max_price_per_mtok": "NaN"},
    "limit 0": {"task": "t", "limit": 0}, "limit 51": {"task": "t", "limit": 51},
    "limit text": {"task": "t", "limit": "5"},
    "limit bool": {"task": "t", "limit": True}, "extra field": {"task": "t", "user_id": "x"},
}


@pytest.mark.parametrize("body", BAD_RECOMMEND.values(), ids=BAD_RECOMMEND.keys())
def test_bad_recommend_requests_are_refused(client, token, body):
    assert_error(client.post(RECOMMEND, json=body, headers=bearer(token)), 400, "validation_error")


def test_recommend_with_no_active_model_answers_empty(client, token, database):
    database.query("UPDATE models SET is_active = false")
    response = client.post(RECOMMEND, json={"task": "Fix a bug"}, headers=bearer(token))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["recommendations"] == []


# -------------------------------------------------------------- preferences

def test_preferences_start_as_the_defaults(client, token):
    response = client.get(PREFERENCES, headers=bearer(token))
    assert response.status_code == 200
    assert response.get_json() == {**DEFAULT_PREFERENCES, **ALERT_PREFERENCES, "updated_at": None}


def test_preferences_need_a_token(client):
    assert_error(client.get(PREFERENCES), 401, "unauthorized")
    assert_error(client.put(PREFERENCES, json={}), 401, "unauthorized")


def test_put_replaces_the_whole_document(client, token, database):
    full = {"default_model_id": "openai/gpt-4o", "preferred_providers": ["anthropic", "local"],
            "daily_spend_limit": "2.5", "max_cost_per_message": 0.25, "theme": "dark", "house_key_fallback": True}
    response = put_preferences(client, token, **full)
    assert response.status_code == 200
    stored = {**full, "daily_spend_limit": "2.50", "max_cost_per_message": "0.25"}
    assert {key: response.get_json()[key] for key in DEFAULT_PREFERENCES} == stored
    assert client.get(PREFERENCES, headers=bearer(token)).get_json() == response.get_json()

    response = put_preferences(client, token, theme="light")
    assert {key: response.get_json()[key] for key in DEFAULT_PREFERENCES} == {**DEFAULT_PREFERENCES, "theme": "light"}
    assert database.query("SELECT default_model_id, preferred_providers, daily_spend_limit, max_cost_per_message, "
                          "theme FROM user_preferences") == [(None, [], None, None, "light")]
    assert database.query("SELECT count(*) FROM audit_log WHERE table_name = 'user_preferences'") == [(2,)]


BAD_PREFERENCES = {
    "unknown model": {"default_model_id": "openai/no-such-model"},
    "malformed model": {"default_model_id": "no slash"},
    "unknown provider": {"preferred_providers": ["mistral"]},
    "providers string": {"preferred_providers": "openai"},
    "negative daily limit": {"daily_spend_limit": "-1"},
    "negative daily limit number": {"daily_spend_limit": -1},
    "words daily limit": {"daily_spend_limit": "ten"},
    "bool daily limit": {"daily_spend_limit": True},
    "NaN daily limit": {"daily_spend_limit": "NaN"},
    "exponent daily limit": {"daily_spend_limit": "1e3"},
    "negative per-message limit": {"max_cost_per_message": "-0.01"},
    "list per-message limit": {"max_cost_per_message": [1]},
    "huge per-message limit": {"max_cost_per_message": "99999999999"},
    "bad theme": {"theme": "solarized"},
    "theme case": {"theme": "Dark"},
    "null theme": {"theme": None},
    "unknown key": {"language": "fr"},
    "NUL in theme": {"theme": "dark\x00"},
    "NUL in model": {"default_model_id": "local/echo\x00"},
    "NUL in provider": {"preferred_providers": ["openai\x00"]},
}


@pytest.mark.parametrize("body", BAD_PREFERENCES.values(), ids=BAD_PREFERENCES.keys())
def test_bad_preferences_are_refused_and_nothing_is_stored(client, token, database, body):
    assert put_preferences(client, token, theme="dark", daily_spend_limit="3").status_code == 200
    stored = database.query("SELECT * FROM user_preferences")
    error = assert_error(client.put(PREFERENCES, json=body, headers=bearer(token)), 400, "validation_error")
    assert all(field.split(".")[0] in body for field in error["details"]) and error["details"]
    assert database.query("SELECT * FROM user_preferences") == stored


def test_a_retired_model_cannot_be_the_default(client, token, database):
    database.query("UPDATE models SET is_active = false WHERE id = 'local/reverse'")
    assert_error(put_preferences(client, token, default_model_id="local/reverse"), 400, "validation_error")
    assert database.query("SELECT count(*) FROM user_preferences") == [(0,)]


LIMIT_FIELDS = ["daily_spend_limit", "max_cost_per_message"]
# What NUMERIC(20,10) holds, sent as a string: kept exactly, and answered as.
KEPT_LIMITS = {"the ledger's smallest step": ("0.0000000001", "0.0000000001"),
               "the largest it holds": ("9999999999.9999999999", "9999999999.9999999999"),
               "zero": ("0", "0.00"), "trailing zeros": ("1.5000000000", "1.50")}
# What it cannot hold, as a JSON string or number: refused, never rounded.
REFUSED_LIMITS = {"a step finer (string)": '"0.00000000001"', "a step finer (number)": "0.00000000001",
                  "an exponent below the step": "1e-11", "ten digits too large (string)": '"10000000000"',
                  "ten digits too large (number)": "10000000000"}


@pytest.mark.parametrize("field", LIMIT_FIELDS)
@pytest.mark.parametrize("sent, answered", KEPT_LIMITS.values(), ids=KEPT_LIMITS.keys())
def test_limits_the_ledger_can_hold_are_kept_exactly(client, token, database, field, sent, answered):
    response = put_preferences(client, token, **{field: sent})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()[field] == answered
    assert client.get(PREFERENCES, headers=bearer(token)).get_json()[field] == answered
    stored = database.query(sql.SQL("SELECT {} FROM user_preferences").format(sql.Identifier(field)))
    assert stored == [(Decimal(sent),)]


@pytest.mark.parametrize("field", LIMIT_FIELDS)
@pytest.mark.parametrize("value", REFUSED_LIMITS.values(), ids=REFUSED_LIMITS.keys())
def test_limits_the_ledger_cannot_hold_are_refused(client, token, database, field, value):
    response = client.put(PREFERENCES, data=f'{{"{field}": {value}}}', content_type="application/json",
                          headers=bearer(token))
    assert field in assert_error(response, 400, "validation_error")["details"]
    assert database.query("SELECT count(*) FROM user_preferences") == [(0,)]


# ------------------------------------------------- spend limits on chat calls

def test_max_cost_per_message_refuses_before_any_hold(client, token, database):
    hold = hold_for("Hello there", 512)
    assert put_preferences(client, token, max_cost_per_message=money(hold - TICK)).status_code == 200
    before = money_state(database)
    error = assert_error(send(client, token, max_tokens=512), 402, "spend_limit_reached")
    assert Decimal(error["details"]["max_cost"]) == hold
    assert money_state(database) == before and ledger(database) == []
    assert database.query("SELECT count(*) FROM chat_history") == [(0,)]

    assert put_preferences(client, token, max_cost_per_message=money(hold)).status_code == 200
    assert send(client, token, max_tokens=512).status_code == 201
    assert ledger(database)[0] == ("hold", hold)


def test_daily_spend_limit_counts_todays_charges(client, token, database):
    assert put_preferences(client, token, daily_spend_limit="1").status_code == 200
    assert send(client, token, max_tokens=512).status_code == 201
    (_, hold), (_, release) = ledger(database)
    assert hold == hold_for("Hello there", 512)
    charged = hold - release
    # Room for exactly one more identical message: today's charge plus its hold.
    assert put_preferences(client, token, daily_spend_limit=money(charged + hold)).status_code == 200
    assert send(client, token, max_tokens=512).status_code == 201
    before = money_state(database)
    assert_error(send(client, token, max_tokens=512), 402, "spend_limit_reached")
    assert money_state(database) == before


def test_daily_spend_limit_counts_open_holds(client, token, database):
    (opened,), = database.query("SELECT ok FROM deduct_user_balance(%s, 0.5)", (user_id_of(database),))
    assert opened  # an open hold, as a call in flight leaves it
    hold = hold_for("Hello there", 512)
    assert put_preferences(client, token, daily_spend_limit=money(Decimal("0.5") + hold - TICK)).status_code == 200
    before = money_state(database)
    assert_error(send(client, token, max_tokens=512), 402, "spend_limit_reached")
    assert money_state(database) == before
    assert put_preferences(client, token, daily_spend_limit=money(Decimal("0.5") + hold)).status_code == 200
    assert send(client, token, max_tokens=512).status_code == 201


@pytest.mark.parametrize("limit", ["daily_spend_limit", "max_cost_per_message"])
def test_a_zero_limit_refuses_every_message(client, token, database, limit):
    assert put_preferences(client, token, **{limit: "0"}).status_code == 200
    for model_id in ("local/echo", "local/reverse"):
        session_id = new_session(client, token, model_id)
        assert_error(send(client, token, session_id, "x", max_tokens=1), 402, "spend_limit_reached")
    assert ledger(database) == []


def test_limits_belong_to_their_user(client, token, database):
    assert put_preferences(client, token, daily_spend_limit="0").status_code == 200
    bob = user(client, "bob", funds="1")
    assert send(client, bob).status_code == 201


def test_parallel_messages_cannot_pass_the_daily_limit_together(live_server, database):
    # Charges equal holds (no input price, one output token), so the limit admits
    # exactly N messages in all, however they interleave.
    database.query("UPDATE models SET input_price_per_mtok = 0, output_price_per_mtok = 1 WHERE id = 'local/echo'")
    hold, admitted, parallel = Decimal("0.000001"), 3, 12
    with httpx.Client(base_url=f"{live_server.url}/api/v1", timeout=30) as http:
        account = {"email": "ada@example.com", "password": "correct horse battery"}
        assert http.post("/auth/register", json={**account, "username": "ada"}).status_code == 201
        headers = bearer(http.post("/auth/login", json=account).json()["access_token"])
        assert http.post("/balance/funds", json={"amount": "5"}, headers=headers).status_code == 201
        assert http.put("/preferences", json={"daily_spend_limit": money(admitted * hold)},
                        headers=headers).status_code == 200
        sessions = [http.post("/chat/sessions", json={"model_id": "local/echo"}, headers=headers).json()["id"]
                    for _ in range(parallel)]
        start = threading.Barrier(parallel)

        def post(url):
            start.wait()
            return http.post(url, json={"content": "Hi", "max_tokens": 1}, headers=headers)

        with ThreadPoolExecutor(parallel) as pool:
            responses = list(pool.map(post, [f"/chat/sessions/{session}/messages" for session in sessions]))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] * admitted + [402] * (parallel - admitted)
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 402} == {"spend_limit_reached"}
    # Replaying the ledger in order: today's holds (charged + open) never exceed the limit.
    running = peak = Decimal(0)
    for kind, amount in ledger(database):
        running += amount if kind == "hold" else -amount
        peak = max(peak, running)
    assert peak <= admitted * hold
    assert database.query("SELECT spent_balance, held_balance FROM user_balance") == [(admitted * hold, 0)]


# ------------------------------------------------------------------ activity

def activity(client, token, **query):
    response = client.get(ACTIVITY, query_string=query, headers=bearer(token))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_activity_lists_transactions_and_messages_newest_first(client, token, database):
    session_id = new_session(client, token)
    for content in ("first secret words", "second secret words"):
        assert send(client, token, session_id, content).status_code == 201
    body = activity(client, token, view="entries")
    items = body["activity"]
    assert body["next_cursor"] is None
    # deposit, then per message: hold, release, user and assistant message.
    assert len(items) == 1 + 2 * 4
    assert sorted(item["kind"] for item in items) == ["message"] * 4 + ["transaction"] * 5
    assert sorted(item["action"] for item in items if item["kind"] == "transaction") == [
        "deposit", "hold", "hold", "release", "release"]
    assert items[-1]["action"] == "deposit" and items[-1]["amount"] == "10.00"
    stamps = [item["created_at"] for item in items]
    assert stamps == sorted(stamps, reverse=True)
    for item in items:
        if item["kind"] == "message":
            assert item["session_id"] == session_id and item["model_id"] == "local/echo"
    text = json.dumps(body)
    assert "secret words" not in text and "ada@example.com" not in text and "content" not in text


def test_activity_ties_are_broken_newest_id_first(client, token):
    session_id = new_session(client, token)
    for _ in range(6):  # message ids cross from one digit to two
        assert send(client, token, session_id).status_code == 201
    messages = [item for item in activity(client, token, limit=100, view="entries")["activity"]
                if item["kind"] == "message"]
    assert [int(item["id"]) for item in messages] == sorted((int(item["id"]) for item in messages), reverse=True)


def test_activity_pages_have_no_duplicates_or_gaps(client, token, database):
    chat(client, token, "local/echo", 3)  # a settle's release and its messages share a time: ties across halves
    everything = activity(client, token, limit=100, view="entries")["activity"]
    # The page picked by index is the view's own order.
    assert [(item["kind"], item["id"]) for item in everything] == [tuple(row) for row in database.query(
        "SELECT kind, item_id::text FROM recent_activity a JOIN users u ON u.id = a.user_id"
        " WHERE u.email = 'ada@example.com' ORDER BY a.created_at DESC, a.kind DESC, a.item_id DESC")]
    seen, cursor = [], None
    while True:
        page = activity(client, token, limit=2, view="entries", **({"cursor": cursor} if cursor else {}))
        assert len(page["activity"]) <= 2
        seen += page["activity"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == everything and len(everything) == 1 + 3 * 4


@pytest.mark.parametrize("query", [{"limit": "0"}, {"limit": "101"}, {"limit": "-1"}, {"limit": "ten"},
                                   {"limit": ""}, {"cursor": "garbage"}, {"cursor": ""},
                                   {"cursor": "djF8eHx5fHo"}])  # base64 of "v1|x|y|z"
def test_bad_activity_pages_are_refused(client, token, query):
    assert_error(client.get(ACTIVITY, query_string=query, headers=bearer(token)), 400, "validation_error")


def test_activity_needs_a_token(client):
    assert_error(client.get(ACTIVITY), 401, "unauthorized")


def test_another_users_activity_never_appears(client, token, database):
    chat(client, token, "local/echo", 2)
    bob = user(client, "bob")
    assert activity(client, bob) == {"activity": [], "next_cursor": None}
    assert client.post("/api/v1/balance/funds", json={"amount": "3"}, headers=bearer(bob)).status_code == 201
    items = activity(client, bob)["activity"]
    (bob_deposit,), = database.query("SELECT id::text FROM transactions WHERE user_id = %s",
                                     (user_id_of(database, "bob"),))
    assert [(item["kind"], item["id"], item["status"]) for item in items] == [("deposit", bob_deposit, "done")]
    entries = activity(client, bob, view="entries")["activity"]
    assert [(item["kind"], item["id"], item["action"]) for item in entries] == [("transaction", bob_deposit, "deposit")]


# ------------------------------------------------------- flask catalog load

NEW_MODEL = {"id": "local/echo-large", "provider": "local", "name": "Echo Large", "description": "A bigger echo.",
             "context_window": 16384, "max_output_tokens": 1024, "input_price_per_mtok": "0.03",
             "output_price_per_mtok": "0.04", "prices_as_of": "2026-12-01", "capabilities": ["fast"]}
REPRICED_ECHO = {**next(entry for entry in CATALOG if entry["id"] == "local/echo"),
                 "input_price_per_mtok": "0.015", "prices_as_of": "2026-12-01"}


@pytest.fixture
def owner_app(settings, database):
    app = create_app({**settings, "MIGRATE_DATABASE_URL": database.owner_url})
    yield app
    close_app(app)


def load(app, tmp_path, models, alias_lists=()):
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": models, "alias_lists": list(alias_lists)}))
    return app.test_cli_runner().invoke(args=["catalog", "load", str(path)])


def test_catalog_load_adds_and_updates_models(owner_app, client, tmp_path):
    result = load(owner_app, tmp_path, [REPRICED_ECHO, NEW_MODEL])
    assert result.exit_code == 0, result.output
    assert result.output == "catalog: 1 models added, 1 updated, 0 unchanged\n"
    models = {model["id"]: model for model in catalog(client)}
    assert models["local/echo"]["input_price_per_mtok"] == "0.015"
    assert models["local/echo"]["prices_as_of"] == "2026-12-01"
    assert {key: models["local/echo-large"][key] for key in NEW_MODEL} == NEW_MODEL
    again = load(owner_app, tmp_path, [REPRICED_ECHO, NEW_MODEL])
    assert again.output == "catalog: 0 models added, 0 updated, 2 unchanged\n"


def _without(entry, key):
    return {name: value for name, value in entry.items() if name != key}


# Bad entries after local/echo, and what the refusal must name.
BAD_NAMES_AND_FEATURES = {
    "unknown feature": ([{**NEW_MODEL, "features": ["telepathy"]}], "models.1.features.0"),
    "repeated feature": ([{**NEW_MODEL, "features": ["tools", "tools"]}], "models.1.features"),
    "unknown modality": ([{**NEW_MODEL, "input_modalities": ["text", "audio"]}], "models.1.input_modalities.1"),
    "no text modality": ([{**NEW_MODEL, "input_modalities": ["image"], "features": ["images"]}],
                         "models.1.input_modalities"),
    "images without the image modality": ([{**NEW_MODEL, "features": ["images"]}], "image input modality"),
    "the image modality without images": ([{**NEW_MODEL, "input_modalities": ["text", "image"]}], "images feature"),
    "an alias with a slash": ([{**NEW_MODEL, "aliases": ["local/echo-xl"]}], "models.1.aliases.0"),
    "an alias that is no string": ([{**NEW_MODEL, "aliases": [5]}], "models.1.aliases.0"),
    "aliases as one string": ([{**NEW_MODEL, "aliases": "echo-xl"}], "models.1.aliases"),
    "repeated alias": ([{**NEW_MODEL, "aliases": ["xl", "xl"]}], "models.1.aliases"),
    "the model's own name as an alias": ([{**NEW_MODEL, "aliases": ["echo-large"]}], 'aliases: "echo-large"'),
    "another model's bare name as an alias": ([{**NEW_MODEL, "aliases": ["echo"]}], 'models.1.aliases: "echo"'),
    "another model's alias": ([{**NEW_MODEL, "aliases": ["xl"]}, {**NEW_MODEL, "id": "local/echo-small",
                                                                   "aliases": ["xl"]}], 'models.2.aliases: "xl"'),
}


BAD_CATALOGS = {
    "negative price": [{**NEW_MODEL, "input_price_per_mtok": "-0.01"}],
    "missing price": [_without(NEW_MODEL, "output_price_per_mtok")],
    "five decimals": [{**NEW_MODEL, "input_price_per_mtok": "0.00001"}],
    "price as words": [{**NEW_MODEL, "input_price_per_mtok": "cheap"}],
    "bad id": [{**NEW_MODEL, "id": "local/echo large"}],
    "id of another provider": [{**NEW_MODEL, "id": "openai/echo-large"}],
    "duplicate ids": [NEW_MODEL, {**NEW_MODEL, "name": "Again"}],
    "unknown capability": [{**NEW_MODEL, "capabilities": ["telepathy"]}],
    "output above context": [{**NEW_MODEL, "max_output_tokens": 16385}],
    "unknown field": [{**NEW_MODEL, "secret": "x"}],
    **{name: models for name, (models, _) in BAD_NAMES_AND_FEATURES.items()},
}


@pytest.mark.parametrize("models", BAD_CATALOGS.values(), ids=BAD_CATALOGS.keys())
def test_a_bad_catalog_is_refused_whole(owner_app, database, tmp_path, models):
    before = model_rows(database)
    result = load(owner_app, tmp_path, [REPRICED_ECHO, *models])
    assert result.exit_code != 0
    assert "catalog refused" in result.output and "Traceback" not in result.output
    assert model_rows(database) == before


@pytest.mark.parametrize("models, named", BAD_NAMES_AND_FEATURES.values(), ids=BAD_NAMES_AND_FEATURES.keys())
def test_a_refusal_names_the_field(owner_app, tmp_path, models, named):
    result = load(owner_app, tmp_path, [REPRICED_ECHO, *models])
    assert result.exit_code != 0 and named in result.output, result.output


def test_an_alias_clashing_with_a_stored_model_refuses_the_load(owner_app, database, tmp_path):
    """The file alone is fine; the schema finds the clash with the catalog
    already stored, and nothing of the file is loaded."""
    before = model_rows(database)
    for models in ([REPRICED_ECHO, {**NEW_MODEL, "aliases": ["gpt-4o"]}],
                   [REPRICED_ECHO, {**NEW_MODEL, "aliases": ["claude-opus-4"]}],
                   [REPRICED_ECHO, {**NEW_MODEL, "id": "local/claude-3-haiku"}]):
        result = load(owner_app, tmp_path, models)
        assert result.exit_code == 1, result.output
        assert "nothing loaded: catalog refused: the alias" in result.output, result.output
        assert "Traceback" not in result.output
        assert model_rows(database) == before


def test_one_load_may_move_an_alias_to_another_model(owner_app, client, tmp_path):
    opus = next(entry for entry in CATALOG if entry["id"] == "anthropic/claude-opus-4-20250514")
    newer = {**opus, "id": "anthropic/claude-opus-4-1-20250805", "name": "Claude Opus 4.1",
             "aliases": ["claude-opus-4"]}
    result = load(owner_app, tmp_path, [{**opus, "aliases": ["claude-opus-4-0"]}, newer])
    assert result.exit_code == 0, result.output
    models = {model["id"]: model for model in catalog(client)}
    assert models["anthropic/claude-opus-4-1-20250805"]["aliases"] == ["claude-opus-4"]
    assert models["anthropic/claude-opus-4-20250514"]["aliases"] == ["claude-opus-4-0"]


def alias_lists(database):
    return database.query("SELECT alias, models FROM alias_lists ORDER BY alias")


def test_an_alias_list_is_loaded_and_may_be_rewritten(owner_app, database, tmp_path):
    listed = {"alias": "echoes", "models": [NEW_MODEL["id"], "local/echo"]}
    result = load(owner_app, tmp_path, [NEW_MODEL], [listed])
    assert result.exit_code == 0 and result.output.endswith("; 1 alias lists written\n"), result.output
    assert alias_lists(database) == [("echoes", [NEW_MODEL["id"], "local/echo"])]
    assert load(owner_app, tmp_path, [NEW_MODEL], [{**listed, "models": ["local/echo"]}]).exit_code == 0
    assert alias_lists(database) == [("echoes", ["local/echo"])]


# Alias lists refused, and what the refusal must say: by the file's validation, or by the schema at commit
# (a name or model only the stored catalog knows).
BAD_ALIAS_LISTS = {
    "a model named twice": ([], [{"alias": "echoes", "models": ["local/echo", "local/echo"]}], "alias_lists.0.models"),
    "too many models": ([], [{"alias": "echoes", "models": [f"local/echo-{n}" for n in range(7)]}],
                        "alias_lists.0.models"),
    "no models": ([], [{"alias": "echoes", "models": []}], "alias_lists.0.models"),
    "a slash in its name": ([], [{"alias": "local/echoes", "models": ["local/echo"]}], "alias_lists.0.alias"),
    "a model's bare name in the file": ([], [{"alias": "echo", "models": ["local/echo"]}],
                                        'alias_lists.0.alias: "echo"'),
    "a model that is none": ([], [{"alias": "echoes", "models": ["local/echo", "local/nope"]}],
                             "nothing loaded: catalog refused: the alias list echoes names local/nope, which is no"),
    "a stored model's alias": ([], [{"alias": "gpt-4o", "models": ["local/echo"]}],
                               "nothing loaded: catalog refused: the alias list gpt-4o is also a name of openai/gpt-4o"),
}


@pytest.mark.parametrize("models, lists, named", BAD_ALIAS_LISTS.values(), ids=BAD_ALIAS_LISTS.keys())
def test_a_bad_alias_list_refuses_the_load_naming_it(owner_app, database, tmp_path, models, lists, named):
    before = model_rows(database)
    result = load(owner_app, tmp_path, [REPRICED_ECHO, *models], lists)
    assert result.exit_code != 0 and named in result.output, result.output
    assert "Traceback" not in result.output
    assert model_rows(database) == before and alias_lists(database) == []


def test_a_model_may_not_take_a_stored_alias_lists_name(owner_app, database, tmp_path):
    assert load(owner_app, tmp_path, [REPRICED_ECHO], [{"alias": "echoes", "models": ["local/echo"]}]).exit_code == 0
    before = model_rows(database)
    for model in ({**NEW_MODEL, "aliases": ["echoes"]}, {**NEW_MODEL, "id": "local/echoes"}):
        result = load(owner_app, tmp_path, [model])
        assert result.exit_code == 1, result.output
        assert "nothing loaded: catalog refused: echoes is the name of an alias list" in result.output, result.output
        assert model_rows(database) == before


def test_a_catalog_entry_without_features_takes_text_only(owner_app, client, tmp_path):
    assert "features" not in NEW_MODEL and "input_modalities" not in NEW_MODEL
    assert load(owner_app, tmp_path, [NEW_MODEL]).exit_code == 0
    model = next(model for model in catalog(client) if model["id"] == NEW_MODEL["id"])
    assert (model["features"], model["input_modalities"], model["aliases"]) == ([], ["text"], [])


def test_catalog_load_needs_the_owner_login(settings, database, tmp_path, monkeypatch):
    # Without MIGRATE_DATABASE_URL it falls back to DATABASE_URL, app_user's login.
    monkeypatch.delenv("MIGRATE_DATABASE_URL", raising=False)
    app = create_app(settings)
    before = model_rows(database)
    try:
        result = load(app, tmp_path, [REPRICED_ECHO, NEW_MODEL])
    finally:
        close_app(app)
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "nothing loaded" in result.output and "permission denied" in result.output
    assert "Traceback" not in result.output
    assert model_rows(database) == before


# ------------------------------------------------------------ analytics_user

VIEWS = ("user_with_balance", "model_popularity", "recent_activity")


def as_analytics(database, statement):
    with closing(database.owner()) as conn, conn.cursor() as cur:
        cur.execute("SET ROLE analytics_user")
        cur.execute(statement)
        return cur.fetchall()


def test_analytics_reads_the_views_without_secrets_or_text(client, token, database):
    chat(client, token, "local/echo", 1)
    for view in VIEWS:
        rows = as_analytics(database, f"SELECT row_to_json(v)::text FROM {view} v")
        assert rows
        text = " ".join(row for row, in rows)
        assert "ada@example.com" not in text and "Hello there" not in text and "pbkdf2" not in text
    columns = database.query("SELECT column_name FROM information_schema.columns "
                             "WHERE table_schema = 'public' AND table_name = ANY(%s)", (list(VIEWS),))
    assert columns
    for (column,) in columns:
        assert not re.search(r"email|password|content|secret|encrypted|fingerprint|nonce|review", column), column


@pytest.mark.parametrize("statement", [
    "SELECT * FROM users", "SELECT * FROM transactions", "SELECT * FROM chat_history", "SELECT * FROM api_keys",
    "SELECT * FROM audit_log", "SELECT * FROM user_balance", "SELECT * FROM models",
    "INSERT INTO models (id, provider, name, context_window, max_output_tokens, input_price_per_mtok, "
    "output_price_per_mtok, prices_as_of) VALUES ('local/x', 'local', 'X', 10, 1, 0, 0, '2026-01-01') RETURNING id",
    "SELECT * FROM deduct_user_balance(gen_random_uuid(), 1)",
])
def test_analytics_reads_nothing_else(database, statement):
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        as_analytics(database, statement)


def test_catalog_load_refuses_a_model_of_a_provider_not_configured(owner_app, client, tmp_path):
    result = load(owner_app, tmp_path, [{**NEW_MODEL, "id": "nowhere/echo", "provider": "nowhere"}])
    assert result.exit_code != 0
    assert "models.0.provider: nowhere is no configured provider" in result.output
    assert "nowhere/echo" not in {model["id"] for model in catalog(client)}
