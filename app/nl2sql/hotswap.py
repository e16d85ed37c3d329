"""Hot swap: load an exported model next to the served one and serve it from the next step boundary, no restart.

An export is a directory `models.export` wrote (model.onnx, tokenizer.json, querywise.json with the model id).
Only directories under `MODEL_EXPORTS_DIR` (build/onnx) are loaded: an admin key names a path, and the server must
not open whatever file it is pointed at. The new session is built in a worker thread (seconds, on the CPU that also
serves), then `QueryService.swap_model` switches; the old model stays loaded for a rollback.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from anyio import to_thread

from app.core.config import ROOT
from app.nl2sql.engine import ModelLoadError, OnnxGenerator


class ModelPathError(ValueError):
    """A path that is not a loadable export under the exports directory; the message is for the caller."""


def export_dir(path: str, root: Path) -> Path:
    """`path` (absolute, or relative to the project) resolved, if it is an export directory inside `root`."""
    if not path or len(path) > 1000 or "\x00" in path:
        raise ModelPathError("path: give the export directory, e.g. build/onnx/<base>/specialized-<timestamp>/int8")
    p = Path(path)
    resolved = (p if p.is_absolute() else ROOT / p).resolve()  # symlinks and .. resolved before the check
    allowed = Path(root).resolve()
    if not resolved.is_relative_to(allowed):
        raise ModelPathError(f"path: only exports under {allowed} can be loaded")
    if any(part.startswith(".") for part in resolved.relative_to(allowed).parts):
        raise ModelPathError("path: a hidden directory is a run's temporary export, still being written")
    missing = [f for f in ("model.onnx", "tokenizer.json") if not (resolved / f).is_file()]
    if missing:
        raise ModelPathError(f"path: {resolved} is not an export (no {', '.join(missing)})")
    return resolved


async def load(path: Path, threads: int = 0, prefix_cache_entries: int = 4) -> OnnxGenerator:
    """The export as a generator, built off the event loop. Raises ModelLoadError for an unreadable model."""
    return await to_thread.run_sync(OnnxGenerator, path, threads, prefix_cache_entries)


class ModelBusy(Exception):
    """Another model is being loaded or swapped in."""


class Swapper:
    """One load or rollback at a time (each holds a whole model in memory while it builds)."""

    def __init__(self, service, threads: int = 0, prefix_cache_entries: int = 4):
        self.service, self.threads, self.prefix_cache_entries = service, threads, prefix_cache_entries
        self._lock = asyncio.Lock()

    async def load_path(self, path: Path) -> None:
        """Load the export at `path` (already checked) and serve it. Raises ModelBusy, ModelLoadError."""
        if self._lock.locked():
            raise ModelBusy("A model is being loaded right now: wait for it, then try again.")
        async with self._lock:
            generator = await load(path, self.threads, self.prefix_cache_entries)
            await self.service.swap_model(generator)

    async def rollback(self) -> bool:
        """Serve the model from before the last swap; False when there is none."""
        if self._lock.locked():
            raise ModelBusy("A model is being loaded right now: wait for it, then try again.")
        async with self._lock:
            return await self.service.rollback() is not None


def describe(generator: OnnxGenerator | None) -> dict | None:
    if generator is None:
        return None
    m = generator.manifest
    return {
        "model_id": generator.model_id,
        "model_dir": str(generator.model_dir),
        "quantization": m.get("quantization"),
    }


__all__ = ["ModelBusy", "ModelLoadError", "ModelPathError", "Swapper", "describe", "export_dir", "load"]
