"""`make run`: writes .env with fresh secrets when there is none, starts the
embedded PostgreSQL under .data/ unless a server is configured, migrates, and
serves with gunicorn until Ctrl-C, then stops the server and the cluster."""
import argparse
import base64
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from app.config import EMBEDDED_DB_OWNER, ConfigError, load_config
from database.cluster import ClusterError, EmbeddedCluster, free_port
import migrate

ROOT = Path(__file__).resolve().parent
ENV_FILE = ROOT / ".env"
DATA_DIR = ROOT / ".data"
INSTANCE_FILE = DATA_DIR / "instance_id"


def fresh_env_file():
    """A new .env: strong random secrets and the embedded cluster's settings."""
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
    lines = ["# Written by `make run`. Keep it with .data/: the database's stored keys",
             "# can only be decrypted with these secrets. See README, Backup and restore."]
    lines += [f"{name}={value}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def ensure_env_file():
    if ENV_FILE.exists():
        return
    if DATA_DIR.exists():
        sys.exit("run: .data/ exists but .env is missing. The database in .data/ belongs with the .env "
                 "made beside it (its stored API keys are encrypted with that .env's keys). Restore that "
                 ".env from your backup, or move .data/ away to start afresh.")
    old_umask = os.umask(0o077)
    try:
        ENV_FILE.write_text(fresh_env_file())
    finally:
        os.umask(old_umask)
    print("run: wrote .env with fresh secrets (back it up together with .data/)")


def check_pairing(config):
    """Refuses a .env that was not made with this .data/ (its keys would not
    decrypt what the database holds)."""
    if not INSTANCE_FILE.exists():
        return
    if INSTANCE_FILE.read_text().strip() != config["INSTANCE_ID"]:
        sys.exit("run: .env does not belong with .data/ (INSTANCE_ID differs): a regenerated .env "
                 "would leave every stored key undecryptable. Restore the .env that was backed up "
                 "with this .data/, or move .data/ away to start afresh.")


def start_embedded_cluster(config):
    if not config["EMBEDDED_DB_PORT"]:
        sys.exit("run: no database configured: set DATABASE_URL, or EMBEDDED_DB_PORT and the "
                 "EMBEDDED_DB_* passwords for the embedded cluster (see .env.example)")
    check_pairing(config)
    cluster = EmbeddedCluster(DATA_DIR, config["EMBEDDED_DB_PORT"])
    if not cluster.exists():
        print("run: creating the embedded PostgreSQL cluster in .data/")
        cluster.initialise(EMBEDDED_DB_OWNER, config["EMBEDDED_DB_OWNER_PASSWORD"])
        INSTANCE_FILE.write_text(config["INSTANCE_ID"] + "\n")
    if cluster.is_running():
        print("run: the embedded cluster is already running (another `make run`?)")
        return None
    cluster.start()
    print(f"run: embedded PostgreSQL listening on 127.0.0.1:{config['EMBEDDED_DB_PORT']}")
    return cluster


def serve(config):
    """Runs gunicorn in the foreground until it exits or we are interrupted."""
    bind = f"{config['HOST']}:{config['PORT']}"
    url = f"http://{'127.0.0.1' if config['HOST'] in ('0.0.0.0', '::') else config['HOST']}:{config['PORT']}"
    # Its own process group: Ctrl-C reaches only this launcher, which then stops
    # gunicorn gracefully (a worker still booting would otherwise die mid-import).
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "gunicorn.conf.py"), "--bind", bind, "wsgi:app"],
        cwd=ROOT, start_new_session=True)
    print(f"\nQ Marketplace is serving on {url}  (Ctrl-C stops it)\nTry:\n"
          f"  curl -s {url}/readyz\n"
          f"  curl -s -X POST {url}/api/v1/auth/register -H 'Content-Type: application/json' \\\n"
          f"       -d '{{\"email\": \"ada@example.com\", \"username\": \"ada\", \"password\": \"correct horse battery\"}}'\n",
          flush=True)
    try:
        return server.wait()
    except KeyboardInterrupt:
        print("run: stopping; calls in flight may finish (Ctrl-C again to stop at once)", flush=True)
        server.terminate()
        try:
            server.wait()
        except KeyboardInterrupt:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        raise


def _interrupt(signum, frame):
    """SIGINT and SIGTERM stop the launcher, even where SIGINT was inherited ignored."""
    raise KeyboardInterrupt


def main():
    argparse.ArgumentParser(
        description=__doc__, epilog="Settings come from .env and the environment (see .env.example).").parse_args()
    ensure_env_file()
    try:
        config = load_config()
    except ConfigError as exc:
        sys.exit(f"run: {exc}")
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    cluster = None
    try:
        if config["USES_EMBEDDED_DB"]:
            cluster = start_embedded_cluster(config)
        app_password = migrate.parse_dsn(config["DATABASE_URL"]).get("password")
        migrate.migrate(config["MIGRATE_DATABASE_URL"], app_password, out=lambda line: print(f"migrate: {line}"))
        status = serve(config)
    except (ClusterError, migrate.psycopg2.Error) as exc:
        sys.exit(f"run: {str(exc).strip()}")
    except KeyboardInterrupt:
        status = 0
    finally:
        if cluster is not None:
            print("run: stopping the embedded PostgreSQL cluster")
            cluster.stop()
    sys.exit(status)


if __name__ == "__main__":
    main()
