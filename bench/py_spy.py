"""py-spy on a gunicorn worker, for the benchmarks: samples its stacks while a
load runs, then sorts each sample into the layer of ours it was in. py-spy is
not a dependency of the service: `pip install py-spy` where the bench runs."""
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

# (layer, path fragments): a sample belongs to the innermost frame that matches one.
LAYERS = [
    ("SQL: psycopg2 and database/", ("/psycopg2/", "/psycogreen/", "/database/")),
    ("provider call: httpx, httpcore, app/providers", ("/httpx/", "/httpcore/", "/app/providers/", "/h11/")),
    ("metrics: prometheus_client, app/metrics", ("/prometheus_client/", "/app/metrics.py")),
    ("rate limiter: flask_limiter, limits", ("/flask_limiter/", "/limits/")),
    ("pydantic and app/schemas", ("/pydantic/", "/pydantic_core/", "/app/schemas/", "/app/api/contract.py")),
    ("logging and app/observability", ("/logging/", "/app/observability.py")),
    ("JWT, access keys: jwt, app/security, app/api/callers", ("/jwt/", "/app/security.py", "/app/api/callers.py")),
    ("routing, breakers, health", ("/app/routing.py", "/app/breakers.py", "/app/health.py")),
    ("billing and the /v1 view", ("/app/billing.py", "/app/pricing.py", "/app/money.py", "/app/api/")),
    ("werkzeug", ("/werkzeug/",)),
    ("flask", ("/flask/",)),
    ("gunicorn", ("/gunicorn/",)),
    ("gevent: hub, greenlets, sockets", ("/gevent/", "/greenlet/")),
    ("the rest of app/", ("/app/",)),
]


def worker_pid(master_pid):
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"py-spy samples one worker; gunicorn has {len(children)}")
    return int(children[0])


class Samples:
    def __init__(self, process, path):
        self.process, self.path = process, path

    def read(self):
        self.process.wait(timeout=60)
        return self.path.read_text() if self.path.exists() else ""


@contextmanager
def record_worker(master_pid, seconds, path):
    """py-spy sampling the only worker of gunicorn `master_pid` for `seconds`
    (raw stacks in `path`) while the block runs."""
    executable = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(executable).exists():
        raise RuntimeError("py-spy is not installed: pip install py-spy")
    process = subprocess.Popen([executable, "record", "--pid", str(worker_pid(master_pid)), "--duration",
                                str(seconds), "--rate", "250", "--format", "raw", "--nonblocking",
                                "--output", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield Samples(process, Path(path))


def layers_of(raw):
    """[(layer, share of the samples)], largest first, of py-spy's raw output."""
    counts, total = {}, 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        paths = [_path_of(frame) for frame in reversed(stack.split(";"))]
        layer = next((name for path in paths for name, fragments in LAYERS
                      if any(fragment in path for fragment in fragments)), "other (stdlib, C)")
        counts[layer] = counts.get(layer, 0) + int(count)
        total += int(count)
    return sorted(((layer, count / total) for layer, count in counts.items()), key=lambda item: -item[1])


def _path_of(frame):
    """The file of a py-spy frame, "function (path:line)", with a leading slash:
    py-spy writes paths under sys.path relative to it (app/billing.py)."""
    path = frame[frame.rfind("(") + 1:frame.rfind(":")]
    return "/" + path.lstrip("/")


def top_functions(raw, limit=20):
    """[(innermost frame, share of the samples)], largest first."""
    counts, total = {}, 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            frame = stack.split(";")[-1]
            counts[frame] = counts.get(frame, 0) + int(count)
            total += int(count)
    return [(frame, count / total) for frame, count in sorted(counts.items(), key=lambda item: -item[1])[:limit]]
