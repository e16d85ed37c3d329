"""Progress of one question while it is answered, so a page can say what is happening and cancel it.

The client names its request (`rid`, any 8-64 letters, digits, `-` or `_`); the route opens a `Progress` for it on the
`ProgressBoard` with `track`, and the service reports stages through `report` (a context variable carries the current
request's Progress, so the service's signatures stay as they are). `GET /api/progress/{rid}` reads it and
`POST /api/progress/{rid}/cancel` cancels the request: its scope is cancelled, so the decoding rows it holds leave the
batch (the batcher drops a cancelled waiter's row) and no database work starts after. Entries are per caller
(`owner`, the key): one key can neither read nor cancel another's requests, even with the right id.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

import anyio

RID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
STAGES = ("queued", "warming", "writing", "running", "candidates")


@dataclass
class Progress:
    stage: str = "queued"
    candidate: int = 0  # the candidate being judged, 1-based (execution-guided decoding)
    candidates: int = 0
    started: float = field(default_factory=time.monotonic)
    scope: anyio.CancelScope | None = None
    cancelled: bool = False

    def as_dict(self) -> dict:
        return {
            "stage": self.stage,
            "candidate": self.candidate,
            "candidates": self.candidates,
            "elapsed_ms": round((time.monotonic() - self.started) * 1000),
        }


_current: ContextVar[Progress | None] = ContextVar("progress", default=None)


def report(stage: str, candidate: int = 0, candidates: int = 0) -> None:
    """Record the current request's stage; a no-op for requests nobody tracks (the JSON API, tests)."""
    progress = _current.get()
    if progress is not None:
        progress.stage, progress.candidate, progress.candidates = stage, candidate, candidates


class ProgressBoard:
    """The requests being answered now that a client named, per owner. Entries live only while their request runs."""

    def __init__(self, max_entries: int = 10_000):
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str], Progress] = {}

    def get(self, owner: str, rid: str) -> Progress | None:
        return self._entries.get((owner, rid))

    def cancel(self, owner: str, rid: str) -> bool:
        progress = self._entries.get((owner, rid))
        if progress is None or progress.scope is None:
            return False
        progress.cancelled = True
        progress.scope.cancel()
        return True

    @contextlib.contextmanager
    def track(self, owner: str, rid: str | None) -> Iterator[Progress]:
        """Run the body as request `rid` of `owner`; a cancel ends the body early (check `.cancelled` after).

        Without a valid id, or when the id is in use, the body runs untracked (and cannot be cancelled by id)."""
        progress = Progress()
        key = (owner, rid or "")
        tracked = bool(rid and RID_RE.match(rid)) and key not in self._entries and len(self._entries) < self.max_entries
        token = _current.set(progress)
        try:
            with anyio.CancelScope() as scope:
                progress.scope = scope
                if tracked:
                    self._entries[key] = progress
                yield progress
        finally:
            _current.reset(token)
            if tracked:
                self._entries.pop(key, None)
