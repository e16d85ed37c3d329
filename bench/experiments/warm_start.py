"""The first question after a start, with and without the warm-up that reads the shared prompt into the model's
prefix cache (`WARM_PROMPT_PREFIX`, app.nl2sql.service.QueryService.warm), in one run on the served model.

    python -m bench.experiments.warm_start [--base qwen2.5-coder-1.5b] [--questions 3]

Three starts of a real server (`python -m app`, every other serving default on) on the demo database, each asked
the same business questions one after another: warm-up off (the first question reads the whole prompt itself);
on, and asked once the warm-up is done (a user who opens the page after the start); on, and asked the moment the
server is ready (the worst case: the question waits for the piece being read, then reads what is left). Writes
reports/bench/warm-start-<stamp>.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from app.core.config import DEMO_DB_PATH
from bench import REPORT_DIR, write_report
from bench.server import ServerProcess
from models.bases import BASES
from models.machine import busy, cpu, flags_text, load_average
from models.scenarios import load_suite

CASES = {
    "off": ({"WARM_PROMPT_PREFIX": "false"}, True),
    "on, asked after the warm-up": ({"WARM_PROMPT_PREFIX": "true"}, True),
    "on, asked at once": ({"WARM_PROMPT_PREFIX": "true"}, False),
}


def ask_all(url: str, questions: list[str]) -> list[float]:
    """Seconds per answer, asked one after another."""
    out = []
    with httpx.Client(base_url=url, timeout=600) as client:
        for q in questions:
            t0 = time.perf_counter()
            r = client.post("/query", json={"question": q})
            r.raise_for_status()
            out.append(round(time.perf_counter() - t0, 2))
    return out


def measure(base: str, questions: list[str], env: dict, wait_warm: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp), f"sqlite:///{DEMO_DB_PATH}", BASE_MODEL=base, **env)
        t0 = time.perf_counter()
        try:
            server.start(wait_warm=wait_warm)
            ready_s = time.perf_counter() - t0
            when_asked = httpx.get(f"{server.url}/readyz", timeout=10).json().get("prompt_warm_up")
            answers = ask_all(server.url, questions)
            log, peak = server.log_tail(20_000), server.peak_rss_mb()
        finally:
            server.kill()
    warm_line = next((line for line in log.splitlines() if "prompt prefix cached" in line), "")
    return {
        "ready_s": round(ready_s, 1),
        "warm_up_when_asked": when_asked,
        "answers_s": answers,
        "peak_rss_mb": round(peak) if peak else None,
        "warm_up_log": warm_line.strip()[-120:],
    }


def markdown(report: dict) -> str:
    lines = [
        "# The first question after a start: warm-up of the shared prompt off and on",
        "",
        f"{report['when']} · {report['cpu']['model']} · {report['cpu']['cores']} cores · {flags_text(report['cpu'])}"
        f" · base {report['base']} (int8, every other serving default) · demo database",
        "",
        "| warm-up | start to ready | warm-up when first asked | first question | the next ones (mean) | server peak RSS |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for name, r in report["cases"].items():
        rest = r["answers_s"][1:]
        mean = f"{sum(rest) / len(rest):.1f} s" if rest else "–"
        rss = f"{r['peak_rss_mb']} MB" if r.get("peak_rss_mb") else "–"
        lines.append(
            f"| {name} | {r['ready_s']:.1f} s | {r.get('warm_up_when_asked')} | {r['answers_s'][0]:.1f} s | {mean} "
            f"| {rss} |"
        )
    lines += [
        "",
        f"Questions, in order: {'; '.join(report['questions'])}. Start to ready: until `/readyz` answers 200, and "
        'for "asked after the warm-up" until it also says the warm-up is done. '
        + ("Other jobs ran meanwhile: " if report["busy"] else "The machine was otherwise idle: ")
        + f"load average {report['load_before']} before, {report['load_after']} after.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="qwen2.5-coder-1.5b", choices=list(BASES))
    p.add_argument("--questions", type=int, default=3)
    p.add_argument("--out-dir", type=Path, default=Path(REPORT_DIR))
    a = p.parse_args(argv)
    if not (BASES[a.base].onnx_dir / "int8" / "model.onnx").exists():
        print(f"not built: {a.base} (make model BASE={a.base})", file=sys.stderr)
        return 2
    if not DEMO_DB_PATH.exists():
        print(f"no demo database at {DEMO_DB_PATH} (make demo-db)", file=sys.stderr)
        return 2
    if not 1 <= a.questions <= 20:
        print("--questions: 1 to 20", file=sys.stderr)
        return 2
    questions = [c.question for c in load_suite()[:: 100 // a.questions][: a.questions]]
    load_before = load_average()
    cases = {name: measure(a.base, questions, env, wait) for name, (env, wait) in CASES.items()}
    load_after = load_average()
    report = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu(),
        "base": a.base,
        "questions": questions,
        "cases": cases,
        "load_before": load_before,
        "load_after": load_after,
        "busy": busy(load_before, load_after),
    }
    write_report(a.out_dir, "warm-start", report, markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
