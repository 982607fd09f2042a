"""The money and idempotency tests again, with the service reaching PostgreSQL
through PgBouncer in transaction mode, as it is deployed (TEST_THROUGH_PGBOUNCER,
tests/conftest.py): each transaction may run on another server connection, so
any state a connection kept between transactions would show here."""
import os
import re
import subprocess
import sys

import pytest

from devtools.pgbouncer import pgbouncer_binary
from tests.conftest import THROUGH_PGBOUNCER
from tests.support import ROOT

pytestmark = pytest.mark.server

# Every test of money, and every one that sends an Idempotency-Key twice.
THROUGH_PGBOUNCER_TESTS = [
    "tests/money",
    "tests/inference/test_chat.py::test_a_retried_send_is_charged_once_and_replays_the_answer",
    "tests/inference/test_chat.py::test_a_failed_send_is_not_kept_for_its_key",
    "tests/inference/test_chat_stream.py::test_a_retried_stream_replays_the_stored_answer",
    "tests/inference/test_reasoning.py::test_a_retried_stream_replays_its_thinking_unbilled",
    "tests/inference/test_responses.py::test_a_retried_stream_replays_the_answer_unbilled",
    "tests/inference/test_sdk.py::test_a_retried_stream_replays_in_the_format_it_asked_for",
    "tests/inference/test_tools.py::test_a_retried_stream_with_text_and_a_tool_call_replays_both_in_order",
    "tests/operations/test_hostile.py::test_bad_idempotency_keys_are_refused",
]


def test_money_and_idempotency_tests_pass_through_pgbouncer_in_transaction_mode():
    if pgbouncer_binary() is None:
        pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer; .ci/run installs it)")
    if THROUGH_PGBOUNCER:
        pytest.skip("this run is the one through PgBouncer already")
    env = {name: value for name, value in os.environ.items() if not name.startswith("PYTEST_XDIST_")}
    # Two workers, as `make test`: the tests mostly wait (on deadlines, streams, restarts), not compute.
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "-q",
                             *THROUGH_PGBOUNCER_TESTS], cwd=ROOT, env={**env, "TEST_THROUGH_PGBOUNCER": "1"},
                            capture_output=True, text=True, timeout=1800)
    output = result.stdout[-4000:] + result.stderr[-2000:]
    assert result.returncode == 0, output
    summary = re.search(r"(\d+) passed", result.stdout)
    assert summary and int(summary[1]) > 0, output
    logins = re.search(r"through PgBouncer in transaction mode: (\d+) logins", result.stdout)
    assert logins and int(logins[1]) > 0, output
