"""`make run`: writes .env with fresh secrets when there is none, starts the
embedded PostgreSQL under .data/ unless a server is configured, migrates, and
serves with gunicorn until Ctrl-C (or the terminal closes), then stops the
server and the cluster. One launcher at a time serves from .data/."""
import argparse
import base64
import fcntl
import os
import secrets
import signal
import subprocess
import sys

from app.config import ConfigError, load_config
from devtools.cluster import ClusterError, EmbeddedCluster, free_port
from devtools.embedded import EMBEDDED_DB_OWNER, embedded_database_urls, write_embedded_urls
from devtools.launcher import ROOT, gunicorn_command, say, stop_on_signals, stop_with_launcher
import migrate

ENV_FILE = ROOT / ".env"
DATA_DIR = ROOT / ".data"
INSTANCE_FILE = DATA_DIR / "instance_id"
# What in .data/ is a database of its own (the rest, such as the tests' screenshots, is not).
DATABASE_LINK = DATA_DIR / "pgdata"
LAUNCHER_FILE = DATA_DIR / "launcher.pid"


def fresh_env_file():
    """A new .env: strong random secrets, the embedded cluster's settings and
    the database URLs made from them."""
    def token():
        return secrets.token_urlsafe(48)
    values = {
        "APP_ENV": "production",
        "SECRET_KEY": token(),
        "ENCRYPTION_KEYS": "k1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "FINGERPRINT_KEY": token(),
        "INSTANCE_ID": secrets.token_hex(16),
        "EMBEDDED_DB_PORT": str(free_port()),
        "EMBEDDED_DB_PASSWORD": secrets.token_urlsafe(24),
        "EMBEDDED_DB_OWNER_PASSWORD": secrets.token_urlsafe(24),
    }
    values.update(embedded_database_urls(values))
    lines = ["# Written by `make run`. Keep it with .data/: the database's stored keys",
             "# can only be decrypted with these secrets. See README, Backup and restore."]
    lines += [f"{name}={value}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def ensure_env_file():
    if ENV_FILE.exists():
        return
    if INSTANCE_FILE.exists() or os.path.lexists(DATABASE_LINK):
        sys.exit("run: .data/ exists but .env is missing. The database in .data/ belongs with the .env "
                 "made beside it (its stored API keys are encrypted with that .env's keys). Restore that "
                 ".env from your backup, or move .data/ away to start afresh.")
    old_umask = os.umask(0o077)
    try:
        ENV_FILE.write_text(fresh_env_file())
    finally:
        os.umask(old_umask)
    say("run: wrote .env with fresh secrets (back it up together with .data/)")


def check_pairing(embedded):
    """Refuses a .env that was not made with this .data/ (its keys would not
    decrypt what the database holds)."""
    if not INSTANCE_FILE.exists():
        return
    if INSTANCE_FILE.read_text().strip() != embedded["INSTANCE_ID"]:
        sys.exit("run: .env does not belong with .data/ (INSTANCE_ID differs): a regenerated .env "
                 "would leave every stored key undecryptable. Restore the .env that was backed up "
                 "with this .data/, or move .data/ away to start afresh.")


def claim_data_dir():
    """Locks .data/launcher.pid for as long as this launcher lives, or exits
    naming the launcher that holds it. The kernel drops the lock when its
    holder dies, however it dies, so a held lock always means a live launcher,
    never a stale pid file or a pid reused by another process. The returned
    file must stay open: closing it releases the lock."""
    DATA_DIR.mkdir(mode=0o700, exist_ok=True)
    holder = open(LAUNCHER_FILE, "a+")
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder.seek(0)
        pid = holder.read().strip() or "unknown"
        sys.exit(f"run: another `make run` (pid {pid}) is serving from .data/; stop it first "
                 f"(Ctrl-C in its terminal, or `kill {pid}`)")
    holder.truncate(0)
    holder.write(f"{os.getpid()}\n")
    holder.flush()
    return holder


def embedded_cluster_settings():
    """The embedded cluster's settings when the service uses it ({} when a
    server of the operator's own is set), its URLs brought up to date in .env."""
    embedded, written = write_embedded_urls(ENV_FILE)
    if written:
        say(f"run: wrote the embedded cluster's {' and '.join(written)} into .env")
    return embedded


def start_embedded_cluster(embedded):
    check_pairing(embedded)
    cluster = EmbeddedCluster(DATA_DIR, embedded["EMBEDDED_DB_PORT"])
    if not cluster.exists():
        say("run: creating the embedded PostgreSQL cluster in .data/")
        cluster.initialise(EMBEDDED_DB_OWNER, embedded["EMBEDDED_DB_OWNER_PASSWORD"])
        INSTANCE_FILE.write_text(embedded["INSTANCE_ID"] + "\n")
    if not adopt_running_cluster(cluster):
        if cluster.clear_stale_lock_file():
            say("run: removed a stale postmaster.pid (its server is gone)")
        cluster.start()
    say(f"run: embedded PostgreSQL listening on 127.0.0.1:{embedded['EMBEDDED_DB_PORT']}")
    return cluster


def adopt_running_cluster(cluster):
    """Whether the cluster was running and this launcher now serves with it.
    With .data/ claimed, no launcher owns a running cluster: one that was killed
    left it. It is stopped with this launcher, or at once if it listens on a
    port other than .env's."""
    pid = cluster.server_pid()
    if pid is None:
        return False
    if cluster.server_port() != cluster.port:
        say(f"run: stopping the embedded PostgreSQL (pid {pid}) left by a launcher that was killed; "
            f"it listens on port {cluster.server_port()}, not EMBEDDED_DB_PORT")
        cluster.stop()
        return False
    say(f"run: adopting the embedded PostgreSQL (pid {pid}) left running by a launcher that was killed; "
        "it stops with this one")
    return True


def first_steps(url):
    """What to try first against the service at `url`."""
    account = '{"email": "ada@example.com", "username": "ada", "password": "correct horse battery"}'
    return (f"Try:\n  curl -s {url}/readyz\n"
            f"  curl -s -X POST {url}/api/v1/auth/register -H 'Content-Type: application/json' \\\n"
            f"       -d '{account}'\n")


def serve(config):
    """Runs gunicorn in the foreground until it exits or we are interrupted."""
    bind = f"{config['HOST']}:{config['PORT']}"
    url = f"http://{'127.0.0.1' if config['HOST'] in ('0.0.0.0', '::') else config['HOST']}:{config['PORT']}"
    # Its own session: Ctrl-C and a closing terminal reach only this launcher,
    # which then stops gunicorn gracefully (a worker still booting would
    # otherwise die mid-import, and SIGHUP would make gunicorn reload, not stop).
    server = subprocess.Popen(gunicorn_command(bind), cwd=ROOT, start_new_session=True,
                              preexec_fn=stop_with_launcher())
    say(f"\nQ Marketplace is serving on {url}  (Ctrl-C stops it)\n{first_steps(url)}")
    try:
        return server.wait()
    except KeyboardInterrupt:
        say("run: stopping; calls in flight may finish (Ctrl-C again to stop at once)")
        server.terminate()
        try:
            server.wait()
        except KeyboardInterrupt:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        raise


def launch(work, claim_always=False):
    """What `make run` and `make cluster` share: .env (written when missing),
    the embedded cluster when no server of the operator's own is set (.data/
    claimed, the cluster started, and stopped at the end), migrate; then
    `work(config, cluster)` until it returns its exit status or the launcher is
    stopped. `claim_always`: claim .data/ for a launcher keeping its own files
    there even when the database is the operator's."""
    ensure_env_file()
    try:
        embedded = embedded_cluster_settings()
        config = load_config()
    except (ConfigError, ValueError) as exc:
        sys.exit(f"run: {exc}")
    if not config["DATABASE_URL"]:
        sys.exit("run: no database configured: set DATABASE_URL, or EMBEDDED_DB_PORT and the "
                 "EMBEDDED_DB_* passwords for the embedded cluster (see .env.example)")
    stop_on_signals()
    cluster, claims = None, []
    try:
        if embedded or claim_always:
            claims.append(claim_data_dir())  # held, so locked, until the cluster has stopped
        if embedded:
            cluster = start_embedded_cluster(embedded)
        migrate.migrate_configured(config, out=lambda line: say(f"migrate: {line}"))
        status = work(config, cluster)
    except (ClusterError, migrate.psycopg2.Error) as exc:
        sys.exit(f"run: {str(exc).strip()}")
    except KeyboardInterrupt:
        status = 0
    finally:
        if cluster is not None:
            say("run: stopping the embedded PostgreSQL cluster")
            cluster.stop()
        for claim in claims:
            claim.close()
    sys.exit(status)


def main():
    argparse.ArgumentParser(
        description=__doc__, epilog="Settings come from .env and the environment (see .env.example).").parse_args()
    launch(lambda config, cluster: serve(config))


if __name__ == "__main__":
    main()
