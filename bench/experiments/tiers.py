"""The served model of each base side by side, as a user meets it: real servers (`python -m app`, every serving
default on) at one client, on the demo database's business questions and on the median Spider database, with the
server's peak RSS, in one run (so the ratios hold on this noisy machine).

    python -m bench.experiments.tiers --bases qwen2.5-coder-0.5b qwen2.5-coder-1.5b --requests 32

Writes reports/bench/tiers-<stamp>.{json,md}. Each base is measured through `bench.http_sweep` with BASE_MODEL set
to it (its int8 export, `make model BASE=...`).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime

from app.core.config import get_settings
from bench import REPORT_DIR, http_sweep, write_report
from models.bases import BASES
from models.export import onnx_size, read_manifest
from models.machine import cpu, flags_text


def measure(base: str, requests: int, spider_requests: int) -> dict:
    os.environ["BASE_MODEL"] = base  # targets() and the servers read it
    get_settings.cache_clear()
    out = http_sweep.sweep(["onnx-int8"], [1], requests, spider_requests)
    model_dir = BASES[base].onnx_dir / "int8"
    info = read_manifest(model_dir) or {}
    return out | {
        "model_id": info.get("model_id"),
        "quantization": info.get("quantization"),
        "size_mb": round(onnx_size(model_dir) / 1e6),
    }


def markdown(report: dict) -> str:
    lines = [
        "# Served models side by side (one client)",
        "",
        f"{report['when']} · {report['cpu']['model']} · {report['cpu']['cores']} cores · {flags_text(report['cpu'])}",
        "",
        "| base | model | size | demo business p50 / p95 | median Spider DB p50 / p95 | server peak RSS |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for base, r in report["bases"].items():
        t = r["targets"].get("onnx-int8", {})
        lvl = (t.get("levels") or [{}])[0]
        sp = r.get("spider_c1") or {}
        lines.append(
            f"| {base} | {r.get('model_id')} | {r.get('size_mb')} MB | {lvl.get('p50_ms', 0):.0f} / "
            f"{lvl.get('p95_ms', 0):.0f} ms | {sp.get('p50_ms', 0):.0f} / {sp.get('p95_ms', 0):.0f} ms | "
            f"{t.get('server_peak_rss_mb', 0):.0f} MB |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bases", nargs="+", default=list(BASES), choices=list(BASES))
    p.add_argument("--requests", type=int, default=32, help="business questions at one client")
    p.add_argument("--spider-requests", type=int, default=45, help="questions on the median Spider database")
    a = p.parse_args(argv)
    missing = [b for b in a.bases if not (BASES[b].onnx_dir / "int8" / "model.onnx").exists()]
    if missing:
        print(f"not built: {', '.join(missing)} (make model BASE=...)", file=sys.stderr)
        return 2
    report = {"when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu(), "bases": {}}
    for base in a.bases:
        print(f"== {base}", flush=True)
        report["bases"][base] = measure(base, a.requests, a.spider_requests)
    write_report(REPORT_DIR, "tiers", report, markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
