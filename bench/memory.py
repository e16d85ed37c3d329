"""Memory of a process as Linux reports it in /proc/<pid>/status: resident now (VmRSS) and its peak (VmHWM).

The peak is VmHWM, not `ru_maxrss`: Linux carries ru_maxrss across fork and exec, so a child process would report
its parent's peak. Used for the benchmark's own process (one engine per process) and for a server it started.
"""

from __future__ import annotations

from pathlib import Path


def _status_mb(field: str, pid: int | str) -> float | None:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:  # the process has exited
        return None
    for line in lines:
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def rss_mb(pid: int | str = "self") -> float | None:
    """Resident memory in MB; None once the process has exited."""
    return _status_mb("VmRSS", pid)


def peak_rss_mb(pid: int | str = "self") -> float | None:
    """The most resident memory the process has had (since its start or the last `reset_peak_rss`), in MB."""
    return _status_mb("VmHWM", pid)


def reset_peak_rss() -> None:
    """Start this process's peak over from its current RSS (so a peak can be measured per stage)."""
    Path("/proc/self/clear_refs").write_text("5")
