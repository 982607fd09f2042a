"""Claude Code, the real binary, run headless against the service as a user
would point it at us: ANTHROPIC_BASE_URL the service, ANTHROPIC_API_KEY an
access key. The Anthropic stub plays the model: it answers the task with a
tool_use of Claude Code's Write tool, Claude Code writes the file and sends the
tool_result, and the stub's final text comes back. Every call is billed
exactly from the stub's usage and nothing stays held.

The binary is the native one in the npm package @anthropic-ai/claude-code
(.ci/run installs the pinned version); the test is skipped, saying why, where
it is not installed or cannot run."""
import glob
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.sdk_clients import account, assert_charged_exactly, server  # noqa: F401
from tests.support import HOUSE_ANTHROPIC, cost

MODEL = "anthropic/claude-sonnet-4-20250514"
FINAL_TEXT = "I wrote hello.txt."
# Where .ci/run installs the package (npm install --prefix /opt/claude-code); CLAUDE_CODE_BIN overrides.
INSTALLED = "/opt/claude-code/node_modules/@anthropic-ai/claude-code-linux-*/claude"


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


def plays_the_model(target):
    """The stub's answer to each of Claude Code's requests: asked with its Write
    tool, it writes `target`; once the tool's result is back, it says it is done."""
    def respond(body):
        last = body["messages"][-1]["content"]
        if isinstance(last, list) and any(block.get("type") == "tool_result" for block in last):
            return {"reply": FINAL_TEXT, "tool_calls": []}
        if any(tool["name"] == "Write" for tool in body.get("tools", ())):
            return {"reply": "", "tool_calls": [
                ("toolu_write_1", "Write", json.dumps({"file_path": str(target), "content": "hi from the stub\n"}))]}
        return {"reply": "ok", "tool_calls": []}
    return respond


def test_claude_code_completes_a_task_that_needs_a_tool(server, account, stubs, tmp_path):  # noqa: F811
    binary, why_not = claude_binary()
    if binary is None:
        pytest.skip(why_not)
    anthropic_stub, key, user_id = stubs[1], account["key"], account["user_id"]
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    target = work / "hello.txt"
    anthropic_stub.behaviour.respond = plays_the_model(target)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "ANTHROPIC_BASE_URL": server.url,
           "ANTHROPIC_API_KEY": key, "ANTHROPIC_SMALL_FAST_MODEL": MODEL, "DISABLE_TELEMETRY": "1",
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"}
    run = subprocess.run([binary, "-p", "Create hello.txt saying hi.", "--model", MODEL, "--allowedTools", "Write",
                          "--output-format", "json"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    result = json.loads(run.stdout)
    assert result["result"] == FINAL_TEXT and not result["is_error"]
    assert target.read_text() == "hi from the stub\n"

    calls = [request for request in anthropic_stub.requests if request["path"].startswith("/v1/messages")]
    assert len(calls) >= 2
    assert all(request["headers"]["x-api-key"] == HOUSE_ANTHROPIC for request in calls)
    assert {tool["name"] for tool in calls[0]["body"]["tools"]} >= {"Write", "Read", "Bash"}
    sent_result = calls[-1]["body"]["messages"][-1]["content"]
    assert [block["tool_use_id"] for block in sent_result if block["type"] == "tool_result"] == ["toolu_write_1"]
    assert_charged_exactly(server, user_id, len(calls) * cost(MODEL, 11, 7))


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
