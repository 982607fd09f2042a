"""Many long streams at once.

N OpenAI-format streams (`POST /v1/chat/completions`, `"stream": true`, an
access key), each a stub reply of --chunks deltas --chunk-delay apart (~3 s),
all opened at once; then the same N straight to the stub. Reports the wall
time, how many completed (the usage chunk and `data: [DONE]`), refused and
failed, first-delta latency p50/p99 of each and the difference, and the
gunicorn workers' peak RSS above idle per open stream; then checks the ledger:
nothing held, every stream's hold settled.

    .venv/bin/python bench/streams.py [--streams 1000] [--chunks 10] [--chunk-delay 0.3] [--users 1]
    .venv/bin/python bench/streams.py --gthread   # the gthread worker, for comparison

Everything runs on 127.0.0.1: a throwaway PostgreSQL started like `make run`'s
(devtools.cluster.EmbeddedCluster, fsync on), the service under gunicorn with
gunicorn.conf.py and `make run`'s worker defaults (WEB_WORKERS 1, WEB_THREADS
its default; both may be set in the environment), rate limits off, the stub and the client
(asyncio streams) each in a process of their own."""
import argparse
import asyncio
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import migrate  # noqa: E402
from bench.harness import Stub, percentile, stop_process  # noqa: E402
from devtools.cluster import EmbeddedCluster, free_port  # noqa: E402
from devtools.embedded import EMBEDDED_DB_OWNER, embedded_database_urls  # noqa: E402
from tests.support import settings_for, wait_until_ready  # noqa: E402

OPENAI_KEY = "sk-proj-bench-000000000000000000"
WARMUP_STREAMS = 20
PROMPT = [{"role": "user", "content": "Say hello."}]


def raise_open_file_limit():
    """Each stream holds three sockets (client, gunicorn, provider); children inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# --- the client, in a process of its own (`--client`) --------------------------------------------

async def read_events(reader):
    """The `data:` lines of a chunked text/event-stream body."""
    pending = b""
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            break
        pending += (await reader.readexactly(size + 2))[:-2]
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.startswith(b"data: "):
                yield line[6:].decode()


async def one_stream(address, request, start):
    """One stream over a connection of its own. Plain asyncio streams: httpx's
    connection pool does work per request in the number of open connections, and
    at 1,000 streams that made the client itself the bottleneck."""
    await start.wait()
    started = time.perf_counter()
    first_delta, usage, done = None, False, False
    try:
        reader, writer = await asyncio.open_connection(*address)
        writer.write(request)
        status = int((await reader.readline()).split()[1])
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        if status != 200:
            body = await reader.read(int(headers.get("content-length", 0)) or -1)
            writer.close()
            return {"status": status, "error": body.decode(errors="replace")[:200]}
        async for data in read_events(reader):
            if data == "[DONE]":
                done = True
                continue
            chunk = json.loads(data)
            if first_delta is None and any(choice["delta"].get("content") for choice in chunk["choices"]):
                first_delta = (time.perf_counter() - started) * 1000
            usage = usage or bool(chunk.get("usage"))
        writer.close()
    except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
        return {"status": None, "error": f"{type(exc).__name__}: {exc}"}
    return {"status": 200, "first_delta_ms": first_delta, "completed": usage and done,
            "seconds": time.perf_counter() - started}


async def open_streams(url, keys, model, count):
    """`count` streams at once, taking the comma-separated `keys` in turn."""
    target = httpx.URL(url)
    body = json.dumps({"model": model, "messages": PROMPT, "max_tokens": 64, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    requests = [(f"POST {target.raw_path.decode()} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
                 f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
                for key in keys.split(",")]
    start = asyncio.Event()
    tasks = [asyncio.create_task(one_stream((target.host, target.port), requests[number % len(requests)], start))
             for number in range(count)]
    await asyncio.sleep(0.2)  # every task waits at the start line
    started = time.perf_counter()
    start.set()
    results = await asyncio.gather(*tasks)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall": time.perf_counter() - started, "streams": results, "cpu": usage.ru_utime + usage.ru_stime}


def client_main(url, keys, model, count):
    raise_open_file_limit()
    print(json.dumps(asyncio.run(open_streams(url, keys, model, count))), flush=True)


def run_client(url, keys, model, count):
    """The client in its own process, so its event loop shares no GIL with the sampler."""
    out = subprocess.run([sys.executable, __file__, "--client", url, keys, model, str(count)],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


# --- the pieces under test --------------------------------------------------------------------

class Database:
    """A throwaway cluster with `make run`'s settings, migrated."""

    def __init__(self, base_dir):
        settings = {"EMBEDDED_DB_PORT": free_port(), "EMBEDDED_DB_PASSWORD": secrets.token_urlsafe(16),
                    "EMBEDDED_DB_OWNER_PASSWORD": secrets.token_urlsafe(16)}
        urls = embedded_database_urls(settings)
        self.app_url, self.owner_url = urls["DATABASE_URL"], urls["MIGRATE_DATABASE_URL"]
        self.cluster = EmbeddedCluster(base_dir, settings["EMBEDDED_DB_PORT"])
        self.cluster.initialise(EMBEDDED_DB_OWNER, settings["EMBEDDED_DB_OWNER_PASSWORD"])
        self.cluster.start()
        migrate.migrate(self.owner_url, settings["EMBEDDED_DB_PASSWORD"], out=lambda line: None)

    def ledger(self):
        """Holds, releases, and what is still held, over every user."""
        with psycopg2.connect(self.owner_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FILTER (WHERE type = 'hold'), count(*) FILTER (WHERE type = 'release') "
                        "FROM transactions")
            holds, releases = cur.fetchone()
            cur.execute("SELECT coalesce(sum(held_balance), 0) FROM user_balance")
            held = cur.fetchone()[0]
        conn.close()
        return holds, releases, held


