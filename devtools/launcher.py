"""What `make run` and `make cluster` both do with their child processes:
gunicorn's command line, a child that dies with its launcher, a wait for a
server to answer, and messages that never fail."""
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def say(line):
    """Prints, but never fails: once the terminal is closed (SIGHUP) writing to
    it fails, and the shutdown must go on without it."""
    try:
        print(line, flush=True)
    except OSError:
        sys.stdout = open(os.devnull, "w")


def gunicorn_command(bind):
    """The service under gunicorn, with the project's gunicorn.conf.py, on `bind` (host:port)."""
    return [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "gunicorn.conf.py"), "--bind", bind, "wsgi:app"]


def stop_with_launcher():
    """A preexec_fn: the kernel sends the child SIGTERM when this launcher dies,
    however it dies (SIGKILL included), so gunicorn stops its workers instead
    of serving on without its database. The signal follows the thread that
    forked, the main thread here, which lives as long as the launcher. A child
    that changes its user (setpriv) loses it. Linux only."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    launcher = os.getpid()

    def arm():
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != launcher:  # it died before the signal was armed
            os._exit(1)
    return arm


def interrupt(signum, frame):
    """SIGINT, SIGTERM and SIGHUP (the terminal closed) stop the launcher, even
    where SIGINT was inherited ignored."""
    raise KeyboardInterrupt


def stop_on_signals():
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)


def wait_until_answering(url, process, timeout=30, tail=lambda: ""):
    """Returns once GET `url` answers 200; raises RuntimeError if `process`
    ends first, with `tail()` (the end of its output), or once `timeout`
    seconds pass (without it: reading a live server's pipe would block)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with status {process.returncode}: {tail()[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s")


def wait_until_listening(process, port, timeout=20, tail=lambda: "", host="127.0.0.1"):
    """Returns once `host:port` accepts a connection; raises RuntimeError, with
    `tail()`, if `process` exits first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"exited at start with status {process.returncode}: {tail()}")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not listening on port {port} within {timeout}s: {tail()}") from None
            time.sleep(0.05)


def log_tail(path, lines=5):
    """The last lines of a log file, on one line."""
    try:
        return " | ".join(Path(path).read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def end_process(process, timeout=20, signum=signal.SIGTERM):
    """Sends `signum` to a child and reaps it, killing it after `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signum)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
