"""Benchmarks kept as tools: `python -m bench` (`make bench`, engines side by side, HTTP sweep, EX per engine) and
`python -m bench.load` (`make load`, the overload test), with what they share: the server launcher
(bench.server), the memory reader (bench.memory) and child processes that report JSON (bench.child).
One-off studies that informed the engine (quantization variants, session settings, KV binding, ...) are in
bench.experiments.
"""

import json
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT_DIR = ROOT / "reports" / "bench"


def write_report(out_dir: Path, name: str, report: dict, markdown: str) -> Path:
    """`<name>-<UTC minute>.json` and `.md` in `out_dir` (made if missing); returns the markdown's path."""
    stem = Path(out_dir) / f"{name}-{datetime.now(UTC).strftime('%Y%m%dT%H%M')}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    stem.with_suffix(".md").write_text(markdown)
    return stem.with_suffix(".md")
