"""A PgBouncer (Debian's `pgbouncer`) in front of a running PostgreSQL, for the
local cluster and the tests: on 127.0.0.1, a port of its own, transaction
pooling by default.

Like postgres, pgbouncer refuses to run as root: it then runs as the `postgres`
user through setpriv (devtools.cluster.as_server_user), so its folder must be
one that user can enter. It runs in the foreground as our child; stop() ends it.

Clients authenticate with SCRAM against an auth_file holding the passwords
given; pgbouncer logs in to the server with the same password, so the file
keeps them in clear text (mode 0600, the server account's). psycopg2 sends
only parameters pgbouncer tracks itself (application_name, and DateStyle when
the server's is not ISO), so no startup parameter is ignored: one it does not
know (`options` in a URL, say) is refused, never silently dropped."""
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from psycopg2.extensions import make_dsn

from devtools.cluster import ClusterError, as_server_user, free_port, make_server_dir, server_account

LISTEN_HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 20
STOP_TIMEOUT_SECONDS = 20
POOL_MODES = ("session", "transaction", "statement")


def pgbouncer_binary():
    """pgbouncer's path, or None when it is not installed (Debian keeps it in /usr/sbin)."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")


def quote_auth_field(text):
    """A name or password as auth_file writes it: in double quotes, a quote doubled."""
    return '"' + str(text).replace('"', '""') + '"'


class PgBouncer:
    """One pgbouncer process for `server_host:server_port`, every database on it
    reachable under its own name, for the `users` given (name → password)."""

    def __init__(self, work_dir, server_host, server_port, users, pool_mode="transaction", pool_size=20,
                 max_client_conn=2000, port=None, preexec_fn=None):
        if pool_mode not in POOL_MODES:
            raise ValueError(f"pool_mode must be one of {', '.join(POOL_MODES)}")
        self.work_dir = Path(work_dir)
        self.server_host, self.server_port = server_host, int(server_port)
        self.users = dict(users)
        self.pool_mode, self.pool_size, self.max_client_conn = pool_mode, pool_size, max_client_conn
        self.port = port
        self.preexec_fn = preexec_fn  # run.stop_with_launcher(), say
        self.process = None

    @property
    def config_file(self):
        return self.work_dir / "pgbouncer.ini"

    @property
    def auth_file(self):
        return self.work_dir / "userlist.txt"

    @property
    def log_file(self):
        return self.work_dir / "pgbouncer.log"

    def config_text(self):
        return "\n".join([
            "[databases]",
            f"* = host={self.server_host} port={self.server_port}",
            "",
            "[pgbouncer]",
            f"listen_addr = {LISTEN_HOST}",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = scram-sha-256",
            f"auth_file = {self.auth_file}",
            f"pool_mode = {self.pool_mode}",
            f"default_pool_size = {self.pool_size}",
            f"max_client_conn = {self.max_client_conn}",
            # A server restart fails logins for a moment; retry soon, not after the default 15 s.
            "server_login_retry = 1",
            "", ""])

    def _write_files(self):
        make_server_dir(self.work_dir)
        uid, gid = server_account()
        users = "".join(f"{quote_auth_field(name)} {quote_auth_field(password)}\n"
                        for name, password in self.users.items())
        for path, text in ((self.auth_file, users), (self.config_file, self.config_text())):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(text)
            os.chown(path, uid, gid)
            os.chmod(path, 0o600)

    def start(self):
        """Starts pgbouncer and waits until it accepts connections."""
        if self.process is not None and self.process.poll() is None:
            raise ClusterError("pgbouncer is already running")
        binary = pgbouncer_binary()
        if binary is None:
            raise ClusterError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
        self.port = self.port or free_port()
        self._write_files()
        with open(self.log_file, "ab") as log:
            # cwd "/": the server's account may not be able to enter ours.
            self.process = subprocess.Popen(as_server_user([binary, self.config_file]), cwd="/",
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            start_new_session=True, preexec_fn=self.preexec_fn)
        self._wait_until_listening()
        return self

    def _wait_until_listening(self):
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if self.process.poll() is not None:
                self.process = None
                raise ClusterError(f"pgbouncer exited at start: {self.log_tail()}")
            try:
                with socket.create_connection((LISTEN_HOST, self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise ClusterError(f"pgbouncer did not listen on port {self.port} "
                                       f"within {START_TIMEOUT_SECONDS}s: {self.log_tail()}") from None
                time.sleep(0.05)

    def log_tail(self, lines=5):
        try:
            return " | ".join(self.log_file.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self):
        """Ends pgbouncer at once (SIGTERM: its clients' connections close)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self):
        """Stops and starts again on the same port."""
        self.stop()
        return self.start()

    @property
    def pid(self):
        return None if self.process is None else self.process.pid

    def url_for(self, url):
        """`url` (a postgresql:// URL or a key=value DSN) going through this
        pgbouncer instead of straight to the server."""
        if self.port is None:
            raise ClusterError("pgbouncer has no port until it is started")
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            return make_dsn(url, host=LISTEN_HOST, port=self.port)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@{LISTEN_HOST}:{self.port}" if credentials else f"{LISTEN_HOST}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
