"""A missing or corrupt model artifact: `python -m app` refuses to start, with one line on stderr and no traceback."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests_support import MODEL_DIR

ROOT = Path(__file__).resolve().parents[2]


def _start(model_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "MODEL_DIR": str(model_dir),
        "AUTH_DISABLED": "1",
        "QUERYLOG_URL": f"sqlite:///{tmp_path / 'querylog.sqlite'}",
        "PORT": "9",  # never reached: the process must stop before it serves
        "HF_HUB_OFFLINE": "1",
    }
    return subprocess.run([sys.executable, "-m", "app"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def _model_copy(tmp_path: Path, onnx_bytes: bytes | None) -> Path:
    """The small files of the real model next to a fake (or no) model.onnx."""
    d = tmp_path / "model"
    d.mkdir()
    for f in MODEL_DIR.iterdir():
        if f.name != "model.onnx" and f.is_file():
            shutil.copy(f, d / f.name)
    if onnx_bytes is not None:
        (d / "model.onnx").write_bytes(onnx_bytes)
    return d


@pytest.mark.slow  # copies the real export's files
@pytest.mark.parametrize(
    ("onnx", "fragment"),
    [
        pytest.param(None, "no model at", id="missing"),
        pytest.param(b"this is not an ONNX graph\x00\xff" * 100, "cannot load the model", id="garbage"),
        pytest.param(b"", "cannot load the model", id="empty"),
    ],
)
def test_broken_model_refuses_to_start_in_one_line(tmp_path, onnx, fragment):
    proc = _start(_model_copy(tmp_path, onnx), tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("querywise: cannot start:") and fragment in lines[0], lines[0]
    assert "Uvicorn running" not in proc.stderr + proc.stdout


@pytest.mark.slow
def test_truncated_model_refuses_to_start(tmp_path):
    """The first megabyte of the real file: a plausible header, a graph cut short (a copy that did not finish)."""
    with (MODEL_DIR / "model.onnx").open("rb") as f:
        head = f.read(1 << 20)
    proc = _start(_model_copy(tmp_path, head), tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and "cannot load the model" in lines[0], proc.stderr


@pytest.mark.slow
def test_missing_tokenizer_refuses_to_start(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    os.symlink(MODEL_DIR / "model.onnx", d / "model.onnx")
    proc = _start(d, tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and "cannot load the model" in lines[0], proc.stderr


def test_query_log_in_the_users_database_refuses_to_start(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    env = {**os.environ, "DATABASE_URL": url, "QUERYLOG_URL": url, "AUTH_DISABLED": "1", "PORT": "9"}
    proc = subprocess.run([sys.executable, "-m", "app"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert "QUERYLOG_URL must not be DATABASE_URL" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "shared.sqlite").exists()
