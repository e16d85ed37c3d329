"""The suite's own scheduling (`durations_order`): whole files ordered heaviest first, tests inside a file untouched,
an unlisted file counted as the median; and a run with --record-durations writes what each file took."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from durations_order import heaviest_first

ROOT = Path(__file__).resolve().parents[1]


def test_files_go_heaviest_first_and_keep_their_own_order():
    items = [SimpleNamespace(nodeid=n) for n in ("a.py::1", "a.py::2", "b.py::1", "c.py::1", "c.py::2", "d.py::1")]
    known = {"a.py": 1.0, "b.py": 50.0, "c.py": 10.0}  # d.py is new: the median, 10, and after c.py (seen first)
    order = [i.nodeid for i in heaviest_first(items, known)]
    assert order == ["b.py::1", "c.py::1", "c.py::2", "d.py::1", "a.py::1", "a.py::2"]
    assert [i.nodeid for i in heaviest_first(items, {})] == [i.nodeid for i in items]


def test_a_recorded_run_writes_seconds_per_file(tmp_path):
    out = tmp_path / "durations.json"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--record-durations={out}",
           "tests/test_durations_order.py::test_files_go_heaviest_first_and_keep_their_own_order"]  # fmt: skip
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    recorded = json.loads(out.read_text())
    assert list(recorded) == ["tests/test_durations_order.py"] and recorded["tests/test_durations_order.py"] >= 0
