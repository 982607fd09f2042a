"""A private PostgreSQL cluster for `make run` (under .data/) and for the tests.

initdb and postgres refuse to run as root. When we are root they run as the
`postgres` user through setpriv, which execs the program directly, so signals
reach the server itself and a fast shutdown never leaves it half-stopped."""
import hashlib
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SERVER_USER = "postgres"
SERVER_VERSION_MINIMUM = 15
# The server logs an error without the statement that failed (psycopg2 sends
# parameters inlined, password hashes and sealed keys included) and without its
# DETAIL, which may quote the failing row.
PRIVATE_LOG_OPTIONS = "-c log_min_error_statement=panic -c log_error_verbosity=terse"


class ClusterError(RuntimeError):
    pass


def bin_dir():
    """The directory holding initdb/pg_ctl/postgres: pg_config's answer, else the
    newest /usr/lib/postgresql/N/bin, else whatever is on PATH."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip()
        if found and Path(found, "initdb").exists():
            return Path(found)
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0)
    if versions:
        return versions[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise ClusterError("PostgreSQL server binaries (initdb, postgres, pg_ctl) were not found; "
                       "install PostgreSQL 15 or newer (Debian: apt-get install postgresql-15)")


def running_as_root():
    return os.geteuid() == 0


def server_account():
    """(uid, gid) the server runs as: ourselves, or `postgres` when we are root."""
    if not running_as_root():
        return os.getuid(), os.getgid()
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise ClusterError("running as root needs a 'postgres' system user to run the database server") from None
    return entry.pw_uid, entry.pw_gid


def as_server_user(argv):
    """The command line that runs argv as the server's account."""
    if not running_as_root():
        return [str(arg) for arg in argv]
    return ["setpriv", f"--reuid={SERVER_USER}", f"--regid={SERVER_USER}", "--init-groups"] + [str(a) for a in argv]


def make_server_dir(path):
    """Creates `path` (mode 0700) owned by the server's account."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    uid, gid = server_account()
    os.chown(path, uid, gid)
    path.chmod(0o700)
    return path


def server_can_reach(path):
    """Whether the server's account can enter every folder down to `path`."""
    if not running_as_root():
        return True
    probe = subprocess.run(as_server_user(["test", "-x", str(path)]), capture_output=True)
    return probe.returncode == 0


def server_home_dir_for(data_root, suffix=""):
    """A folder in the server account's home kept for `data_root` (named by a
    digest of its path), for what must live where that account can enter."""
    digest = hashlib.sha256(str(Path(data_root).resolve()).encode()).hexdigest()[:12]
    return Path(pwd.getpwnam(SERVER_USER).pw_dir) / "qmarket" / f"{digest}{suffix}"


# Where the kernel's ephemeral ports begin (outgoing connections' local ports), when it does not say.
DEFAULT_FIRST_EPHEMERAL_PORT = 32768
LISTENING_PORTS = 8000


def free_port():
    """A loopback port to listen on, drawn from just below the kernel's
    ephemeral range: a port from inside it (what binding port 0 gives) can be
    taken by an outgoing connection before the server binds it."""
    first_ephemeral = _first_ephemeral_port()
    for _ in range(100):
        port = random.randrange(max(1024, first_ephemeral - LISTENING_PORTS), first_ephemeral)
        if port_is_free(port):
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _first_ephemeral_port():
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_FIRST_EPHEMERAL_PORT


