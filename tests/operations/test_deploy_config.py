"""The deployed path is the tested one: compose.yaml, the systemd units and
their environment files, the Dockerfile and the local cluster (`make
cluster`, which the cluster tests start) agree on the templates' variables,
the ports, the pooling mode and the service's settings; the configurations
they generate pass `nginx -t`, and the compose entrypoint fills PgBouncer's
template as devtools/pgbouncer.py does. Images cannot be built here."""
import os
import re
import shutil
import subprocess
from urllib.parse import urlsplit

import pytest
import yaml
from dotenv import dotenv_values

from app.config import SETTINGS
from devtools.deploy_config import DEPLOY_DIR, NGINX_TEMPLATE, PGBOUNCER_TEMPLATE, placeholders, render
from devtools.launcher import gunicorn_command
from devtools.local_cluster import PGBOUNCER_POOL_SIZE, LocalCluster
from devtools.nginx import Nginx, nginx_binary
from devtools.pgbouncer import PgBouncer
from tests.support import ROOT


def compose_file():
    """compose.yaml as compose reads it: `${NAME:-default}` gives its default, any other `${NAME...}` a value."""
    def value(match):
        name, operator, rest = match.groups()
        return rest if operator == ":-" else f"value-of-{name.lower()}"
    text = re.sub(r"\$\{([A-Z_]+)(?:(:[-?])([^}]*))?\}", value, (ROOT / "compose.yaml").read_text())
    return yaml.safe_load(text)


COMPOSE = compose_file()
SERVICES = COMPOSE["services"]
SYSTEMD = DEPLOY_DIR / "systemd"
SYSTEMD_PGBOUNCER = dotenv_values(SYSTEMD / "pgbouncer.env.example")
SYSTEMD_SERVICE = dotenv_values(SYSTEMD / "qmarket.env.example")
# What the entrypoint (and devtools/pgbouncer.py) fill in themselves, and what it reads instead.
AUTH_FILE = "PGBOUNCER_AUTH_FILE"
LOGIN = {"PGBOUNCER_USER", "PGBOUNCER_PASSWORD"}


def local_cluster():
    """The cluster `make cluster` would run, its pieces given ports but not started."""
    cluster = LocalCluster("/nonexistent", "postgresql://app_user:pw@127.0.0.1:5432/qmarket")
    cluster.pgbouncer.port, cluster.redis.port = 6432, 6379
    return cluster


