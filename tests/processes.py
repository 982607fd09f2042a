"""Processes seen through /proc, for the tests that kill servers and check what
is left running."""
import shutil
import tempfile
import time
from contextlib import ExitStack, closing
from pathlib import Path

import psycopg2
import testing.postgresql
from psycopg2.extensions import make_dsn

import migrate
from devtools import cluster


def _stat(pid):
    """(state, parent pid) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces.
    state, ppid = text.rsplit(")", 1)[1].split()[:2]
    return state, int(ppid)


def children_of(pid):
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(entry.name)
            if stat is not None and stat[1] == pid:
                children.append(int(entry.name))
    return children


def descendants_of(pid):
    found = []
    for child in children_of(pid):
        found += [child, *descendants_of(child)]
    return found


def is_gone(pid):
    """Exited: no such process, or a zombie nobody has reaped yet."""
    stat = _stat(pid)
    return stat is None or stat[0] in ("Z", "X")


def wait_until_gone(pids, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [pid for pid in pids if not is_gone(pid)]
        if not left:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes still running after {timeout}s: {left}")


def command_line(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


class PrivateServer:
    """A PostgreSQL server of a test's own, migrated, that can crash and come
    back on its port, so the other tests' server is never touched.
    `postgres_args`: more `-c name=value` for it."""

    def __init__(self, app_password="private-server-app-password", postgres_args=""):
        self.base_dir = tempfile.mkdtemp(prefix="qmarket-restart-pg-", dir="/tmp")
        options = cluster.testing_postgresql_options(self.base_dir)
        options["postgres_args"] += f" {postgres_args}"
        self.server = testing.postgresql.Postgresql(**options)
        self.owner_url = self.server.url()
        migrate.migrate(self.owner_url, app_password, out=lambda line: None)
        from tests.conftest import service_route, service_url  # the conftest imports this module
        self._route = ExitStack()
        self._route.enter_context(service_route(self.owner_url, app_password))
        self.app_url = service_url(self.owner_url, make_dsn(self.owner_url, user=migrate.APP_ROLE,
                                                            password=app_password))

    def kill(self):
        """SIGKILL to the postmaster, as an OOM kill would; returns once its
        backends, which hold the old shared memory, have exited too."""
        backends = children_of(self.server.server_pid)
        self.server.child_process.kill()
        self.server.child_process.wait()
        wait_until_gone(backends)

    def flush_wal(self, timeout=10):
        """Returns once every commit so far is on disk. A hold commits without
        waiting for it (BENCHMARKS.md, "The hold's commit does not wait for the
        disk"), so a crash within the WAL writer's 200 ms may lose it: a test of
        what a crash does to a hold that was kept calls this before `kill`."""
        written = self.query("SELECT pg_current_wal_insert_lsn()")[0][0]
        deadline = time.monotonic() + timeout
        while not self.query("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", (written,))[0][0]:
            assert time.monotonic() < deadline, "the WAL was not flushed"
            time.sleep(0.02)

    def restart(self):
        self.server.child_process = None
        self.server.start()

    def query(self, statement, params=None):
        with closing(psycopg2.connect(self.owner_url)) as conn, conn.cursor() as cur:
            conn.autocommit = True
            cur.execute(statement, params)
            return cur.fetchall()

    def stop(self):
        self._route.close()
        self.server.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)
