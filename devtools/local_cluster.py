"""`make cluster`: the service as it is deployed, on one machine. Like `make
run` (.env, the embedded PostgreSQL under .data/, migrate), then PgBouncer in
transaction mode in front of PostgreSQL, a redis-server for the rate limits,
N instances of the service (gunicorn with gunicorn.conf.py, each on its own
port, N=3 by default) and nginx in front of them, all on 127.0.0.1 but
nginx's HOST. Ctrl-C (or SIGTERM) stops everything together.

The instances reach the database through PgBouncer; migrations go straight
to PostgreSQL. LocalCluster starts the same pieces for the tests."""
import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from psycopg2.extensions import parse_dsn

from app.config import read_env_file
from devtools.cluster import ClusterError, free_port, make_server_dir, running_as_root, server_can_reach, \
    server_home_dir_for
from devtools.launcher import ROOT, gunicorn_command, log_tail, say, stop_with_launcher, \
    wait_until_answering
from devtools.nginx import Nginx
from devtools.pgbouncer import PgBouncer
from devtools.redis_server import RedisServer

DEFAULT_INSTANCES = 3
INSTANCE_HOST = "127.0.0.1"
# Server connections PgBouncer opens to PostgreSQL (max_connections 200 under `make run`).
PGBOUNCER_POOL_SIZE = 20
READY_TIMEOUT_SECONDS = 60


class Instance:
    """One gunicorn of the service, on its own port, its output in a log file."""

    def __init__(self, number, env, log_file, preexec_fn=None):
        self.number = number
        self.port = free_port()
        self.url = f"http://{INSTANCE_HOST}:{self.port}"
        self.env = {**env, "HOST": INSTANCE_HOST, "PORT": str(self.port)}
        self.log_file = Path(log_file)
        self.preexec_fn = preexec_fn
        self.process = None

    def start(self):
        with open(self.log_file, "ab") as log:
            # Its own session, as under `make run`: a signal meant for the launcher stops it gracefully.
            self.process = subprocess.Popen(gunicorn_command(f"{INSTANCE_HOST}:{self.port}"), cwd=ROOT,
                                             env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                             start_new_session=True, preexec_fn=self.preexec_fn)
        return self

    def wait_until_ready(self):
        try:
            wait_until_answering(f"{self.url}/readyz", self.process, READY_TIMEOUT_SECONDS,
                                 lambda: log_tail(self.log_file, 20))
        except RuntimeError as exc:
            raise ClusterError(f"instance {self.number}: {exc}") from None

    def kill(self):
        """SIGKILL to its master and every worker: a crash, nothing cleaned up."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def running(self):
        return self.process is not None and self.process.poll() is None


class LocalCluster:
    """PgBouncer, Redis, `instances` gunicorns and nginx, in front of the
    PostgreSQL that `database_url` (the service's login, straight to the
    server) names. `settings`: the instances' environment on top of ours.
    Every file (configurations, logs) goes under `work_dir`, which the server
    account (devtools.cluster) must be able to enter."""

    def __init__(self, work_dir, database_url, settings=None, instances=DEFAULT_INSTANCES,
                 pool_size=PGBOUNCER_POOL_SIZE, listen_host="127.0.0.1", port=None, preexec_fn=None):
        if instances < 1:
            raise ValueError("a cluster needs at least one instance")
        self.work_dir = Path(work_dir)
        self.database_url = database_url
        self.settings = {key: str(value) for key, value in (settings or {}).items()}
        self.instance_count = instances
        self.preexec_fn = preexec_fn
        params = parse_dsn(database_url)
        if not params.get("password"):
            raise ClusterError("DATABASE_URL has no password: PgBouncer logs in to PostgreSQL with it")
        self.pgbouncer = PgBouncer(self.work_dir / "pgbouncer", params.get("host", "127.0.0.1"),
                                   params.get("port", 5432), {params["user"]: params["password"]},
                                   pool_mode="transaction", pool_size=pool_size, preexec_fn=preexec_fn)
        self.redis = RedisServer(self.work_dir / "redis", preexec_fn=preexec_fn)
        self.nginx = Nginx(self.work_dir / "nginx", [], listen_host=listen_host, port=port, preexec_fn=preexec_fn)
        self.instances = []

    @property
    def url(self):
        return self.nginx.url

    def instance_env(self):
        """The environment every instance starts with: PgBouncer's URL, Redis for the limits, one proxy in front."""
        return {**os.environ, **self.settings, "DATABASE_URL": self.pgbouncer.url_for(self.database_url),
                "RATELIMIT_STORAGE_URI": self.redis.url, "TRUSTED_PROXIES": "1"}

    def start(self):
        """Starts every piece in order and returns once nginx answers; on a
        failure stops what had started and raises ClusterError."""
        make_server_dir(self.work_dir)
        if running_as_root():
            self.work_dir.chmod(0o711)  # entered, not read, by the server account
        if not server_can_reach(self.work_dir):
            raise ClusterError(f"the {self.work_dir} folder cannot be entered by the server account")
        try:
            self.pgbouncer.start()
            self.redis.start()
            env = self.instance_env()
            self.instances = [Instance(number, env, self.work_dir / f"instance-{number}.log", self.preexec_fn)
                              for number in range(1, self.instance_count + 1)]
            for instance in self.instances:  # all booting at once, then each awaited
                instance.start()
            for instance in self.instances:
                instance.wait_until_ready()
            self.nginx.upstreams = [f"{INSTANCE_HOST}:{instance.port}" for instance in self.instances]
            self.nginx.start()
        except BaseException:
            self.stop(grace_seconds=5)
            raise
        return self

    def stop(self, grace_seconds=None):
        """nginx first (no new requests), then the instances, each let finish
        its calls in flight (gunicorn's graceful timeout, or `grace_seconds`),
        then Redis and PgBouncer. A second Ctrl-C kills the instances at once."""
        self.nginx.stop()
        running = [instance for instance in self.instances if instance.running()]
        for instance in running:
            instance.process.send_signal(signal.SIGTERM)
        try:
            for instance in running:
                try:
                    instance.process.wait(timeout=grace_seconds)
                except subprocess.TimeoutExpired:
                    instance.kill()
        except KeyboardInterrupt:
            for instance in running:
                if instance.running():
                    instance.kill()
        self.redis.stop()
        self.pgbouncer.stop()

    def first_failure(self):
        """What stopped, among the pieces every instance needs, or None."""
        for name, piece in (("PgBouncer", self.pgbouncer), ("redis-server", self.redis), ("nginx", self.nginx)):
            if piece.process is None or piece.process.poll() is not None:
                return name
        return None

    def describe(self):
        ports = ", ".join(str(instance.port) for instance in self.instances)
        params = parse_dsn(self.database_url)
        return (f"  nginx        {self.url}  (logs: {self.nginx.error_log})\n"
                f"  instances    {len(self.instances)} on ports {ports}  (logs: {self.work_dir}/instance-N.log)\n"
                f"  PgBouncer    127.0.0.1:{self.pgbouncer.port}, transaction mode, "
                f"{self.pgbouncer.pool_size} server connections\n"
                f"  PostgreSQL   {params.get('host')}:{params.get('port', 5432)}\n"
                f"  redis-server {self.redis.url}")