def gthread_config(path):
    """gunicorn.conf.py as served before, for comparison: without its gevent
    patching, with the gthread worker and WEB_THREADS threads per worker."""
    source = (ROOT / "gunicorn.conf.py").read_text()
    assert "\nmonkey.patch_all()\n" in source, "gunicorn.conf.py no longer patches where this expects"
    source = source.replace("\nmonkey.patch_all()\n", "\n")
    path.write_text(source + '\nworker_class = "gthread"\nthreads = worker_connections\n\n\n'
                    'def post_fork(server, worker):\n    pass\n')
    return path


class Service:
    """gunicorn with gunicorn.conf.py, its log in a file (a full pipe would stall it)."""

    def __init__(self, settings, log_path, config=ROOT / "gunicorn.conf.py"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **{key: str(value) for key, value in settings.items()}, "ENV_FILE": os.devnull}
        env.setdefault("WEB_WORKERS", "1")  # `make run`'s default with memory:// limits
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", str(config), "--bind", f"127.0.0.1:{self.port}", "wsgi:app"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self.log, start_new_session=True)
        wait_until_ready(self.url, self.process, timeout=60, output=Path(log_path).read_text)

    def workers(self):
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def stop(self):
        stop_process(self.process, timeout=30)
        self.log.close()


def cpu_seconds(pids):
    """User + system CPU of these processes so far."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds():
    """Busy CPU seconds of the whole machine so far (every core)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def status_field(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Sampler:
    """The workers' summed RSS (KiB) and thread count, sampled until stopped; the peaks."""

    def __init__(self, pids):
        self.pids, self.peak_rss, self.peak_threads = pids, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.05):
            try:
                self.peak_rss = max(self.peak_rss, sum(status_field(pid, "VmRSS") for pid in self.pids))
                self.peak_threads = max(self.peak_threads, sum(status_field(pid, "Threads") for pid in self.pids))
            except FileNotFoundError:  # a worker was restarted: that is a failure the log shows
                pass

    def stop(self):
        self._stop.set()
        self._thread.join()


def prepare_access_key(url, number):
    """A user with funds, their OpenAI key in the vault, and an access key, all through the API."""
    with httpx.Client(base_url=url, timeout=30) as client:
        account = {"email": f"streams{number}@example.com", "password": "correct horse battery"}
        client.post("/api/v1/auth/register", json=account | {"username": f"streams{number}"}).raise_for_status()
        token = client.post("/api/v1/auth/login", json=account).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        client.post("/api/v1/balance/funds", json={"amount": "1000"}, headers=headers).raise_for_status()
        client.post("/api/v1/keys", json={"provider": "openai", "api_key": OPENAI_KEY},
                    headers=headers).raise_for_status()
        created = client.post("/api/v1/access-keys", json={"name": "streams bench"}, headers=headers)
        created.raise_for_status()
        return created.json()["key"]


