"""A redis-server for the local cluster's shared rate-limit counters: on
127.0.0.1, a port of its own, nothing kept on disk (counters are worth
nothing after a restart). Redis runs as any user, root included."""
import shutil
import subprocess
from pathlib import Path

from devtools.cluster import ClusterError, free_port
from devtools.launcher import end_process, log_tail, wait_until_listening

LISTEN_HOST = "127.0.0.1"


def redis_binary():
    return shutil.which("redis-server")


class RedisServer:
    def __init__(self, work_dir, port=None, preexec_fn=None):
        self.work_dir = Path(work_dir)
        self.port = port
        self.preexec_fn = preexec_fn
        self.process = None

    @property
    def url(self):
        return f"redis://{LISTEN_HOST}:{self.port}/0"

    @property
    def log_file(self):
        return self.work_dir / "redis.log"

    def start(self):
        binary = redis_binary()
        if binary is None:
            raise ClusterError("redis-server is not installed (Debian: apt-get install redis-server)")
        self.port = self.port or free_port()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", LISTEN_HOST, "--save", "", "--appendonly", "no",
             "--dir", str(self.work_dir), "--logfile", str(self.log_file)],
            cwd=self.work_dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=self.preexec_fn)
        try:
            wait_until_listening(self.process, self.port, tail=lambda: log_tail(self.log_file))
        except RuntimeError as exc:
            self.stop()
            raise ClusterError(f"redis-server {exc}") from None
        return self

    def stop(self):
        process, self.process = self.process, None
        end_process(process)
