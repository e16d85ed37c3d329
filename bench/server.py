"""A Querywise server as a child process on a free loopback port, for the benchmarks and the load test.

`python -m app` by default, or another command that serves the same app (bench.serve_llamacpp); its own query log
and keys file under `workdir`, auth off and the per-client limits raised: one load generator is one client, and
what is measured is the model queue, not the limiter. Ready once /readyz answers 200 (model loaded, database
answering) and the server has read the prompt every question shares into its cache; killed on leaving the `with`
block.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench import ROOT, memory

STARTUP_TIMEOUT_S = 180  # model load on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`cmd` (default `python -m app`) serving on a free loopback port, with `env` over this process's environment."""

    def __init__(
        self, workdir: Path, database_url: str | None = None, *, cmd: list[str] | None = None, **env: str
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.querylog_path = self.workdir / "querylog.sqlite"
        self.log_path = self.workdir / "server.log"
        self.cmd = cmd or [sys.executable, "-m", "app"]
        self.env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "QUERYLOG_URL": f"sqlite:///{self.querylog_path}",
            "AUTH_DISABLED": "1",
            "API_KEYS_FILE": str(self.workdir / "api_keys.json"),
            # The per-client limit would answer 429 long before the model queue fills; raise it to test the queue.
            "RATE_LIMIT_PER_MINUTE": "100000",
            "RATE_LIMIT_BURST": "10000",
            "MAX_IN_FLIGHT_PER_KEY": "1000",
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        if database_url:
            self.env["DATABASE_URL"] = database_url
        self.env.update(env)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S, wait_warm: bool = True) -> ServerProcess:
        """Start and wait until ready; `wait_warm=False` returns before the warm-up has read the shared prompt."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=2)
                # ready, and done reading the shared prompt into its cache: measurements start on a warm server
                if r.status_code == 200 and (not wait_warm or r.json().get("prompt_warm_up") != "running"):
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        self.kill()
        raise RuntimeError(f"the server was not ready within {timeout_s:.0f} s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_mb(self) -> float | None:
        """Resident memory of the server process now; None once it has exited."""
        return memory.rss_mb(self.pid)

    def peak_rss_mb(self) -> float | None:
        """The server process's peak resident memory so far; None once it has exited."""
        return memory.peak_rss_mb(self.pid)

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM, then wait for a graceful exit; the exit code (SIGKILL after `timeout_s`, code -9)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def querylog_rows(self) -> list[dict]:
        with sqlite3.connect(self.querylog_path) as conn:
            conn.row_factory = sqlite3.Row
            return [
                dict(r)
                for r in conn.execute("SELECT source, question, sql, status, category FROM query_log ORDER BY id")
            ]

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
