"""`make run`'s launcher end to end, in a copy of the project: fresh .env and
embedded cluster, rows kept across Ctrl-C and restart, .env/.data pairing, a
closed terminal, a killed launcher and what the next one finds in .data/."""
import contextlib
import fcntl
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

import httpx
import pytest
from dotenv import dotenv_values

import migrate
import run
from devtools.cluster import EmbeddedCluster, as_server_user, free_port, port_is_free
from tests.processes import command_line, descendants_of, wait_until_gone
from tests.support import PASSWORD, ROOT, wait_until_ready

COPIED = ["app", "database", "devtools", "deploy", "migrate.py", "run.py", "catalog.json", "wsgi.py",
          "gunicorn.conf.py"]


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
    stop_leftovers(folder)
    pgdata = folder / ".data" / "pgdata"
    outside = pgdata.resolve() if pgdata.is_symlink() else None
    shutil.rmtree(folder, ignore_errors=True)
    if outside:
        shutil.rmtree(outside, ignore_errors=True)


class Launcher:
    started = []
    command = ("run.py",)

    def __init__(self, folder):
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, *self.command], cwd=folder, env=self._env(),
                                        start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        Launcher.started.append(self)

    def _env(self):
        env = {key: value for key, value in os.environ.items() if key != "ENV_FILE"}
        env.update({"HOST": "127.0.0.1", "PORT": str(self.port), "PASSWORD_ITERATIONS": "1000"})
        return env

    def wait_until_ready(self):
        wait_until_ready(self.url, self.process)

    def interrupt(self):
        """Ctrl-C: SIGINT to the whole foreground process group."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.finish()

    def finish(self):
        out, err = self.process.communicate(timeout=60)
        return self.process.returncode, out.decode() + err.decode()

    def kill(self):
        """SIGKILL to the launcher alone: nothing of it runs to clean up. Its
        output ends when gunicorn, which shares it, has exited too."""
        self.process.kill()
        return self.finish()

    def server_processes(self):
        """gunicorn's master and workers."""
        return [pid for pid in descendants_of(self.process.pid) if "gunicorn" in command_line(pid)]


