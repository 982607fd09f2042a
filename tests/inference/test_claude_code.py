"""Claude Code, the real binary, run headless against the service as a user
would point it at us: ANTHROPIC_BASE_URL the service, ANTHROPIC_API_KEY an
access key. The Anthropic stub plays the model: it answers the task with a
tool_use of Claude Code's Write tool, Claude Code writes the file and sends the
tool_result, and the stub's final text comes back. Every call is billed
exactly from the stub's usage and nothing stays held.

Claude Code marks its system prompt and its last message block for the prompt
cache. The marks reach the provider, and each part of the usage it reports is
billed at its own price: what caching saves is SAVED_PER_LATER_CALL below.

The binary is the native one in the npm package @anthropic-ai/claude-code
(.ci/run installs the pinned version); the test is skipped, saying why, where
it is not installed or cannot run."""
import glob
import itertools
import json
import os
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.sdk_clients import account, assert_charged_exactly, server  # noqa: F401
from tests.support import HOUSE_ANTHROPIC, PRICES, cost

MODEL = "anthropic/claude-sonnet-4-20250514"
FINAL_TEXT = "I wrote hello.txt."
# Where .ci/run installs the package (npm install --prefix /opt/claude-code); CLAUDE_CODE_BIN overrides.
INSTALLED = "/opt/claude-code/node_modules/@anthropic-ai/claude-code-linux-*/claude"

# catalog.json's prices of MODEL per million tokens for a prompt-cache read and a 5-minute write.
CACHE_READ_PRICE, CACHE_WRITE_PRICE = Decimal("0.30"), Decimal("3.75")
# The usage the stub reports with caching, in Anthropic's words (prompt_tokens: the input neither read
# nor written): the first call writes Claude Code's prompt prefix to the cache, every later one reads it.
PREFIX_TOKENS = 3000
FIRST_CALL_USAGE = {"prompt_tokens": 50, "cache_write_tokens": PREFIX_TOKENS}
LATER_CALL_USAGE = {"prompt_tokens": 80, "cache_read_tokens": PREFIX_TOKENS}
# What caching saves on Claude Sonnet 4: each later call's 3,000 cached tokens cost $0.0009 instead
# of $0.009 at the input price, $0.0081 less; the first call's write of them costs $0.01125, $0.00225
# more. A run of two calls, as this one, costs $0.00585 less than the same tokens uncached.
SAVED_PER_LATER_CALL, FIRST_WRITE_PREMIUM = Decimal("0.0081"), Decimal("0.00225")
# A settled call's parts, as call_charges keeps them.
CHARGE_PARTS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "cache_write_1h_tokens", "output_tokens",
                "input_cost", "cached_input_cost", "cache_write_cost", "output_cost")


def claude_binary():
    """The native claude binary, or why there is none that runs here."""
    candidates = [os.environ.get("CLAUDE_CODE_BIN", ""), *sorted(glob.glob(INSTALLED)), shutil.which("claude") or ""]
    binary = next((path for path in candidates if path and os.access(path, os.X_OK)), None)
    if binary is None:
        return None, "Claude Code is not installed (npm install --prefix /opt/claude-code @anthropic-ai/claude-code)"
    try:
        version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        return None, f"the Claude Code binary cannot run here: {exc}"
    if version.returncode != 0 or "Claude Code" not in version.stdout:
        return None, f"the Claude Code binary cannot run here: {version.stderr.strip()[:200]}"
    return binary, None


def plays_the_model(target, usage_of_call=lambda number: {}):
    """The stub's answer to each of Claude Code's requests: asked with its Write
    tool, it writes `target`; once the tool's result is back, it says it is done.
    `usage_of_call(n)` is the usage it reports on its n-th answer (0: the first)."""
    numbers = itertools.count()

    def respond(body):
        usage = usage_of_call(next(numbers))
        last = body["messages"][-1]["content"]
        if isinstance(last, list) and any(block.get("type") == "tool_result" for block in last):
            return {**usage, "reply": FINAL_TEXT, "tool_calls": []}
        if any(tool["name"] == "Write" for tool in body.get("tools", ())):
            return {**usage, "reply": "", "tool_calls": [
                ("toolu_write_1", "Write", json.dumps({"file_path": str(target), "content": "hi from the stub\n"}))]}
        return {**usage, "reply": "ok", "tool_calls": []}
    return respond


def caching(number):
    """The usage of a run whose prompt prefix the first call caches and every later call reads."""
    return FIRST_CALL_USAGE if number == 0 else LATER_CALL_USAGE


