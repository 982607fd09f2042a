"""Rate limits counted once for the whole service: memory:// counts inside each
worker process, so it means one worker (more refuse to start); Redis shares the
counts, proved against a real redis-server with two workers."""
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from app.config import ConfigError, load_config
from devtools.cluster import free_port
from tests.support import ROOT, LiveServer, settings_for

MEMORY = {"RATELIMIT_ENABLED": True, "RATELIMIT_STORAGE_URI": "memory://"}
AUTH_LIMIT = 20


@pytest.fixture(autouse=True)
def no_workers_from_the_environment(monkeypatch):
    monkeypatch.delenv("WEB_WORKERS", raising=False)


def test_memory_storage_means_one_worker():
    assert load_config(MEMORY, check_secrets=False)["WEB_WORKERS"] == 1


def test_a_shared_store_or_limits_off_allow_more_workers():
    redis_limits = {**MEMORY, "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379"}
    assert load_config(redis_limits, check_secrets=False)["WEB_WORKERS"] == 2
    assert load_config({**redis_limits, "WEB_WORKERS": "8"}, check_secrets=False)["WEB_WORKERS"] == 8
    assert load_config({**MEMORY, "RATELIMIT_ENABLED": False, "WEB_WORKERS": "4"},
                       check_secrets=False)["WEB_WORKERS"] == 4


def test_more_workers_with_memory_storage_are_refused():
    with pytest.raises(ConfigError) as refused:
        load_config({**MEMORY, "WEB_WORKERS": "2"}, check_secrets=False)
    assert "RATELIMIT_STORAGE_URI" in str(refused.value) and "WEB_WORKERS=1" in str(refused.value)


def test_gunicorn_refuses_to_start_with_more_workers_and_memory_storage():
    env = {**os.environ, **settings_for("postgresql://unused@127.0.0.1:1/unused", **MEMORY),
           "ENV_FILE": os.devnull, "WEB_WORKERS": "3"}
    env = {key: str(value) for key, value in env.items()}
    result = subprocess.run([sys.executable, "-m", "gunicorn", "--config", str(ROOT / "gunicorn.conf.py"),
                             "--bind", f"127.0.0.1:{free_port()}", "wsgi:app"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "gunicorn: WEB_WORKERS: 3 workers with RATELIMIT_STORAGE_URI=memory://" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def redis_url(tmp_path):
    """A redis-server of the test's own, on a free port, keeping nothing on disk."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server; .ci/run installs it)")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(tmp_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline and process.poll() is None, "redis-server did not start"
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        client.close()
        process.terminate()
        process.wait()


def test_redis_shares_the_auth_limit_between_workers(database, redis_url, tmp_path):
    # gunicorn's access log names the worker (pid) that answered each request.
    # A worker holding a connection accepts no other, so a burst is spread over both.
    access_log = tmp_path / "access.log"
    settings = settings_for(database.app_url, RATELIMIT_ENABLED=True, RATELIMIT_STORAGE_URI=redis_url,
                            RATE_LIMIT_AUTH=f"{AUTH_LIMIT} per minute",
                            GUNICORN_CMD_ARGS=f"--worker-connections 1 --access-logfile {access_log} "
                                              "--access-logformat '%(p)s %(U)s %(s)s'")
    server = LiveServer(settings, workers=2, threads=1)
    try:
        with ThreadPoolExecutor(max_workers=40) as pool:
            statuses = list(pool.map(lambda _: httpx.post(f"{server.url}/api/v1/auth/register", json={},
                                                          timeout=30).status_code, range(60)))
    finally:
        server.stop()
    answered_by = {line.split()[0] for line in access_log.read_text().splitlines() if "/auth/register" in line}
    assert len(answered_by) == 2, "both workers must have answered for the test to show anything"
    assert sorted(set(statuses)) == [400, 429]
    assert statuses.count(400) == AUTH_LIMIT, "one count for the whole service, not one per worker"
