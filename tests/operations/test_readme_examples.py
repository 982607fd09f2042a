"""README's examples run as written: every shell block of "Try it", in order
in one shell, against a fresh `make run` launcher on a port other than 8000;
then the OpenAI and Anthropic SDK examples of "Use it from SDKs and agents"
with the access key that walk-through made. The ledger is exact after them."""
import os
import re
import shutil
import subprocess
import sys
from contextlib import closing

import psycopg2
import pytest
from dotenv import dotenv_values

from tests.operations.test_run import Launcher, project  # noqa: F401
from tests.support import readme_ledger_query, readme_section, wait_until_ready

BLOCK_END = "echo '--- block done'"


def blocks(section, language):
    return re.findall(rf"```{language}\n(.*?)```", readme_section(section), re.S)


def test_every_try_it_block_and_sdk_example_runs_as_written(project):  # noqa: F811
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (Debian: apt-get install curl)")
    shell = blocks("Try it", "sh")
    assert len(shell) >= 5 and all("8000" not in block.replace("${PORT:-8000}", "") for block in shell)
    launcher = Launcher(project)
    try:
        wait_until_ready(launcher.url, launcher.process, timeout=120)
        env = {**os.environ, "PORT": str(launcher.port)}
        script = "set -euo pipefail\n" + "".join(f"{block}\n{BLOCK_END}\n" for block in shell) + 'echo "QM_KEY=$KEY"\n'
        walked = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120)
        assert walked.returncode == 0, walked.stdout[-3000:] + walked.stderr[-3000:]
        assert walked.stdout.count("--- block done") == len(shell)
        assert '"object":"chat.completion"' in walked.stdout.replace(" ", "")
        key = re.search(r"^QM_KEY=(qm-\S+)$", walked.stdout, re.M).group(1)

        sdk = [block for block in blocks("Use it from SDKs and agents", "python")
               if "from openai import OpenAI" in block or "from anthropic import Anthropic" in block]
        assert len(sdk) == 2
        for example in sdk:
            ran = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, timeout=60,
                                 env={**os.environ, "BASE": launcher.url, "QM_KEY": key})
            assert ran.returncode == 0 and ran.stdout.strip(), ran.stdout + ran.stderr

        owner_url = dotenv_values(project / ".env")["MIGRATE_DATABASE_URL"]
        with closing(psycopg2.connect(owner_url)) as conn, conn.cursor() as cur:
            cur.execute(readme_ledger_query())
            assert cur.fetchall() == []
            cur.execute("SELECT count(*) FROM transactions WHERE type = 'hold'")
            assert cur.fetchone()[0] >= 6  # the walk-through's chats and call, and the SDKs' four
    finally:
        status, output = launcher.interrupt()
    assert status == 0, output