def stop_leftovers(work_dir):
    """Stops servers a killed launcher left running from `work_dir` (their
    command lines name it): PgBouncer and nginx started as another user do
    not die with the launcher."""
    marker = str(Path(work_dir).resolve())
    left = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if any(arg == marker or arg.startswith(marker + "/") for arg in argv):
                left.append(int(entry.name))
    for pid in left:
        say(f"cluster: stopping pid {pid}, left running by a launcher that was killed")
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while left and time.monotonic() < deadline:
        left = [pid for pid in left if Path(f"/proc/{pid}").exists() and not _is_zombie(pid)]
        time.sleep(0.1)


def _is_zombie(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def run_dir(embedded):
    """Where the launcher keeps the cluster's files, a folder the server
    account can enter: beside the embedded cluster's data, else .data/cluster
    or, when the project is closed to that account, one in its home."""
    if embedded is not None:
        return embedded.pgdata.parent / f"{embedded.pgdata.name}-cluster"
    data_dir = ROOT / ".data"
    if running_as_root():
        data_dir.chmod(0o711)  # entered, not read, as for the embedded cluster
    return data_dir / "cluster" if server_can_reach(data_dir) else server_home_dir_for(data_dir, "-cluster")


def serve_cluster(config, embedded, instances):
    """Runs the cluster until it is stopped or a piece every instance needs stops."""
    work_dir = run_dir(embedded)
    stop_leftovers(work_dir)
    cluster = LocalCluster(work_dir, config["DATABASE_URL"], instances=instances, listen_host=config["HOST"],
                           port=config["PORT"], preexec_fn=stop_with_launcher())
    started = time.monotonic()
    say(f"cluster: starting PgBouncer, redis-server, {instances} instances and nginx")
    cluster.start()
    say(f"\nQ Marketplace cluster is serving on {cluster.url} in {time.monotonic() - started:.1f}s "
        f"(Ctrl-C stops it all)\n{cluster.describe()}\n")
    from run import first_steps
    say(first_steps(cluster.url))
    exited = set()
    try:
        while (failed := cluster.first_failure()) is None:
            for instance in cluster.instances:
                if instance.number not in exited and not instance.running():
                    exited.add(instance.number)
                    say(f"cluster: instance {instance.number} exited (status {instance.process.returncode}); "
                        f"the others go on serving. Its log: {instance.log_file}")
            time.sleep(0.5)
        say(f"cluster: {failed} stopped; stopping the rest")
        return 1
    finally:
        say("cluster: stopping; calls in flight may finish (Ctrl-C again to stop at once)")
        cluster.stop()


def instances_setting():
    """CLUSTER_INSTANCES from the environment, else .env, else 3."""
    raw = os.environ.get("CLUSTER_INSTANCES") or read_env_file().get("CLUSTER_INSTANCES") or DEFAULT_INSTANCES
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if not 1 <= count <= 32:
        sys.exit(f"cluster: CLUSTER_INSTANCES: must be a number from 1 to 32, not {raw!r}")
    return count


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Settings come from .env and the environment (see .env.example).")
    parser.add_argument("--instances", type=int, help="instances of the service (default: CLUSTER_INSTANCES, 3)")
    args = parser.parse_args()
    instances = args.instances if args.instances is not None else instances_setting()
    if not 1 <= instances <= 32:
        sys.exit("cluster: --instances must be from 1 to 32")
    import run
    run.launch(lambda config, embedded: serve_cluster(config, embedded, instances), claim_always=True)


if __name__ == "__main__":
    main()
