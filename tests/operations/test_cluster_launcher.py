"""`make cluster`'s launcher end to end, in a copy of the project as `make
run`'s tests use: it serves through nginx, Ctrl-C stops every piece with it,
and after the launcher is killed outright the next one stops what was left
and serves the same database."""
import shutil

import httpx
import pytest

from devtools.cluster import EmbeddedCluster, port_is_free
from devtools.local_cluster import run_dir, stop_leftovers
from tests.cluster import skip_without_cluster_programs
from tests.operations.test_run import Launcher, embedded_port, project  # noqa: F401 (a fixture)
from tests.processes import command_line, descendants_of, wait_until_gone
from tests.support import PASSWORD

INSTANCES = 1  # the launcher is what is tested here; many instances, in test_cluster_money.py
ACCOUNT = {"email": "ada@example.com", "username": "ada", "password": PASSWORD}


class ClusterLauncher(Launcher):
    command = ("-m", "devtools.local_cluster")

    def _env(self):
        return {**super()._env(), "CLUSTER_INSTANCES": str(INSTANCES), "WEB_WORKERS": "1"}

    def pieces(self):
        """Every process it started, by kind: gunicorn's masters and workers, pgbouncer, redis-server, nginx."""
        kinds = {}
        for pid in descendants_of(self.process.pid):
            line = command_line(pid)
            kind = next((kind for kind in ("gunicorn", "pgbouncer", "redis-server", "nginx") if kind in line), None)
            if kind:
                kinds.setdefault(kind, []).append(pid)
        return kinds


@pytest.fixture
def cluster_project(project):  # noqa: F811 (the fixture imported above)
    skip_without_cluster_programs()
    yield project
    if (project / ".env").exists() and (project / ".data" / "pgdata").exists():
        work_dir = run_dir(EmbeddedCluster(project / ".data", embedded_port(project)))
        stop_leftovers(work_dir)
        shutil.rmtree(work_dir, ignore_errors=True)


def test_the_cluster_serves_through_nginx_and_ctrl_c_stops_all_of_it(cluster_project):
    launcher = ClusterLauncher(cluster_project)
    launcher.wait_until_ready()
    assert httpx.post(f"{launcher.url}/api/v1/auth/register", json=ACCOUNT).status_code == 201
    pieces = launcher.pieces()
    # A master and a worker per instance; nginx's master and its worker.
    assert {kind: len(pids) for kind, pids in pieces.items()} == {
        "gunicorn": 2 * INSTANCES, "pgbouncer": 1, "redis-server": 1, "nginx": 2}

    status, output = launcher.interrupt()
    assert status == 0, output
    assert f"Q Marketplace cluster is serving on {launcher.url}" in output
    assert "transaction mode" in output
    wait_until_gone([pid for pids in pieces.values() for pid in pids])
    assert port_is_free(launcher.port) and port_is_free(embedded_port(cluster_project))


def test_after_a_killed_launcher_the_next_stops_what_it_left_and_serves_the_same_rows(cluster_project):
    first = ClusterLauncher(cluster_project)
    first.wait_until_ready()
    assert httpx.post(f"{first.url}/api/v1/auth/register", json=ACCOUNT).status_code == 201
    pieces = [pid for pids in first.pieces().values() for pid in pids]
    first.kill()

    second = ClusterLauncher(cluster_project)
    second.wait_until_ready()
    wait_until_gone(pieces)
    login = httpx.post(f"{second.url}/api/v1/auth/login", json={"email": ACCOUNT["email"], "password": PASSWORD})
    assert login.status_code == 200
    status, output = second.interrupt()
    assert status == 0, output
    assert port_is_free(embedded_port(cluster_project))