def unit(name):
    """A systemd unit's `Key=value` lines (a key given twice keeps both values)."""
    entries = {}
    for line in (SYSTEMD / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            entries.setdefault(key, []).append(value)
    return entries


def longest_graceful_timeout():
    """gunicorn.conf.py's graceful_timeout under the default settings."""
    return int(max(float(SETTINGS["PROVIDER_TIMEOUT"][0]), float(SETTINGS["STREAM_TIMEOUT"][0]))) + 5


def test_pgbouncer_is_configured_with_the_same_variables_everywhere():
    wanted = placeholders(PGBOUNCER_TEMPLATE)
    assert "PGBOUNCER_POOL_MODE" in wanted and AUTH_FILE in wanted
    assert set(PgBouncer("/nonexistent", "127.0.0.1", 5432, {}).template_values()) == wanted
    assert set(SERVICES["pgbouncer"]["environment"]) == wanted - {AUTH_FILE} | LOGIN
    assert set(SYSTEMD_PGBOUNCER) == wanted - {AUTH_FILE} | LOGIN


def test_every_pgbouncer_pools_in_transaction_mode_with_the_same_sizes():
    local = local_cluster().pgbouncer
    for environment in (SERVICES["pgbouncer"]["environment"], SYSTEMD_PGBOUNCER):
        assert environment["PGBOUNCER_POOL_MODE"] == local.pool_mode == "transaction"
        assert int(environment["PGBOUNCER_POOL_SIZE"]) == local.pool_size == PGBOUNCER_POOL_SIZE
        assert int(environment["PGBOUNCER_MAX_CLIENT_CONN"]) == local.max_client_conn
        assert int(environment["PGBOUNCER_QUERY_WAIT_TIMEOUT"]) == local.query_wait_timeout
        assert environment["PGBOUNCER_USER"] == "app_user"


@pytest.mark.parametrize("deployment", ["compose", "systemd"])
def test_the_instances_reach_pgbouncer_redis_and_migrate_reaches_postgresql(deployment):
    """The settings the local cluster gives its instances, as each deployment gives them."""
    cluster_settings = {key for key, value in local_cluster().instance_env().items() if os.environ.get(key) != value}
    assert cluster_settings == {"DATABASE_URL", "RATELIMIT_STORAGE_URI", "TRUSTED_PROXIES"}
    if deployment == "compose":
        service, bouncer = SERVICES["app"]["environment"], SERVICES["pgbouncer"]["environment"]
        hosts = {"pgbouncer": "pgbouncer", "postgres": "postgres", "redis": "redis"}
        assert SERVICES["migrate"]["environment"] == service
    else:
        trusted = dict(item.split("=", 1) for item in unit("qmarket@.service")["Environment"][0].split())
        service, bouncer = {**SYSTEMD_SERVICE, **trusted}, SYSTEMD_PGBOUNCER
        hosts = {"pgbouncer": "127.0.0.1", "postgres": "127.0.0.1", "redis": "127.0.0.1"}
    assert cluster_settings <= set(service)
    assert service["TRUSTED_PROXIES"] == local_cluster().instance_env()["TRUSTED_PROXIES"] == "1"
    through_bouncer, straight = urlsplit(service["DATABASE_URL"]), urlsplit(service["MIGRATE_DATABASE_URL"])
    assert (through_bouncer.hostname, through_bouncer.port) == (hosts["pgbouncer"], int(bouncer["PGBOUNCER_PORT"]))
    assert through_bouncer.username == bouncer["PGBOUNCER_USER"]
    assert (straight.hostname, straight.port) == (hosts["postgres"], int(bouncer["PGBOUNCER_SERVER_PORT"]))
    assert bouncer["PGBOUNCER_SERVER_HOST"] == hosts["postgres"]
    assert through_bouncer.path == straight.path == "/qmarket"
    assert urlsplit(service["RATELIMIT_STORAGE_URI"]).hostname == hosts["redis"]


def test_nginx_is_configured_with_the_same_variables_and_ports():
    wanted = placeholders(NGINX_TEMPLATE)
    assert set(Nginx("/nonexistent", []).template_values()) == wanted
    nginx, app = SERVICES["nginx"], SERVICES["app"]
    assert set(nginx["environment"]) == wanted
    assert nginx["environment"]["QMARKET_UPSTREAMS"] == f"server app:{app['environment']['PORT']};"
    published = [mapping.rsplit(":", 1)[1] for mapping in nginx["ports"]]
    assert published == [nginx["environment"]["NGINX_PORT"]]
    assert any(volume.startswith("./deploy/nginx/qmarket.conf.template:") for volume in nginx["volumes"])


def test_the_nginx_site_streams_and_trusts_one_proxy():
    """Unbuffered and long on /v1, keep-alive to the instances (closed before
    gunicorn closes it), and X-Forwarded-* set for TRUSTED_PROXIES=1."""
    site = NGINX_TEMPLATE.read_text()
    v1 = site.split("location /v1/ {", 1)[1].split("}", 1)[0]
    assert "proxy_buffering off;" in v1 and "proxy_pass http://qmarket;" in v1
    timeout = int(re.search(r"proxy_read_timeout (\d+)s;", site).group(1))
    assert timeout >= 3600  # the largest STREAM_TIMEOUT the settings accept
    assert "proxy_http_version 1.1;" in site and 'proxy_set_header Connection "";' in site
    gunicorn_keepalive = int(re.search(r"^keepalive = (\d+)$", (ROOT / "gunicorn.conf.py").read_text(), re.M).group(1))
    assert int(re.search(r"keepalive_timeout (\d+)s;", site).group(1)) < gunicorn_keepalive
    for header in ("X-Forwarded-For $proxy_add_x_forwarded_for", "X-Forwarded-Proto $scheme",
                   "X-Forwarded-Host $http_host"):
        assert f"proxy_set_header {header};" in site


@pytest.mark.server  # nginx -t is a process of its own
def test_the_local_clusters_nginx_configuration_passes_nginx_t(tmp_path):
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light; .ci/run installs it)")
    work_dir = tmp_path / "nginx"
    nginx = Nginx(work_dir, ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"], port=8000)
    if os.geteuid() == 0:
        tmp_path.chmod(0o711)  # the workers' account enters it
    nginx.write_config()
    passed, said = nginx.check()
    assert passed, said
    # And the site as compose fills it, with an address nginx -t can resolve here.
    compose_values = {**SERVICES["nginx"]["environment"], "QMARKET_UPSTREAMS": "server 127.0.0.1:8000;"}
    nginx.site_file.write_text(render(NGINX_TEMPLATE, compose_values))
    passed, said = nginx.check()
    assert passed, said


def test_the_compose_entrypoint_fills_pgbouncers_template_as_the_local_cluster_does(tmp_path):
    if shutil.which("envsubst") is None:
        pytest.skip("envsubst is not installed (Debian: apt-get install gettext-base)")
    fake = tmp_path / "bin" / "pgbouncer"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\ncp "$1" "$(dirname "$1")/rendered.ini"\n')
    fake.chmod(0o755)
    environment = {**SERVICES["pgbouncer"]["environment"], "PGBOUNCER_PASSWORD": 'pa"ss'}
    run_dir = tmp_path / "run"
    result = subprocess.run(["sh", str(DEPLOY_DIR / "pgbouncer" / "entrypoint.sh")], capture_output=True, text=True,
                            env={"PATH": f"{fake.parent}:{os.environ['PATH']}", "PGBOUNCER_RUN_DIR": str(run_dir),
                                 "PGBOUNCER_TEMPLATE": str(PGBOUNCER_TEMPLATE), **environment})
    assert result.returncode == 0, result.stderr
    local = PgBouncer(run_dir, environment["PGBOUNCER_SERVER_HOST"], environment["PGBOUNCER_SERVER_PORT"],
                      {"app_user": 'pa"ss'}, pool_mode=environment["PGBOUNCER_POOL_MODE"],
                      pool_size=int(environment["PGBOUNCER_POOL_SIZE"]),
                      max_client_conn=int(environment["PGBOUNCER_MAX_CLIENT_CONN"]),
                      query_wait_timeout=int(environment["PGBOUNCER_QUERY_WAIT_TIMEOUT"]),
                      port=int(environment["PGBOUNCER_PORT"]))
    expected = local.config_text().replace("listen_addr = 127.0.0.1", "listen_addr = 0.0.0.0")
    assert (run_dir / "rendered.ini").read_text() == expected
    assert (run_dir / "userlist.txt").read_text() == '"app_user" "pa""ss"\n'
    missing = subprocess.run(["sh", str(DEPLOY_DIR / "pgbouncer" / "entrypoint.sh")], capture_output=True, text=True,
                             env={**environment, "PATH": os.environ["PATH"], "PGBOUNCER_RUN_DIR": str(run_dir),
                                  "PGBOUNCER_TEMPLATE": str(PGBOUNCER_TEMPLATE), "PGBOUNCER_POOL_MODE": ""})
    assert missing.returncode != 0 and "PGBOUNCER_POOL_MODE is not set" in missing.stderr


def test_every_deployment_runs_gunicorn_as_the_local_cluster_does():
    command = gunicorn_command("127.0.0.1:8001")
    config, app = command[command.index("--config") + 1], command[-1]
    assert (os.path.basename(config), app) == ("gunicorn.conf.py", "wsgi:app")
    systemd = unit("qmarket@.service")["ExecStart"][0]
    assert "--config gunicorn.conf.py --bind 127.0.0.1:%i wsgi:app" in systemd
    assert "--config gunicorn.conf.py" in dockerfile_stage("app") and "wsgi:app" in dockerfile_stage("app")


def test_stopping_waits_for_calls_in_flight_and_streams_have_their_sockets():
    graceful = longest_graceful_timeout()
    assert int(unit("qmarket@.service")["TimeoutStopSec"][0]) > graceful
    assert int(SERVICES["app"]["stop_grace_period"].rstrip("s")) > graceful
    sockets = 2 * int(SETTINGS["WEB_THREADS"][0]) + 100
    assert int(unit("qmarket@.service")["LimitNOFILE"][0]) >= sockets
    assert int(SERVICES["app"]["ulimits"]["nofile"]) >= sockets


def dockerfile_stage(name):
    """The text of the Dockerfile's stage `name`."""
    stages = re.split(r"^FROM ", (ROOT / "Dockerfile").read_text(), flags=re.M)[1:]
    return next(stage for stage in stages if stage.split("\n", 1)[0].endswith(f" AS {name}"))


def test_the_image_runs_as_a_user_of_its_own_without_build_tools():
    stages = re.findall(r"^FROM \S+ AS (\S+)", (ROOT / "Dockerfile").read_text(), flags=re.M)
    assert stages[-1] == "app", "the default target, the last stage, is the service"
    app = dockerfile_stage("app")
    users = re.findall(r"^USER (\S+)", app, flags=re.M)
    assert users and users[-1] not in ("root", "0")
    assert "apt-get" not in app and "pip install" not in app
    copied = " ".join(re.findall(r"^COPY (?!--from)(.*)$", app, flags=re.M))
    for needed in ("app", "database", "migrate.py", "wsgi.py", "gunicorn.conf.py", "catalog.json"):
        assert re.search(rf"(^|\s){re.escape(needed)}(\s|$)", copied), needed
    assert "tests" in (ROOT / ".dockerignore").read_text().split()


def test_the_systemd_units_parse():
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    units = sorted(str(path) for path in SYSTEMD.glob("*.service")) + sorted(str(p) for p in SYSTEMD.glob("*.timer"))
    result = subprocess.run([analyze, "verify", *units], capture_output=True, text=True)
    # The programs live under /opt/qmarket once installed; nothing else may be reported.
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if line.strip() and "is not executable" not in line]
    assert complaints == []