class TerminalLauncher(Launcher):
    """A launcher in a terminal of its own (a pseudo-terminal), as `make run` in
    a terminal window is: closing the terminal hangs it up."""

    def __init__(self, folder):
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.terminal, tty = pty.openpty()
        self.process = subprocess.Popen([sys.executable, "run.py"], cwd=folder, env=self._env(),
                                        stdin=tty, stdout=tty, stderr=tty, start_new_session=True,
                                        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(tty)
        Launcher.started.append(self)
        self.output = bytearray()
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        """Drains the terminal, as a terminal window does, so the launcher never blocks writing."""
        while not self._closing.is_set():
            if select.select([self.terminal], [], [], 0.1)[0]:
                try:
                    self.output += os.read(self.terminal, 65536)
                except OSError:
                    return

    def wait_until_ready(self):
        try:
            wait_until_ready(self.url, self.process)
        except AttributeError:  # it exited early; what it said is on the terminal
            raise RuntimeError(f"launcher exited early: {self.output.decode(errors='replace')}") from None

    def close_terminal(self):
        """The terminal window closes: the kernel hangs up the terminal and sends
        SIGHUP to the session's leader, the launcher."""
        self._closing.set()
        self._reader.join()
        os.close(self.terminal)
        return self.process.wait(timeout=60)

    def finish(self):
        if not self._closing.is_set():
            self.close_terminal()
        return self.process.wait(timeout=60), self.output.decode(errors="replace")


def stop_leftovers(folder):
    """After a failed test: no launcher or cluster of this copy may outlive it."""
    for launcher in [launcher for launcher in Launcher.started if launcher.folder == folder]:
        if launcher.process.poll() is None:
            servers = launcher.server_processes()
            os.killpg(launcher.process.pid, signal.SIGKILL)
            for pid in servers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        launcher.finish()
        Launcher.started.remove(launcher)
    if (folder / ".env").exists() and (folder / ".data" / "pgdata").exists():
        cluster = EmbeddedCluster(folder / ".data", embedded_port(folder))
        if cluster.server_pid() is not None:
            cluster.stop()


def embedded_port(folder):
    return int(dotenv_values(folder / ".env")["EMBEDDED_DB_PORT"])


def wait_until_port_is_free(port, timeout=30):
    deadline = time.monotonic() + timeout
    while not port_is_free(port):
        assert time.monotonic() < deadline, f"port {port} still taken after {timeout}s"
        time.sleep(0.1)


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

    # As a .env from before `make run` wrote the cluster's URLs into it.
    env_file = project / ".env"
    env_file.write_text("".join(line for line in env_file.read_text().splitlines(keepends=True)
                                if "DATABASE_URL=" not in line))
    second = Launcher(project)
    wait_until_ready(second.url, second.process)
    login = httpx.post(f"{second.url}/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert login.status_code == 200
    for command, says in [(["migrate.py"], "(up to date)"),
                          (["-m", "flask", "--app", "wsgi", "credit", "ada@example.com", "5", "--note", "x"],
                           "credited 5.00 USD to ada@example.com")]:
        done = subprocess.run([sys.executable, *command], cwd=project, env=second._env(), capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0 and says in done.stdout, done.stdout + done.stderr
    status, output = second.interrupt()
    assert status == 0, output
    assert "wrote the embedded cluster's DATABASE_URL and MIGRATE_DATABASE_URL into .env" in output
    assert f"schema version {len(migrate.releases())} (up to date)" in output


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


def test_closing_the_terminal_stops_everything_like_ctrl_c(project):
    launcher = TerminalLauncher(project)
    launcher.wait_until_ready()
    servers = launcher.server_processes()
    assert servers, "gunicorn runs under the launcher"

    status = launcher.close_terminal()
    assert status == 0, launcher.output.decode(errors="replace")
    wait_until_gone(servers)
    assert port_is_free(launcher.port)
    assert port_is_free(embedded_port(project)), "the cluster must stop with the launcher"
    assert not (project / ".data" / "pgdata" / "postmaster.pid").exists(), "a clean stop removes postmaster.pid"


def test_a_killed_launchers_server_stops_and_the_next_launcher_adopts_its_cluster(project):
    first = Launcher(project)
    first.wait_until_ready()
    account = {"email": "ada@example.com", "username": "ada", "password": PASSWORD}
    assert httpx.post(f"{first.url}/api/v1/auth/register", json=account).status_code == 201
    servers = first.server_processes()
    assert servers, "gunicorn runs under the launcher"

    first.kill()
    wait_until_gone(servers)
    wait_until_port_is_free(first.port)
    assert not port_is_free(embedded_port(project)), "the killed launcher's cluster is left running"

    second = Launcher(project)
    second.wait_until_ready()
    login = httpx.post(f"{second.url}/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert login.status_code == 200
    status, output = second.interrupt()
    assert status == 0, output
    assert "adopting the embedded PostgreSQL" in output
    assert port_is_free(embedded_port(project)), "an adopted cluster stops with its new launcher"


def test_a_second_launcher_is_refused_with_the_first_ones_pid(project):
    first = Launcher(project)
    first.wait_until_ready()

    status, output = Launcher(project).finish()
    assert status != 0
    assert f"another `make run` (pid {first.process.pid}) is serving from .data/" in output
    assert httpx.get(f"{first.url}/readyz").status_code == 200, "the first launcher serves on"
    assert first.interrupt()[0] == 0


def test_a_stale_postmaster_pid_is_cleared(project):
    first = Launcher(project)
    first.wait_until_ready()
    lock_file = EmbeddedCluster(project / ".data", embedded_port(project)).lock_file
    left_by_a_crash = lock_file.read_text().splitlines()
    first.interrupt()

    # After a reboot the dead server's pid may belong to another process of its
    # account, which pg_ctl and postgres would both take for the server.
    other = subprocess.Popen(as_server_user(["sleep", "300"]), cwd="/")
    try:
        lock_file.write_text("\n".join([str(other.pid), *left_by_a_crash[1:]]) + "\n")
        second = Launcher(project)
        second.wait_until_ready()
        status, output = second.interrupt()
        assert other.poll() is None, "the process that now has the pid is left alone"
    finally:
        other.kill()
        other.wait()
    assert status == 0, output
    assert "removed a stale postmaster.pid" in output


def test_a_data_folder_holding_no_database_gets_a_fresh_env(monkeypatch, tmp_path):
    """A .data/ holding something else (screenshots an older `make test` left
    there) is no database, so a first `make run` after it writes its .env; a database
    there (its pgdata link, even dangling) still refuses a fresh .env."""
    data = tmp_path / ".data"
    for name, path in {"ENV_FILE": tmp_path / ".env", "DATA_DIR": data, "INSTANCE_FILE": data / "instance_id",
                       "DATABASE_LINK": data / "pgdata"}.items():
        monkeypatch.setattr(run, name, path)
    (data / "console-shots").mkdir(parents=True)
    run.ensure_env_file()
    assert "SECRET_KEY=" in (tmp_path / ".env").read_text()

    (tmp_path / ".env").unlink()
    (data / "pgdata").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(SystemExit, match=".data/ exists but .env is missing"):
        run.ensure_env_file()
    assert not (tmp_path / ".env").exists()
