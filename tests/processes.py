"""Processes seen through /proc, for the tests that kill servers and check what
is left running."""
import time
from pathlib import Path


def _stat(pid):
    """(state, parent pid) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces.
    state, ppid = text.rsplit(")", 1)[1].split()[:2]
    return state, int(ppid)


def children_of(pid):
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(entry.name)
            if stat is not None and stat[1] == pid:
                children.append(int(entry.name))
    return children


def descendants_of(pid):
    found = []
    for child in children_of(pid):
        found += [child, *descendants_of(child)]
    return found


def is_gone(pid):
    """Exited: no such process, or a zombie nobody has reaped yet."""
    stat = _stat(pid)
    return stat is None or stat[0] in ("Z", "X")


def wait_until_gone(pids, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [pid for pid in pids if not is_gone(pid)]
        if not left:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes still running after {timeout}s: {left}")


def command_line(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""
