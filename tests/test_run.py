"""`make run`'s launcher end to end, in a copy of the project: fresh .env and
embedded cluster, rows kept across Ctrl-C and restart, .env/.data pairing."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
from dotenv import dotenv_values

from database.cluster import free_port, port_is_free
from tests.support import PASSWORD, ROOT, wait_until_ready

COPIED = ["app", "database", "migrate.py", "run.py", "schema.sql", "catalog.json", "wsgi.py", "gunicorn.conf.py"]


@pytest.fixture
def project():
    """A private copy of the project. mkdtemp makes a 0700 folder, which as root
    the postgres user cannot enter: the launcher must put its data elsewhere."""
    folder = Path(tempfile.mkdtemp(prefix="qmarket-run-", dir="/tmp"))
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, folder / name)
    yield folder
    pgdata = folder / ".data" / "pgdata"
    outside = pgdata.resolve() if pgdata.is_symlink() else None
    shutil.rmtree(folder, ignore_errors=True)
    if outside:
        shutil.rmtree(outside, ignore_errors=True)


class Launcher:
    def __init__(self, folder):
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {key: value for key, value in os.environ.items() if key != "ENV_FILE"}
        env.update({"HOST": "127.0.0.1", "PORT": str(self.port), "PASSWORD_ITERATIONS": "1000"})
        self.process = subprocess.Popen([sys.executable, "run.py"], cwd=folder, env=env, start_new_session=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def interrupt(self):
        """Ctrl-C: SIGINT to the whole foreground process group."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.finish()

    def finish(self):
        out, err = self.process.communicate(timeout=60)
        return self.process.returncode, out.decode() + err.decode()


def embedded_port(folder):
    return int(dotenv_values(folder / ".env")["EMBEDDED_DB_PORT"])


def test_rows_survive_ctrl_c_and_restart(project):
    first = Launcher(project)
    wait_until_ready(first.url, first.process)
    account = {"email": "ada@example.com", "username": "ada", "password": PASSWORD}
    assert httpx.post(f"{first.url}/api/v1/auth/register", json=account).status_code == 201
    status, output = first.interrupt()
    assert status == 0, output
    assert "stopping the embedded PostgreSQL cluster" in output
    assert port_is_free(embedded_port(project)), "the cluster must stop with the launcher"
    assert (project / ".env").stat().st_mode & 0o077 == 0, ".env holds secrets: owner-only"
    if os.geteuid() == 0:
        assert (project / ".data" / "pgdata").is_symlink(), "a 0700 folder is closed to postgres"

    second = Launcher(project)
    wait_until_ready(second.url, second.process)
    login = httpx.post(f"{second.url}/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert login.status_code == 200
    status, output = second.interrupt()
    assert status == 0, output
    assert "schema version 1 (already present, re-applied)" in output


def test_refuses_a_data_folder_without_its_env(project):
    first = Launcher(project)
    wait_until_ready(first.url, first.process)
    first.interrupt()
    env_text = (project / ".env").read_text()

    (project / ".env").unlink()
    status, output = Launcher(project).finish()
    assert status != 0
    assert ".data/ exists but .env is missing" in output
    assert not (project / ".env").exists(), "no fresh .env may be written beside an old .data/"

    (project / ".env").write_text(env_text.replace("INSTANCE_ID=", "INSTANCE_ID=0"))
    status, output = Launcher(project).finish()
    assert status != 0
    assert ".env does not belong with .data/" in output
