"""`models.prepare` on the command line: a bad `--limit` is refused with a message and exit 2, nothing written.
(The whole stage, with `--limit`, runs in tests/models/test_pipeline.py.)"""

import subprocess
import sys


def test_a_negative_limit_is_refused_with_a_message(tmp_path):
    out = tmp_path / "data"
    r = subprocess.run(
        [sys.executable, "-m", "models.prepare", "--limit", "-3", "--out-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "--limit -3: a number of examples, 0 for all" in r.stderr
    assert "Traceback" not in r.stderr and not out.exists()