def port_is_free(port):
    """Whether a server could listen on the loopback port now. SO_REUSEADDR, as
    PostgreSQL sets it, so connections in TIME_WAIT from a previous run do not count."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class EmbeddedCluster:
    """The cluster kept under <project>/.data for `make run`.

    When root and the project folder is closed to the `postgres` user (a 0700
    home), the data lives under that user's home and .data/pgdata points to it."""

    def __init__(self, data_root, port):
        self.data_root = Path(data_root).resolve()
        self.port = port
        self.bin = bin_dir()
        self.link = self.data_root / "pgdata"

    @property
    def pgdata(self):
        return self.link.resolve() if self.link.is_symlink() else self.link

    @property
    def log_file(self):
        return self.pgdata.parent / "postgres.log"

    def exists(self):
        return (self.pgdata / "PG_VERSION").exists()

    def initialise(self, owner, owner_password):
        self.data_root.mkdir(parents=True, exist_ok=True)
        # Root keeps .data enterable (not readable) so the postgres user can reach its folder.
        self.data_root.chmod(0o711 if running_as_root() else 0o700)
        if self.link.is_symlink() or self.link.exists():
            raise ClusterError(f"{self.link} exists but holds no cluster; move it away and try again")
        pgdata = self.link
        if not server_can_reach(self.data_root):
            pgdata = server_home_dir_for(self.data_root)
            make_server_dir(pgdata.parent)
            self.link.symlink_to(pgdata)
        make_server_dir(pgdata)
        with tempfile.NamedTemporaryFile("w", dir=pgdata.parent, delete=False) as pwfile:
            pwfile.write(owner_password + "\n")
        uid, gid = server_account()
        os.chown(pwfile.name, uid, gid)
        try:
            self._run("initdb", "-D", pgdata, "-U", owner, f"--pwfile={pwfile.name}",
                      "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8")
        finally:
            os.unlink(pwfile.name)

    def start(self):
        if not port_is_free(self.port):
            raise ClusterError(f"port {self.port} on 127.0.0.1 is taken; set EMBEDDED_DB_PORT in .env to a free one")
        self.log_file.touch(mode=0o600)
        uid, gid = server_account()
        os.chown(self.log_file, uid, gid)
        self.log_file.chmod(0o600)  # also a log left world-readable by an older version
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' "
                   f"-c max_connections=200 {PRIVATE_LOG_OPTIONS}")
        self._run("pg_ctl", "-D", self.pgdata, "-l", self.log_file, "-o", options, "-w", "-t", "60", "start")

    def stop(self):
        self._run("pg_ctl", "-D", self.pgdata, "-m", "fast", "-w", "-t", "60", "stop")

    @property
    def lock_file(self):
        return self.pgdata / "postmaster.pid"

    def server_pid(self):
        """The pid of the server running this cluster, or None.

        postmaster.pid outlives a killed server, and after a reboot its pid may
        belong to another process: pg_ctl would then call the cluster running,
        and postgres would refuse to start. The server is the process whose
        command line names this data directory (/proc, readable by any account)."""
        pid, _ = self._lock_file_fields()
        if pid is None:
            return None
        if not Path("/proc/self/cmdline").exists():
            return pid if self._pg_ctl_status() else None
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            return None
        data_dirs = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-D"]
        return pid if any(Path(d).resolve() == self.pgdata.resolve() for d in data_dirs) else None

    def server_port(self):
        """The port the running server listens on, as its postmaster.pid records it."""
        return self._lock_file_fields()[1]

    def clear_stale_lock_file(self):
        """Removes a postmaster.pid whose server is gone; True when there was one."""
        if self.server_pid() is not None or not self.lock_file.exists():
            return False
        self.lock_file.unlink()
        return True

    def _lock_file_fields(self):
        """(pid, port) from postmaster.pid (lines 1 and 4), or (None, None)."""
        try:
            lines = self.lock_file.read_text().splitlines() + ["", "", "", ""]
        except FileNotFoundError:
            return None, None
        pid, port = lines[0].strip(), lines[3].strip()
        return (int(pid) if pid.isdigit() else None), (int(port) if port.isdigit() else None)

    def _pg_ctl_status(self):
        result = subprocess.run(as_server_user([self.bin / "pg_ctl", "-D", self.pgdata, "status"]),
                                capture_output=True, cwd="/")
        return result.returncode == 0

    def _run(self, program, *args):
        # cwd "/": the server's account may not be able to enter ours.
        result = subprocess.run(as_server_user([self.bin / program, *args]), capture_output=True, text=True, cwd="/")
        if result.returncode != 0:
            raise ClusterError(f"{program} failed: {(result.stderr or result.stdout).strip()}")
        return result.stdout


def testing_postgresql_options(base_dir):
    """Arguments for testing.postgresql.Postgresql that work as root too: the
    data and tmp folders made first and owned by the server's account, and
    initdb/postgres started through small wrappers that switch user."""
    base_dir = make_server_dir(base_dir)
    for sub in ("data", "tmp"):
        make_server_dir(base_dir / sub)
    programs = {}
    for program in ("initdb", "postgres"):
        wrapper = base_dir / f"{program}.sh"
        command = " ".join(f"'{part}'" for part in as_server_user([bin_dir() / program]))
        wrapper.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        wrapper.chmod(0o755)
        programs[program] = str(wrapper)
    return {"base_dir": str(base_dir), **programs,
            "postgres_args": f"-h 127.0.0.1 -F -c logging_collector=off -c max_connections=300 {PRIVATE_LOG_OPTIONS}"}