def summarise(name, run):
    streams = run["streams"]
    completed = [s for s in streams if s.get("completed")]
    refused = [s for s in streams if s["status"] not in (200, None)]
    failed = len(streams) - len(completed) - len(refused)
    firsts = [s["first_delta_ms"] for s in completed if s["first_delta_ms"] is not None]
    lengths = [s["seconds"] for s in completed]
    print(f"{name:>22}: {len(streams)} streams in {run['wall']:.2f} s wall (each p50 {percentile(lengths, 0.5):.2f} s, "
          f"p99 {percentile(lengths, 0.99):.2f} s, longest {max(lengths, default=float('nan')):.2f} s): "
          f"{len(completed)} completed, {len(refused)} refused, {failed} failed")
    for sample in (refused + [s for s in streams if s["status"] is None])[:3]:
        print(f"{'':>24}e.g. {sample['status']}: {sample['error']}")
    return firsts


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--chunk-delay", type=float, default=0.3)
    parser.add_argument("--users", type=int, default=1,
                        help="spread the streams over this many users (a user's holds queue on their balance row)")
    parser.add_argument("--gthread", action="store_true", help="serve with gthread instead (see gthread_config)")
    parser.add_argument("--client", nargs=4, metavar=("URL", "KEYS", "MODEL", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        url, key, model, count = args.client
        return client_main(url, key, model, int(count))

    print(f"open files: {raise_open_file_limit()}; load average {os.getloadavg()[0]:.2f} "
          f"{os.getloadavg()[1]:.2f} at start")
    base_dir = Path(tempfile.mkdtemp(prefix="qmarket-bench-streams-", dir="/tmp"))
    base_dir.chmod(0o711)  # as root the cluster runs as `postgres`, which must reach its folder
    database, stub, service = None, None, None
    try:
        database = Database(base_dir / "data")
        stub = Stub(chunk_delay=args.chunk_delay, chunks=args.chunks)
        settings = settings_for(database.app_url, OPENAI_BASE_URL=f"{stub.url}/v1", LOG_LEVEL="WARNING")
        del settings["DB_POOL_TIMEOUT"]  # the production default, not the tests' shorter one
        config = gthread_config(base_dir / "gunicorn.gthread.py") if args.gthread else ROOT / "gunicorn.conf.py"
        service = Service(settings, base_dir / "gunicorn.log", config)
        keys = ",".join(prepare_access_key(service.url, number) for number in range(args.users))
        through = (f"{service.url}/v1/chat/completions", keys, "openai/gpt-4o-mini")
        straight = (f"{stub.url}/v1/chat/completions", OPENAI_KEY, "gpt-4o-mini")
        print(f"worker class {'gthread' if args.gthread else 'gevent'}, WEB_WORKERS "
              f"{os.environ.get('WEB_WORKERS', '1')}, WEB_THREADS {os.environ.get('WEB_THREADS', 'default')}; "
              f"{args.streams} streams of {args.chunks} deltas {args.chunk_delay} s apart, {args.users} user(s); "
              "rate limits off")

        run_client(*through, WARMUP_STREAMS)
        run_client(*straight, WARMUP_STREAMS)
        holds_before = database.ledger()[0]
        workers = service.workers()
        idle_rss = sum(status_field(pid, "VmRSS") for pid in workers)

        direct = run_client(*straight, args.streams)
        sampler = Sampler(workers)
        before = cpu_seconds(workers), cpu_seconds([stub.process.pid]), machine_cpu_seconds()
        via = run_client(*through, args.streams)
        after = cpu_seconds(workers), cpu_seconds([stub.process.pid]), machine_cpu_seconds()
        sampler.stop()
        load = os.getloadavg()

        via_firsts = summarise("through the service", via)
        direct_firsts = summarise("straight to the stub", direct)
        print(f"first delta (ms){'':>8} {'p50':>8} {'p99':>8}")
        for name, samples in (("through the service", via_firsts), ("straight to the stub", direct_firsts)):
            print(f"{name:>24} {percentile(samples, 0.5):8.1f} {percentile(samples, 0.99):8.1f}")
        print(f"{'overhead':>24} {percentile(via_firsts, 0.5) - percentile(direct_firsts, 0.5):8.1f} "
              f"{percentile(via_firsts, 0.99) - percentile(direct_firsts, 0.99):8.1f}")
        print(f"wall ratio service / stub: {via['wall'] / direct['wall']:.2f}")
        gunicorn_cpu, stub_cpu, machine_cpu = (end - start for end, start in zip(after, before))
        print(f"CPU seconds through the service: gunicorn {gunicorn_cpu:.1f}, stub {stub_cpu:.1f}, "
              f"client {via['cpu']:.1f}, everything else (postgres, other sessions) "
              f"{machine_cpu - gunicorn_cpu - stub_cpu - via['cpu']:.1f}; "
              f"{machine_cpu / via['wall'] / os.cpu_count():.0%} of the machine")
        print(f"workers {workers}: idle RSS {idle_rss / 1024:.0f} MiB, peak {sampler.peak_rss / 1024:.0f} MiB, "
              f"{(sampler.peak_rss - idle_rss) / args.streams:.0f} KiB per open stream; "
              f"peak threads {sampler.peak_threads}")

        time.sleep(1)  # a settle may still be committing after the client's last byte
        holds, releases, held = database.ledger()
        print(f"ledger: {holds - holds_before} holds in the run, {holds - releases} open over all, "
              f"{held} held -> {'OK' if holds - releases == 0 and held == 0 else 'NOT SETTLED'}")
        print(f"load average {load[0]:.2f} {load[1]:.2f} at the end")
    finally:
        if service:
            service.stop()
            errors = [line for line in (base_dir / "gunicorn.log").read_text(errors="replace").splitlines()
                      if "ERROR" in line or "CRITICAL" in line]
            if errors:
                print(f"gunicorn log: {len(errors)} error lines, e.g. {errors[:3]}")
        if stub:
            stub.stop()
        if database:
            database.cluster.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
