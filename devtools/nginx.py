"""nginx in front of the local cluster's instances, with the site
deploy/nginx/qmarket.conf.template that compose.yaml's nginx serves too,
wrapped in a main configuration that keeps every file (pid, logs, temporary
bodies) in its own folder. As root the master stays root and its workers run
as the server account, which owns that folder; otherwise all of it runs as us."""
import shutil
import subprocess
from pathlib import Path

from devtools.cluster import SERVER_USER, ClusterError, free_port, make_server_dir, running_as_root
from devtools.deploy_config import NGINX_TEMPLATE, render
from devtools.launcher import end_process, log_tail, wait_until_listening

TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_binary():
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


class Nginx:
    """`upstreams`: the instances' host:port."""

    def __init__(self, work_dir, upstreams, listen_host="127.0.0.1", port=None, preexec_fn=None):
        self.work_dir = Path(work_dir)
        self.listen_host = listen_host
        self.upstreams = list(upstreams)
        self.port = port
        self.preexec_fn = preexec_fn
        self.process = None

    @property
    def url(self):
        return f"http://{self.connect_host}:{self.port}"

    @property
    def connect_host(self):
        """Where a client on this machine reaches it."""
        return "127.0.0.1" if self.listen_host in ("0.0.0.0", "::") else self.listen_host

    @property
    def config_file(self):
        return self.work_dir / "nginx.conf"

    @property
    def site_file(self):
        return self.work_dir / "qmarket.conf"

    @property
    def error_log(self):
        return self.work_dir / "error.log"

    def template_values(self):
        """deploy/nginx/qmarket.conf.template's placeholders, as this nginx fills them."""
        return {"NGINX_PORT": f"{self.listen_host}:{self.port}",
                "QMARKET_UPSTREAMS": " ".join(f"server {upstream};" for upstream in self.upstreams)}

    def main_config_text(self):
        lines = ["daemon off;", "worker_processes 1;", f"pid {self.work_dir / 'nginx.pid'};",
                 f"error_log {self.error_log} warn;"]
        if running_as_root():
            lines.append(f"user {SERVER_USER};")
        lines += ["events {", "    worker_connections 4096;", "}", "http {", "    access_log off;"]
        lines += [f"    {name}_temp_path {self.work_dir / name};" for name in TEMP_PATHS]
        lines += [f"    include {self.site_file};", "}", ""]
        return "\n".join(lines)

    def write_config(self):
        """Writes both files; the main one's path."""
        self.port = self.port or free_port()
        make_server_dir(self.work_dir)
        self.site_file.write_text(render(NGINX_TEMPLATE, self.template_values()))
        self.config_file.write_text(self.main_config_text())
        return self.config_file

    def command(self, *args):
        # -e: where nginx logs before it has read error_log (its default, /var/log/nginx, may not be ours).
        return [nginx_binary(), "-e", str(self.error_log), "-p", str(self.work_dir), "-c", str(self.config_file),
                *args]

    def check(self):
        """`nginx -t` on the written configuration: (passed, what it said)."""
        result = subprocess.run(self.command("-t"), capture_output=True, text=True)
        return result.returncode == 0, result.stderr.strip()

    def start(self):
        if nginx_binary() is None:
            raise ClusterError("nginx is not installed (Debian: apt-get install nginx-light)")
        self.write_config()
        self.process = subprocess.Popen(self.command(), cwd=self.work_dir, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True, preexec_fn=self.preexec_fn)
        try:
            wait_until_listening(self.process, self.port, host=self.connect_host,
                                 tail=lambda: log_tail(self.error_log))
        except RuntimeError as exc:
            self.stop()
            raise ClusterError(f"nginx {exc}") from None
        return self

    def stop(self):
        """A fast shutdown (SIGTERM): open connections, streams included, are cut."""
        process, self.process = self.process, None
        end_process(process)
