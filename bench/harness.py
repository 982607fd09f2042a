"""What the gateway benchmarks share: a throwaway PostgreSQL with durable
commits, the OpenAI stub in a process of its own, the service started the way
`make run` starts it, and percentiles."""
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import closing, contextmanager
from pathlib import Path

import psycopg2
import testing.postgresql
from psycopg2.extensions import make_dsn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["ENV_FILE"] = os.devnull  # never a developer's .env

import migrate  # noqa: E402
from devtools.cluster import free_port, testing_postgresql_options  # noqa: E402
from tests.support import wait_until_ready  # noqa: E402

APP_PASSWORD = "bench-app-user"
# Above anything a sequential benchmark sends, so the limiter counts every call
# (as under `make run`) but never answers 429.
UNREACHED_LIMIT = "1000000 per minute"


def percentile(samples, fraction):
    """The nearest-rank percentile; NaN for no samples."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))] if ordered else float("nan")


def timed(call):
    """Milliseconds `call()` took; its answer must be a success."""
    started = time.perf_counter()
    response = call()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code >= 300:
        raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
    return elapsed


def stop_process(process, timeout=15):
    """SIGTERM, then SIGKILL if it has not ended within `timeout` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def durable_database(extra_args=""):
    """(owner URL, app_user URL) of a migrated throwaway PostgreSQL that commits
    the way `make run`'s does: testing.postgresql's `-F` (fsync off) removed and
    fsync and synchronous_commit stated, so every commit waits for its WAL flush.
    `extra_args`: more `-c name=value` for the server."""
    base_dir = tempfile.mkdtemp(prefix="qmarket-bench-pg-", dir="/tmp")
    options = testing_postgresql_options(base_dir)
    options["postgres_args"] = (options["postgres_args"].replace("-F ", "")
                                + f" -c fsync=on -c synchronous_commit=on {extra_args}")
    postgres = testing.postgresql.Postgresql(**options)
    try:
        owner_url = make_dsn(postgres.url(), dbname="bench")
        migrate.migrate(owner_url, APP_PASSWORD, out=lambda line: None)
        with closing(psycopg2.connect(owner_url)) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_setting('fsync'), current_setting('synchronous_commit')")
            if cur.fetchone() != ("on", "on"):
                raise RuntimeError("the benchmark database must commit durably (fsync and synchronous_commit on)")
        yield owner_url, make_dsn(owner_url, user="app_user", password=APP_PASSWORD)
    finally:
        postgres.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


class Stub:
    """The OpenAI stub in a process of its own; streamed replies pause
    `chunk_delay` seconds before each delta and, given `chunks`, send that many
    one-word deltas."""

    def __init__(self, stall=0.0, chunk_delay=0.0, chunks=None):
        port = free_port()
        extra = [] if chunks is None else [str(chunks)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.stubs", "openai", str(port), str(stall), str(chunk_delay), *extra],
            cwd=ROOT, stdout=subprocess.PIPE)
        self.url = self.process.stdout.readline().decode().strip()

    def stop(self):
        self.process.terminate()
        self.process.wait()


class MakeRunService:
    """The service as `make run` serves it: gunicorn with gunicorn.conf.py and
    the settings' own worker and thread counts (1 worker while rate limits are
    counted in memory://, 128 threads), its JSON log on stderr, here a file."""

    def __init__(self, settings, log_path):
        self.url = f"http://127.0.0.1:{free_port()}"
        env = {key: value for key, value in os.environ.items() if key not in ("WEB_WORKERS", "WEB_THREADS")}
        env |= {key: str(value) for key, value in settings.items()} | {"ENV_FILE": os.devnull}
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "gunicorn.conf.py"),
             "--bind", self.url.removeprefix("http://"), "wsgi:app"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self.log, start_new_session=True)
        wait_until_ready(self.url, self.process, output=Path(log_path).read_text)

    def stop(self):
        stop_process(self.process)
        self.log.close()
