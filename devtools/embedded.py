"""The embedded cluster's settings in .env. `make run` writes its port and
passwords (EMBEDDED_DB_*) and, made from them by embedded_database_urls(), the
DATABASE_URL and MIGRATE_DATABASE_URL that everything else reads (gunicorn's
workers, migrate.py, the flask commands), none of which knows the cluster."""
import os
import re
from urllib.parse import quote

from psycopg2 import ProgrammingError
from psycopg2.extensions import parse_dsn

from app.config import SERVICE_LOGIN, read_env_file

EMBEDDED_HOST = "127.0.0.1"
EMBEDDED_DB_NAME = "qmarket"
EMBEDDED_DB_OWNER = "qmarket_owner"
# What `make run` keeps in .env for the cluster under .data/ (INSTANCE_ID pairs the two).
EMBEDDED_KEYS = ("INSTANCE_ID", "EMBEDDED_DB_PORT", "EMBEDDED_DB_PASSWORD", "EMBEDDED_DB_OWNER_PASSWORD")


def embedded_settings(values):
    """The embedded cluster's settings among `values` (.env's, the process
    environment's); {} when they name no cluster."""
    settings = {key: str(values.get(key) or "").strip() for key in EMBEDDED_KEYS}
    if settings["EMBEDDED_DB_PORT"] in ("", "0"):
        return {}
    if not settings["EMBEDDED_DB_PORT"].isdigit() or not 0 < int(settings["EMBEDDED_DB_PORT"]) < 65536:
        raise ValueError("EMBEDDED_DB_PORT: must be a port number")
    settings["EMBEDDED_DB_PORT"] = int(settings["EMBEDDED_DB_PORT"])
    return settings


def embedded_cluster_in_use(env_file):
    """The embedded cluster's settings when the service is to use that cluster,
    else {}: .env (or the environment) names one, and no server of the
    operator's own is set instead, in the environment (DATABASE_URL, DB_HOST) or
    in .env (a DATABASE_URL other than the cluster's, or DB_HOST without one)."""
    in_file = read_env_file(env_file)
    settings = embedded_settings({**in_file, **os.environ})
    if os.environ.get("DATABASE_URL", "").strip() or os.environ.get("DB_HOST", "").strip():
        return {}
    url = in_file.get("DATABASE_URL", "").strip()
    own_server = not is_embedded_url(url) if url else bool(in_file.get("DB_HOST", "").strip())
    return {} if own_server else settings


def write_embedded_urls(env_file):
    """The settings of the embedded cluster in use ({} when none) and the keys
    written: its URLs go into .env where they are missing (a .env from before
    `make run` wrote them) or out of date (EMBEDDED_DB_PORT changed)."""
    settings = embedded_cluster_in_use(env_file)
    if not settings:
        return {}, []
    in_file = read_env_file(env_file)
    stale = {key: url for key, url in embedded_database_urls(settings).items() if in_file.get(key) != url}
    if stale:
        write_env_values(env_file, stale)
    return settings, list(stale)


def embedded_database_urls(settings):
    """The service's and the owner's URLs of the cluster that `settings`
    (embedded_settings()) describe: the one place they are made."""
    def url(user, password):
        return (f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
                f"@{EMBEDDED_HOST}:{settings['EMBEDDED_DB_PORT']}/{EMBEDDED_DB_NAME}")
    return {"DATABASE_URL": url(SERVICE_LOGIN, settings["EMBEDDED_DB_PASSWORD"]),
            "MIGRATE_DATABASE_URL": url(EMBEDDED_DB_OWNER, settings["EMBEDDED_DB_OWNER_PASSWORD"])}


def is_embedded_url(url):
    """Whether `url` names the embedded cluster's database as its service login,
    whatever its port (EMBEDDED_DB_PORT may have changed since it was written)."""
    try:
        params = parse_dsn(url)
    except ProgrammingError:  # not a URL at all
        return False
    return ((params.get("host"), params.get("dbname"), params.get("user"))
            == (EMBEDDED_HOST, EMBEDDED_DB_NAME, SERVICE_LOGIN))


def write_env_values(env_file, values):
    """Sets each KEY=value in the .env file, in place where the key is already
    there, else appended; every other line is kept as it is."""
    lines = env_file.read_text().splitlines()
    missing = dict(values)
    for index, line in enumerate(lines):
        match = re.match(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=", line)
        if match and match.group(1) in values:
            lines[index] = f"{match.group(1)}={values[match.group(1)]}"
            missing.pop(match.group(1), None)
    lines += [f"{key}={value}" for key, value in missing.items()]
    env_file.write_text("\n".join(lines) + "\n")
