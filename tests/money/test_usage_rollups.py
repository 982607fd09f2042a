"""The daily usage rollups against the ledger, through the service under
gunicorn: a burst of parallel billed /v1 calls of one user across several
models, with two access keys and the account's own token, one call that fails
and one hold still open, leaves rollups, GET /usage and the ledger agreeing
(cost, requests and tokens by kind), `flask usage verify` passing, and no
deadlock; a rollup row changed by hand is named by verify and by README's
ledger check."""
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest

from app.extensions import db
from app.money import format_money
from tests.support import bearer, live_user, readme_ledger_query

COMPLETIONS = "/v1/chat/completions"
MODELS = ("local/echo", "local/reverse", "openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-20241022")
ROUNDS = 3
FAILING = "please fail"


@pytest.fixture
def settings(stubbed_settings):
    return {**stubbed_settings, "OPENAI_API_KEY": "sk-house-stubkey-000000000001234",
            "ANTHROPIC_API_KEY": "sk-ant-house-0000000000000001", "PROVIDER_TIMEOUT": 30}


@pytest.fixture
def stubs_reporting_cache(openai_stub, anthropic_stub):
    """The Anthropic stub reports cache reads and writes (5 minutes and 1 hour); the OpenAI stub
    fails the call that asks it to."""
    anthropic_stub.behaviour.cache_read_tokens = 3
    anthropic_stub.behaviour.cache_write_tokens = 2
    anthropic_stub.behaviour.cache_write_1h_tokens = 1
    openai_stub.behaviour.respond = lambda body: {"status": 500} if FAILING in str(body) else {}


def call(url, headers, model, content):
    answer = httpx.post(f"{url}{COMPLETIONS}", headers=headers, timeout=60,
                        json={"model": model, "messages": [{"role": "user", "content": content}],
                              "max_tokens": 32})
    return answer.status_code, answer.json()


def expected_from_answers(answers):
    """What the callers were told, summed per (model, key): requests, cost and tokens by kind."""
    summed = defaultdict(lambda: {"requests": 0, "cost": Decimal(0), "input_tokens": 0, "cached_input_tokens": 0,
                                  "cache_write_tokens": 0, "output_tokens": 0})
    for (model, key_id), (status, body) in answers:
        if status != 200:
            continue
        usage, row = body["usage"], summed[model, key_id]
        cached = usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)
        written = usage.get("cache_creation_input_tokens", 0)
        row["requests"] += 1
        row["cost"] += Decimal(usage["cost"])
        row["input_tokens"] += usage["prompt_tokens"] - cached - written
        row["cached_input_tokens"] += cached
        row["cache_write_tokens"] += written
        row["output_tokens"] += usage["completion_tokens"]
    return dict(summed)


def rollups(database, user_id):
    rows = database.query("SELECT model_id, access_key_id, day, requests, cost, input_tokens, cached_input_tokens, "
                          "cache_write_tokens, output_tokens FROM usage_daily WHERE user_id = %s", (user_id,))
    return {(model, key and str(key)): {"day": day, "requests": requests, "cost": cost, "input_tokens": uncached,
                                        "cached_input_tokens": cached, "cache_write_tokens": written,
                                        "output_tokens": output}
            for model, key, day, requests, cost, uncached, cached, written, output in rows}


def verify(app, *args):
    result = app.test_cli_runner().invoke(args=["usage", "verify", *args])
    return result.exit_code, result.output


def test_a_parallel_burst_leaves_rollups_usage_and_the_ledger_agreeing(app, live_server, database,
                                                                        stubs_reporting_cache):
    token_headers, user_id = live_user(live_server.url, "10")
    key, other_key = (httpx.post(f"{live_server.url}/api/v1/access-keys", json={"name": name},
                                 headers=token_headers).json() for name in ("burst", "another"))
    callers = {None: token_headers, key["id"]: bearer(key["key"]), other_key["id"]: bearer(other_key["key"])}
    calls = [((model, key_id), f"call {n} of {model}") for n in range(ROUNDS) for model in MODELS for key_id in callers]
    calls.append((("openai/gpt-4o-mini", key["id"]), FAILING))
    with ThreadPoolExecutor(12) as pool:
        answers = list(zip([caller for caller, _ in calls], pool.map(
            lambda planned: call(live_server.url, callers[planned[0][1]], planned[0][0], planned[1]), calls)))
    statuses = [status for _, (status, _) in answers]
    assert statuses.count(200) == len(calls) - 1 and statuses[-1] >= 500, statuses
    with app.app_context():  # a hold whose call is still running counts nothing yet
        assert db.hold_funds(user_id, Decimal("0.50"), "open", {}, model_id="local/echo")["ok"]

    told = expected_from_answers(answers)
    kept = rollups(database, user_id)
    assert {place: {name: value for name, value in row.items() if name != "day"} for place, row in kept.items()} \
        == told
    # The ledger, summed here without the rollups' views: each settled hold less its release.
    ledger = database.query(
        "SELECT count(*), sum(hold.amount - rel.amount) FROM transactions rel "
        "JOIN transactions hold ON hold.id = rel.related_transaction_id "
        "WHERE rel.user_id = %s AND rel.type = 'release' AND rel.amount < hold.amount", (user_id,))
    assert ledger == [(len(calls) - 1, sum(row["cost"] for row in told.values()))]
    # The failed call's hold was returned whole and the open one is not settled: neither counts.
    assert database.query("SELECT count(*) FROM transactions WHERE user_id = %s AND type = 'hold'", (user_id,)) \
        == [(len(calls) + 1,)]
    report = httpx.get(f"{live_server.url}/api/v1/usage", headers=token_headers).json()["usage"]
    assert {entry["model_id"]: (Decimal(entry["cost"]), entry["requests"], entry["output_tokens"])
            for entry in report} == {
        model: (sum(row["cost"] for (m, _), row in told.items() if m == model),
                sum(row["requests"] for (m, _), row in told.items() if m == model),
                sum(row["output_tokens"] for (m, _), row in told.items() if m == model)) for model in MODELS}
    assert [entry["cache_write_tokens"] for entry in report if entry["model_id"].startswith("anthropic/")] == [
        len(callers) * ROUNDS * 3]
    assert "deadlock" not in live_server.output()

    assert verify(app) == (0, f"usage verified: {len(kept)} rollup rows agree with the ledger\n")
    assert verify(app, "--user", "nobody@example.com")[0] == 1
    assert database.query(readme_ledger_query()) == []

    # A rollup row changed by hand (as the owner): verify names it, and so does README's ledger check.
    day = kept["local/reverse", key["id"]]["day"]
    database.query("UPDATE usage_daily SET cost = cost + 1 WHERE user_id = %s AND model_id = 'local/reverse' "
                   "AND access_key_id = %s", (user_id, key["id"]))
    status, output = verify(app)
    assert status == 1
    (line,) = [line for line in output.splitlines() if line.startswith("differs:")]
    (email,), = database.query("SELECT email FROM users WHERE id = %s", (user_id,))
    assert line.startswith(f"differs: {email} {day} model local/reverse key {key['id']}: rollup requests {ROUNDS}, "
                           f"cost {format_money(kept['local/reverse', key['id']]['cost'] + 1)}, ")
    assert "1 rollup rows differ from the ledger" in output
    assert [str(row[0]) for row in database.query(readme_ledger_query())] == [user_id]
