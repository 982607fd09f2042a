"""An open-loop load generator: POSTs one JSON body at a fixed rate over a
pool of keep-alive connections, and prints one JSON line with what it saw.

Each call is due at start + i / rate and its latency runs from that moment,
not from when a connection was free: a server that falls behind is charged for
the queue it causes (no coordinated omission). It runs in a process of its own
so that its CPU is counted apart (bench/capacity.py).

    python -m bench.fixed_rate URL RATE SECONDS BODY_FILE [--header 'Name: value'] [--connections 64]"""
import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit


def request_bytes(url, body, headers):
    parts = urlsplit(url)
    lines = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *headers, "", ""]
    return "\r\n".join(lines).encode() + body


async def read_response(reader):
    """The status of one HTTP/1.1 response, its body read whole (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in
               (line.partition(":") for line in header_lines if line)}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1])


class Pool:
    """Up to `size` keep-alive connections; a call waits for a free one."""

    def __init__(self, host, port, size):
        self.host, self.port, self.free, self.opened = host, port, asyncio.Queue(), 0
        self.size = size

    async def take(self):
        if self.free.empty() and self.opened < self.size:
            self.opened += 1
            return await asyncio.open_connection(self.host, self.port)
        return await self.free.get()

    def give_back(self, connection):
        self.free.put_nowait(connection)

    def forget(self):
        self.opened -= 1


async def generate(url, body, headers, rate, seconds, connections):
    parts = urlsplit(url)
    pool = Pool(parts.hostname, parts.port, connections)
    payload = request_bytes(url, body, headers)
    latencies, statuses, errors = [], {}, []

    async def one(due):
        connection = None
        try:
            connection = await pool.take()
            reader, writer = connection
            writer.write(payload)
            status = await read_response(reader)
            latencies.append(time.perf_counter() - due)
            statuses[status] = statuses.get(status, 0) + 1
            pool.give_back(connection)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            errors.append(type(exc).__name__)
            if connection is not None:
                connection[1].close()
                pool.forget()

    count = int(rate * seconds)
    started = time.perf_counter()
    tasks = []
    for index in range(count):
        due = started + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + 60)
    wall = time.perf_counter() - started
    return {"sent": count, "wall": wall, "latencies_ms": [round(value * 1000, 3) for value in latencies],
            "statuses": statuses, "errors": errors}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("rate", type=float)
    parser.add_argument("seconds", type=float)
    parser.add_argument("body_file")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    with open(args.body_file, "rb") as file:
        body = file.read()
    result = asyncio.run(generate(args.url, body, args.header, args.rate, args.seconds, args.connections))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
