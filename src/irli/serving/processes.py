"""The processes under a process, from Linux's /proc: what a private Ray
cluster leaves behind is found and ended with them (and the benchmark
sums their memory)."""

from __future__ import annotations

import contextlib
import os
import signal
import time


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name."""
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()


def tree(pid: int) -> dict[int, str]:
    """The processes under `pid` (not itself): pid -> start time (clock
    ticks since boot, as text: a pid reused later has another)."""
    parent, started = {}, {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = _stat(int(d))
                parent[int(d)], started[int(d)] = int(fields[1]), fields[19]
            except (OSError, IndexError, ValueError):
                pass
    found, grew = {pid}, True
    while grew:
        new = {p for p, pp in parent.items() if pp in found} - found
        found |= new
        grew = bool(new)
    found.discard(pid)
    return {p: started[p] for p in found}


def alive(procs: dict[int, str]) -> list[int]:
    """Those of `procs` (from `tree`) still running."""
    out = []
    for pid, t0 in procs.items():
        try:
            if _stat(pid)[19] == t0:
                out.append(pid)
        except (OSError, IndexError):
            pass
    return out


def end(procs: dict[int, str], wait_s: float = 5.0) -> None:
    """SIGTERM what is left of `procs`, then SIGKILL after `wait_s`."""
    left = alive(procs)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = alive(procs)
        if not left:
            return


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and every process under it."""
    total = 0
    for p in [pid, *tree(pid)]:
        with contextlib.suppress(OSError):
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
    return total
