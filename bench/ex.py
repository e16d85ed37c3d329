"""Execution accuracy of each benchmark engine on the same Spider dev questions (quantization impact).

Reuses models.evaluate (same items, prompts, judging, resumable JSONL and summary) with the benchmark's engines,
llama.cpp included. Results go to reports/eval/bench-<engine>-dev<N>-<stamp>.{jsonl,json,md}: the stamp is the
ONNX export's (adapter + export settings), so a finished run is reused until the model changes, and an interrupted
one resumes; a run on the base weights (llama.cpp on the base's GGUF as shipped) is named after the base. Engines
on the base weights get the few-shot prompts, as models.evaluate gives any base model.

    python -m bench.ex --engine onnx-int8 --limit 200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from app.nl2sql.generator import Generator
from bench import ROOT
from bench.child import run_json
from bench.engines import load, missing_reason, specs
from models.bases import get_base

OUT = ROOT / "reports" / "eval"


def stamp() -> str:
    try:
        return json.loads((get_base().onnx_dir / "fp32" / "querywise.json").read_text()).get("stamp", "")[:8]
    except (OSError, ValueError):
        return "nostamp"


def run_name(engine: str, limit: int) -> str:
    spec = specs()[engine]
    return f"bench-{engine}-dev{limit}-" + (get_base().name if spec.weights == "base" else stamp())


def summary_path(name: str, limit: int) -> Path | None:
    """reports/eval/<name>.json when that run has judged all `limit` questions."""
    path = OUT / f"{name}.json"
    try:
        return path if json.loads(path.read_text()).get("n") == limit else None
    except (OSError, ValueError):
        return None


def cached(engine: str, limit: int) -> dict | None:
    path = summary_path(run_name(engine, limit), limit)
    return json.loads(path.read_text()) if path else None


def evaluate_run(generator: Generator, name: str, limit: int, meta: dict, batch_size: int = 8) -> Path:
    """Run (or resume) `generator` on `limit` Spider dev questions spread evenly (as `models.evaluate --limit`),
    into reports/eval/<name>.{jsonl,json,md}; `meta` (engine, model_id) goes into the summary. Returns its path."""
    from models import evaluate as ev
    from models.data import SPIDER_DIR

    tables = SPIDER_DIR / "tables.json"
    items, missing = ev.spider_items(
        SPIDER_DIR / "dev.json", SPIDER_DIR / "database", tables if tables.exists() else None
    )
    available = len(items)
    items = [items[i * len(items) // limit] for i in range(limit)] if limit < len(items) else items
    OUT.mkdir(parents=True, exist_ok=True)
    jsonl = OUT / f"{name}.jsonl"
    t0 = time.time()
    ev.run(items, generator, jsonl, batch_size)
    note = f" of {available}, spread evenly" if len(items) < available else ""
    note += f"; {missing} skipped: database absent" if missing else ""
    meta = {"run": name, "dataset": str(SPIDER_DIR / "dev.json"), "note": note} | meta
    summary = ev.summarize(jsonl, meta | {"wall_s": round(time.time() - t0, 1)})
    (OUT / f"{name}.json").write_text(json.dumps(summary, indent=2))
    (OUT / f"{name}.md").write_text(ev.markdown(summary))
    return OUT / f"{name}.json"


def evaluate(engine: str, limit: int, batch_size: int = 8) -> dict:
    """Run (or resume) the evaluation of one engine in this process; returns the summary."""
    spec = specs()[engine]
    model_id = f"{spec.name} ({spec.weights}{', few-shot' if spec.weights == 'base' else ''})"
    meta = {"engine": spec.label, "model_id": model_id}
    return json.loads(evaluate_run(load(spec), run_name(engine, limit), limit, meta, batch_size).read_text())


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
            args = ["--engine", engine, "--limit", str(limit)]
            r = run_json("bench.ex", *args, timeout_s=timeout_s, on_timeout=" (resumes on the next run)")
            hit = cached(engine, limit)
            if "error" in r or hit is None:
                out[engine] = {"error": r.get("error", "finished without a summary")}
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
    print(json.dumps({k: s[k] for k in ("run", "n", "ex")}))  # the last line, for run_all's child.run_json
    return 0


if __name__ == "__main__":
    sys.exit(main())
