"""A process's CPU time and memory from /proc (Linux)."""
from __future__ import annotations

import os

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the resident set's high-water mark since start or the last reset."""
    return _status_kb(pid, "VmHWM") / 1024


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (needs the right to write /proc/<pid>/clear_refs)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def fds(pid: int) -> tuple[int, int]:
    """(open file descriptors, of which sockets) of the process now."""
    total = sockets = 0
    base = f"/proc/{pid}/fd"
    for name in os.listdir(base):
        total += 1
        try:
            if os.readlink(f"{base}/{name}").startswith("socket:"):
                sockets += 1
        except OSError:  # closed meanwhile
            total -= 1
    return total, sockets
