"""bench.memory: this process's resident memory and its peak (which can be started over), and None for a process
that has exited."""

import subprocess
import sys

from bench import memory

MB = 2**20


def test_resident_memory_and_its_peak() -> None:
    rss = memory.rss_mb()
    assert 10 < rss <= memory.peak_rss_mb()
    ballast = b"\x01" * (64 * MB)  # written, so resident
    assert memory.peak_rss_mb() >= rss + 60
    del ballast
    memory.reset_peak_rss()
    # the peak starts over from what is resident now: the ballast is forgotten (against the RSS now, not the one at
    # the start: in a long test process, threads of earlier tests may grow it meanwhile)
    peak = memory.peak_rss_mb()
    assert peak < memory.rss_mb() + 30


def test_another_process_until_it_has_exited() -> None:
    code = "import time; print('up', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        proc.stdout.readline()  # running its own program (mid-exec a process has no memory to report)
        assert memory.rss_mb(proc.pid) > 0 and memory.peak_rss_mb(proc.pid) > 0
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert memory.rss_mb(proc.pid) is None and memory.peak_rss_mb(proc.pid) is None
