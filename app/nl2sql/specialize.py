"""Specialize runs started from the server (admin button, `POST /api/specialize`): `python -m models.specialize` in
a separate process, `nice`d, so training shares the CPU with serving but never runs inside the server.

One run per base at a time: a second start while one runs (here, or one started from the command line, which holds
the lock file in the runs directory) is refused (`AlreadyRunning`, 409). The run writes `status.json` and `log.txt`
in its directory; `status()` reads them (stage, percent, the log's tail). When a run publishes, the server loads the
new export and swaps to it (`on_published`). The child gets its settings through the environment, not its command
line (a database URL may carry a password, and command lines are visible to every local user).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from anyio import to_thread

from app.core.config import ROOT, Settings

log = logging.getLogger("querywise")
LOG_TAIL_BYTES = 4000
POLL_S = 1.0


class AlreadyRunning(Exception):
    """A specialize run is in progress; the message says which."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    """The end of a log, from a line start; carriage-return progress redraws kept as their last state."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    if size > limit and "\n" in text:
        text = text.split("\n", 1)[1]
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.splitlines())


class SpecializeRunner:
    def __init__(self, settings: Settings, on_published: Callable[[Path], Awaitable[None]]):
        self.settings = settings
        self.root = Path(settings.specialize_dir) / settings.base_model
        self.on_published = on_published
        self.proc: subprocess.Popen | None = None
        self.run_dir: Path | None = None
        self.started_by: str | None = None
        self.swap: dict | None = None  # what happened after the run published: swapped, or the error
        self._watch: asyncio.Task | None = None

    def _lock_holder(self) -> int | None:
        """The pid holding the runs' lock (a run started here or from the command line), if it is alive."""
        try:
            pid = int((self.root / "lock").read_text().strip() or 0)
        except (OSError, ValueError):
            return None
        return pid if pid > 0 and _alive(pid) else None

    @property
    def running(self) -> bool:
        return (self.proc is not None and self.proc.poll() is None) or self._lock_holder() is not None

    def start(self, current_model_dir: Path, started_by: str) -> dict:
        if self.running:
            holder = self._lock_holder()
            raise AlreadyRunning(
                "A specialize run is already in progress"
                + (f" (process {holder})" if holder else "")
                + ": wait for it to finish."
            )
        run_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        run_dir = self.root / run_id
        n = 1
        while run_dir.exists():  # a run that failed within the same second
            n += 1
            run_dir = self.root / f"{run_id}-{n}"
        run_dir.mkdir(parents=True)
        s = self.settings
        env = os.environ | {
            "DATABASE_URL": s.database_url,
            "QUERYLOG_URL": s.querylog_url,
            "BASE_MODEL": s.base_model,
            "MODEL_DIR": str(current_model_dir),
            "MODEL_EXPORTS_DIR": str(s.model_exports_dir),
            "PYTHONUNBUFFERED": "1",
        }
        cmd = [sys.executable, "-m", "models.specialize", str(s.specialize_preset), f"--run_dir={run_dir}"]
        if s.specialize_nice and (nice := shutil.which("nice")):  # serving keeps priority over training
            cmd = [nice, "-n", str(s.specialize_nice), *cmd]
        with (run_dir / "log.txt").open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        self.run_dir, self.started_by, self.swap = run_dir, started_by, None
        log.info("specialize run %s started by %s (pid %d)", run_dir.name, started_by, self.proc.pid)
        self._watch = asyncio.get_running_loop().create_task(self._follow(self.proc, run_dir), name="specialize")
        return self.status()

    async def _follow(self, proc: subprocess.Popen, run_dir: Path) -> None:
        while proc.poll() is None:
            await asyncio.sleep(POLL_S)
        st = _read_json(run_dir / "status.json")
        log.info("specialize run %s ended: %s (exit %s)", run_dir.name, st.get("state", "?"), proc.returncode)
        if st.get("state") == "published" and st.get("export_dir"):
            try:
                await self.on_published(Path(st["export_dir"]))
                self.swap = {"swapped": True, "model_id": st.get("model_id")}
            except Exception as exc:  # the run is published all the same: an operator can load it by path
                log.exception("loading the specialized model failed")
                self.swap = {"swapped": False, "error": str(exc)[:300]}

    def _latest(self) -> Path | None:
        if self.run_dir is not None:
            return self.run_dir
        runs = sorted(d for d in self.root.glob("*") if d.is_dir()) if self.root.exists() else []
        return runs[-1] if runs else None

    def status(self) -> dict:
        """The latest run (this server's, else the newest on disk): state, stage, percent, message, log tail."""
        run_dir = self._latest()
        if run_dir is None:
            return {"state": "none", "running": self.running, "message": "No specialize run yet."}
        st = _read_json(run_dir / "status.json")
        rc = self.proc.poll() if self.proc is not None and run_dir == self.run_dir else None
        state = st.get("state", "starting")
        if state in ("running", "starting") and rc is not None:
            state, st["message"] = "failed", f"the run exited with status {rc}: see its log"
        elif state in ("running", "starting") and self.proc is None and self._lock_holder() is None:
            state = "interrupted"  # from before a restart, its process gone
        report = st.get("report") or {}
        return {
            "run_id": run_dir.name,
            "state": state,
            "running": self.running,
            "stage": st.get("stage"),
            "percent": st.get("percent", 0),
            "message": st.get("message"),
            "model_id": st.get("model_id"),
            "export_dir": st.get("export_dir"),
            "evaluation": report.get("evaluation"),
            "rule": report.get("rule"),
            "started_at": st.get("started_at"),
            "started_by": self.started_by if run_dir == self.run_dir else None,
            "exit_code": rc,
            "swap": self.swap if run_dir == self.run_dir else None,
            "log_tail": tail(run_dir / "log.txt"),
        }

    async def stop(self) -> None:
        """At server shutdown: the run stops too (its temp export is removed; nothing half-written is left)."""
        if self._watch is not None:
            self._watch.cancel()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                await to_thread.run_sync(proc.wait, 20)
            except subprocess.TimeoutExpired:
                proc.kill()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            if self._watch is not None:
                await self._watch
