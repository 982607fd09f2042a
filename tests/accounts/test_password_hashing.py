"""Password hashes leave the gevent worker free: PBKDF2 runs on native
threads, so requests sharing the worker with logins are answered meanwhile."""
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.processes import children_of
from tests.support import PASSWORD, LiveServer, settings_for

# One hash takes over a second here (a few milliseconds answer /readyz), so a
# login is surely still hashing when the request sent after it arrives.
SLOW_ITERATIONS = 4_000_000
LOGINS = 3  # more than the pool's threads on a 2-core machine: some wait their turn


def counted_attempts(database):
    return database.query("SELECT count(*) FROM login_attempts")[0][0]


def niceness_of_threads(pid):
    return [os.getpriority(os.PRIO_PROCESS, int(thread)) for thread in os.listdir(f"/proc/{pid}/task")]


def test_a_request_is_answered_while_logins_hash_on_the_same_worker(database):
    server = LiveServer(settings_for(database.app_url, PASSWORD_ITERATIONS=SLOW_ITERATIONS), workers=1, threads=16)
    answered = []  # (what, status) in the order the answers arrived
    lock = threading.Lock()

    def send(what, method, path, **kwargs):
        status = httpx.request(method, f"{server.url}{path}", timeout=120, **kwargs).status_code
        with lock:
            answered.append((what, status))

    emails = [f"nobody{number}@example.com" for number in range(LOGINS)]
    try:
        with ThreadPoolExecutor(LOGINS + 1) as pool:
            logins = [pool.submit(send, email, "POST", "/api/v1/auth/login",
                                  json={"email": email, "password": PASSWORD}) for email in emails]
            # Each login counts its attempt just before it hashes: once all are
            # counted, every login is hashing or waiting to.
            deadline = time.monotonic() + 60
            while counted_attempts(database) < LOGINS and time.monotonic() < deadline:
                time.sleep(0.02)
            assert counted_attempts(database) == LOGINS
            pool.submit(send, "readyz", "GET", "/readyz").result()
            for login in logins:
                login.result()
        [worker] = children_of(server.process.pid)
        loop = os.getpriority(os.PRIO_PROCESS, worker)  # the main thread's
        hashing = [nice for nice in niceness_of_threads(worker) if nice != loop]
    finally:
        server.stop()
    assert answered[0] == ("readyz", 200), answered
    assert sorted(answered[1:]) == [(email, 401) for email in sorted(emails)]
    # The threads that hashed, still there: no more than the cores, each nicer than the loop.
    assert 1 <= len(hashing) <= os.cpu_count()
    assert all(nice > loop for nice in hashing)
