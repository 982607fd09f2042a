"""A PgBouncer (Debian's `pgbouncer`) in front of a running PostgreSQL, for the
local cluster and the tests: on 127.0.0.1, a port of its own, transaction
pooling by default, configured from deploy/pgbouncer/pgbouncer.ini.template
as compose.yaml's is.

Like postgres, pgbouncer refuses to run as root: it then runs as the `postgres`
user through setpriv (devtools.cluster.as_server_user), so its folder must be
one that user can enter. It runs in the foreground as our child; stop() ends it.

Clients authenticate with SCRAM against an auth_file holding the passwords
given; pgbouncer logs in to the server with the same password, so the file
keeps them in clear text (mode 0600, the server account's)."""
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from psycopg2.extensions import make_dsn

from devtools.cluster import ClusterError, as_server_user, free_port, make_server_dir, server_account
from devtools.deploy_config import PGBOUNCER_TEMPLATE, render
from devtools.launcher import end_process, log_tail, wait_until_listening

LISTEN_HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 20
STOP_TIMEOUT_SECONDS = 20
POOL_MODES = ("session", "transaction", "statement")
QUERY_WAIT_TIMEOUT = 10  # seconds; deploy/pgbouncer/pgbouncer.ini.template says why


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
                 max_client_conn=2000, query_wait_timeout=QUERY_WAIT_TIMEOUT, port=None, preexec_fn=None):
        if pool_mode not in POOL_MODES:
            raise ValueError(f"pool_mode must be one of {', '.join(POOL_MODES)}")
        self.work_dir = Path(work_dir)
        self.server_host, self.server_port = server_host, int(server_port)
        self.users = dict(users)
        self.pool_mode, self.pool_size, self.max_client_conn = pool_mode, pool_size, max_client_conn
        self.query_wait_timeout = query_wait_timeout
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

    def template_values(self):
        """deploy/pgbouncer/pgbouncer.ini.template's placeholders, as this pgbouncer fills them."""
        return {"PGBOUNCER_SERVER_HOST": self.server_host, "PGBOUNCER_SERVER_PORT": self.server_port,
                "PGBOUNCER_LISTEN_ADDR": LISTEN_HOST, "PGBOUNCER_PORT": self.port,
                "PGBOUNCER_AUTH_FILE": self.auth_file, "PGBOUNCER_POOL_MODE": self.pool_mode,
                "PGBOUNCER_POOL_SIZE": self.pool_size, "PGBOUNCER_MAX_CLIENT_CONN": self.max_client_conn,
                "PGBOUNCER_QUERY_WAIT_TIMEOUT": self.query_wait_timeout}

    def config_text(self):
        return render(PGBOUNCER_TEMPLATE, self.template_values())

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
        try:
            wait_until_listening(self.process, self.port, START_TIMEOUT_SECONDS, lambda: log_tail(self.log_file))
        except RuntimeError as exc:
            self.stop()
            raise ClusterError(f"pgbouncer {exc}") from None
        return self

    def stop(self):
        """Ends pgbouncer at once (SIGTERM: its clients' connections close)."""
        process, self.process = self.process, None
        end_process(process, STOP_TIMEOUT_SECONDS)

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