def run_claude_code(live, key, anthropic_stub, tmp_path, usage_of_call=lambda number: {}):
    """Claude Code, as a user runs it headless, given the task that needs its
    Write tool, against the `live` service, the stub playing the model
    (plays_the_model): (its JSON result, the file it was to write, the stub's
    Messages requests)."""
    binary, why_not = claude_binary()
    if binary is None:
        pytest.skip(why_not)
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    target = work / "hello.txt"
    anthropic_stub.behaviour.respond = plays_the_model(target, usage_of_call)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "ANTHROPIC_BASE_URL": live.url,
           "ANTHROPIC_API_KEY": key, "ANTHROPIC_SMALL_FAST_MODEL": MODEL, "DISABLE_TELEMETRY": "1",
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"}
    run = subprocess.run([binary, "-p", "Create hello.txt saying hi.", "--model", MODEL, "--allowedTools", "Write",
                          "--output-format", "json"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    calls = [request for request in anthropic_stub.requests if request["path"].startswith("/v1/messages")]
    return json.loads(run.stdout), target, calls


def test_claude_code_completes_a_task_that_needs_a_tool(server, account, stubs, tmp_path):  # noqa: F811
    anthropic_stub = stubs[1]
    result, target, calls = run_claude_code(server, account["key"], anthropic_stub, tmp_path)
    assert result["result"] == FINAL_TEXT and not result["is_error"]
    assert target.read_text() == "hi from the stub\n"

    assert len(calls) >= 2
    assert all(request["headers"]["x-api-key"] == HOUSE_ANTHROPIC for request in calls)
    assert {tool["name"] for tool in calls[0]["body"]["tools"]} >= {"Write", "Read", "Bash"}
    sent_result = calls[-1]["body"]["messages"][-1]["content"]
    assert [block["tool_use_id"] for block in sent_result if block["type"] == "tool_result"] == ["toolu_write_1"]
    assert_charged_exactly(server, account["user_id"], len(calls) * cost(MODEL, 11, 7))


def at_price(tokens, price_per_mtok):
    """`tokens` at a price per million, exactly: the test's counts need no rounding."""
    amount = tokens * price_per_mtok / 1_000_000
    assert amount == amount.quantize(Decimal("1e-10"))
    return amount


def expected_charge(usage, completion_tokens=7):
    """The parts a call reporting `usage` (Anthropic's words) is charged, each at its catalog price."""
    input_price, output_price = PRICES[MODEL]
    read, written = usage.get("cache_read_tokens", 0), usage.get("cache_write_tokens", 0)
    return {"input_tokens": usage["prompt_tokens"], "cached_input_tokens": read, "cache_write_tokens": written,
            "cache_write_1h_tokens": 0, "output_tokens": completion_tokens,
            "input_cost": at_price(usage["prompt_tokens"], input_price),
            "cached_input_cost": at_price(read, CACHE_READ_PRICE),
            "cache_write_cost": at_price(written, CACHE_WRITE_PRICE),
            "output_cost": at_price(completion_tokens, output_price)}


def charges_of(live, user_id):
    """The user's settled calls' parts (call_charges), oldest first."""
    rows = live.database.query(
        f"SELECT {', '.join('c.' + part for part in CHARGE_PARTS)} FROM call_charges c"
        " JOIN transactions hold ON hold.id = c.hold_id WHERE hold.user_id = %s ORDER BY c.hold_id", (user_id,))
    return [dict(zip(CHARGE_PARTS, row)) for row in rows]


def test_claude_code_with_caching_is_billed_each_part_at_its_price(server, account, stubs, tmp_path):  # noqa: F811
    """Caching is on, as Claude Code runs by default. The first call writes
    PREFIX_TOKENS to the cache at the write price, every later call reads them
    at the read price: the run saves SAVED_PER_LATER_CALL a call after the
    first, less FIRST_WRITE_PREMIUM, on the same tokens at the input price."""
    anthropic_stub = stubs[1]
    result, target, calls = run_claude_code(server, account["key"], anthropic_stub, tmp_path, caching)
    assert result["result"] == FINAL_TEXT and target.read_text() == "hi from the stub\n"
    assert len(calls) >= 2
    for request in calls:
        assert any("cache_control" in block for block in request["body"]["system"]), "the marks were dropped"

    billed = charges_of(server, account["user_id"])
    assert billed == [expected_charge(FIRST_CALL_USAGE)] + [expected_charge(LATER_CALL_USAGE)] * (len(calls) - 1)
    assert (billed[1]["cached_input_cost"], cost(MODEL, PREFIX_TOKENS, 0)) == (Decimal("0.0009"), Decimal("0.009"))
    ledger = httpx.get(f"{server.url}/api/v1/balance/transactions", params={"type": "release"},
                       headers=account["headers"]).json()["transactions"]
    assert [{part: Decimal(entry["charge"][part]) for part in CHARGE_PARTS} for entry in reversed(ledger)] == billed

    charged = sum(call[part] for call in billed for part in CHARGE_PARTS if part.endswith("_cost"))
    uncached = sum(cost(MODEL, call["input_tokens"] + call["cached_input_tokens"] + call["cache_write_tokens"],
                        call["output_tokens"]) for call in billed)
    assert uncached - charged == (len(calls) - 1) * SAVED_PER_LATER_CALL - FIRST_WRITE_PREMIUM
    assert_charged_exactly(server, account["user_id"], charged)


def test_the_binarys_absence_is_said_not_hidden(monkeypatch, tmp_path):
    monkeypatch.setenv("CLAUDE_CODE_BIN", str(tmp_path / "missing"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("tests.inference.test_claude_code.INSTALLED", str(tmp_path / "none" / "claude"))
    binary, why_not = claude_binary()
    assert binary is None and "not installed" in why_not
    fake = Path(tmp_path / "claude")
    fake.write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CLAUDE_CODE_BIN", str(fake))
    binary, why_not = claude_binary()
    assert binary is None and "cannot run here: broken" in why_not
