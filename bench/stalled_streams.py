"""What stalled streaming clients cost the worker.

N clients (raw sockets with a 4 KiB receive buffer) each ask for a long
streamed answer (`POST /v1/chat/completions`, a stub reply of --chunks one-word
deltas, about 9.5 MB on the wire at the default), read its first 4 KiB, then
read nothing for --stall seconds, then read what is left. Reports the gunicorn
worker's RSS idle and at its peak during the stall (and the peak above idle per
stream), how many clients were cut off before the end (`data: [DONE]`), how
long the settles took from the request, and the ledger afterwards: every hold
settled, nothing held.

    .venv/bin/python bench/stalled_streams.py [--streams 8] [--chunks 47500] [--stall 40]

Everything runs on 127.0.0.1: a durable throwaway PostgreSQL, the stub in a
process of its own, the service as `make run` serves it (gunicorn.conf.py,
1 worker, CLIENT_IDLE_TIMEOUT and the rest at their defaults)."""
import argparse
import json
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import httpx
import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import MakeRunService, Stub, durable_database  # noqa: E402
from bench.streams import Sampler, status_field  # noqa: E402
from tests.support import settings_for  # noqa: E402

HOUSE_KEY = "sk-proj-bench-000000000000000000"
REQUEST = {"model": "openai/gpt-4o-mini", "max_tokens": 16384, "stream": True,
           "messages": [{"role": "user", "content": "Write at length."}]}


def workers(service):
    pid = service.process.pid
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def open_stalled_stream(url, token):
    """A socket that sent the request and read its first 4 KiB."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    body = json.dumps(REQUEST).encode()
    sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    sock.recv(4096)
    return sock


def read_rest(sock):
    """(bytes received, whether the stream reached its end) of the rest."""
    sock.settimeout(120)
    received, tail = 0, b""
    try:
        while chunk := sock.recv(65536):
            received += len(chunk)
            tail = (tail + chunk)[-64:]
    except (ConnectionResetError, TimeoutError):
        pass
    sock.close()
    return received, b"data: [DONE]" in tail


def ledger(owner_url):
    with closing(psycopg2.connect(owner_url)) as conn, conn.cursor() as cur:
        cur.execute("""SELECT count(*), count(r.id), coalesce(sum(h.amount - r.amount), 0),
                              extract(epoch FROM max(r.created_at - h.created_at))
                         FROM transactions h
                         LEFT JOIN transactions r ON r.related_transaction_id = h.id AND r.type = 'release'
                        WHERE h.type = 'hold'""")
        holds, settled, charged, slowest = cur.fetchone()
        cur.execute("SELECT coalesce(sum(held_balance), 0) FROM user_balance")
        return holds, settled, charged, slowest, cur.fetchone()[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--chunks", type=int, default=47_500)
    parser.add_argument("--stall", type=float, default=40.0)
    args = parser.parse_args()

    stub = Stub(chunks=args.chunks)
    with durable_database() as (owner_url, app_url), tempfile.TemporaryDirectory() as scratch:
        settings = settings_for(app_url, OPENAI_BASE_URL=f"{stub.url}/v1", OPENAI_API_KEY=HOUSE_KEY,
                                PASSWORD_ITERATIONS=1000, LOG_LEVEL="INFO")
        service = MakeRunService(settings, Path(scratch) / "service.log")
        try:
            account = {"email": "stall@example.com", "password": "correct horse battery"}
            httpx.post(f"{service.url}/api/v1/auth/register", json=account | {"username": "stall"}).raise_for_status()
            token = httpx.post(f"{service.url}/api/v1/auth/login", json=account).json()["access_token"]
            httpx.post(f"{service.url}/api/v1/balance/funds", json={"amount": "100"},
                       headers={"Authorization": f"Bearer {token}"}).raise_for_status()
            pids = workers(service)
            idle_kib = sum(status_field(pid, "VmRSS") for pid in pids)
            sampler = Sampler(pids)
            with ThreadPoolExecutor(args.streams) as pool:
                sockets = list(pool.map(lambda _: open_stalled_stream(service.url, token), range(args.streams)))
            time.sleep(args.stall)
            sampler.stop()
            with ThreadPoolExecutor(args.streams) as pool:
                rests = list(pool.map(read_rest, sockets))
            deadline = time.monotonic() + 120
            while (state := ledger(owner_url))[0] != state[1] and time.monotonic() < deadline:
                time.sleep(0.5)
            log = (Path(scratch) / "service.log").read_text()
        finally:
            service.stop()
            stub.stop()

    holds, settled, charged, slowest, held = state
    peaks = [json.loads(line).get("buffered_peak_bytes") for line in log.splitlines()
             if line.startswith("{") and '"message": "stream"' in line]
    print(f"{args.streams} streams of {args.chunks} deltas, stalled {args.stall:.0f} s after 4 KiB")
    print(f"worker RSS: idle {idle_kib / 1024:.0f} MiB, peak {sampler.peak_rss / 1024:.0f} MiB "
          f"({(sampler.peak_rss - idle_kib) / 1024 / args.streams:.1f} MiB a stream above idle)")
    print(f"clients: {sum(done for _, done in rests)} reached [DONE], "
          f"{sum(not done for _, done in rests)} cut off; received after the stall "
          f"{sum(size for size, _ in rests) / 2**20:.1f} MiB in all")
    print(f"ledger: {holds} holds, {settled} settled (charged {charged}), held {held}; "
          f"slowest settle {float(slowest or 0):.1f} s after its hold")
    if any(peak is not None for peak in peaks):
        print(f"outbox peak per stream (bytes): max {max(p for p in peaks if p is not None)}")


if __name__ == "__main__":
    main()
