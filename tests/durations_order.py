"""The heaviest test files first, so that two workers finish together.

`make test` runs two xdist workers that take whole files (`--dist loadfile`). xdist's default hands out the files with
the most tests first, whatever they cost: the end-to-end specialize test (4 tests, a quarter of the suite's time)
started near the end and the run waited for it alone. Here the files go out in the order of what they took last
time (tests/durations.json, seconds per file), the heaviest first: the longest-first rule, which keeps the finish
close to the total divided by the workers. A file not listed counts as the median; the order of tests inside a
file never changes. `make test` passes `--no-loadscope-reorder` so xdist keeps this order.

    make test PYTEST_ARGS=--record-durations=tests/durations.json     # after the suite changes shape
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

import pytest

DURATIONS = Path(__file__).with_name("durations.json")
_seconds: dict[str, float] = defaultdict(float)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-durations",
        metavar="PATH",
        default=None,
        help="write the seconds each test file took (setup, call and teardown) to PATH, for the next run's order",
    )


def file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def heaviest_first(items: list, known: dict[str, float]) -> list:
    """`items` with whole files ordered by their recorded seconds, heaviest first; ties and the tests inside a file
    keep their collection order."""
    default = statistics.median(known.values()) if known else 0.0
    first_seen: dict[str, int] = {}
    for i, item in enumerate(items):
        first_seen.setdefault(file_of(item.nodeid), i)
    rank = {f: (-known.get(f, default), i) for f, i in first_seen.items()}
    return sorted(items, key=lambda item: rank[file_of(item.nodeid)])


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if DURATIONS.exists():
        items[:] = heaviest_first(items, json.loads(DURATIONS.read_text()))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _seconds[file_of(report.nodeid)] += report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("record_durations")
    if not path or hasattr(session.config, "workerinput"):  # the controller writes, not each xdist worker
        return
    ordered = dict(sorted(((f, round(s, 1)) for f, s in _seconds.items()), key=lambda kv: -kv[1]))
    Path(path).write_text(json.dumps(ordered, indent=1) + "\n")
