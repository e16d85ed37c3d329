"""Benchmarks kept as tools: `python -m bench` (`make bench`, engines side by side, HTTP sweep, EX per engine) and
`python -m bench.load` (`make load`, the overload test), with what they share: the server launcher
(bench.server), the memory reader (bench.memory) and child processes that report JSON (bench.child).
One-off studies that informed the engine (quantization variants, session settings, KV binding, ...) are in
bench.experiments.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT_DIR = ROOT / "reports" / "bench"
