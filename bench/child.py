"""Run one benchmark stage in a fresh process (its own ONNX Runtime session, arena and peak RSS) and read back the
JSON it prints (all of stdout, or its last line after progress lines); a failure or a timeout becomes
{"error": ...} instead of an exception."""

from __future__ import annotations

import json
import subprocess
import sys

from bench import ROOT


def run_json(module: str, *args: str, timeout_s: float = 600, on_timeout: str = "") -> dict:
    """`python -m module args`: the JSON it printed, or {"error": ...} with the tail of what it printed."""
    cmd = [sys.executable, "-m", module, *args]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s{on_timeout}"}
    if proc.returncode != 0:
        return {"error": " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])[-500:]}
    out = proc.stdout.strip()
    try:
        return json.loads(out)  # a stage that prints only its (indented) result
    except ValueError:
        return json.loads(out.splitlines()[-1])  # progress lines first, the result last
