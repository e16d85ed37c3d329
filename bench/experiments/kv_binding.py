"""KV cache between decode steps: the cost of one step with the numpy feed path, with IO binding, and with the
attention graph that broadcasts K/V over query-head groups instead of copying them (models.attention_graph).

    python -m bench.experiments.kv_binding                          # fp32 model; batch 1 and 8; ~150 and ~600 tokens
    python -m bench.experiments.kv_binding --steps 16 --repeats 1   # quicker
    python -m bench.experiments.kv_binding --model-dir build/onnx/int8

Paths, all in one process on the same prompts:
- `feed`: `session.run` with numpy feeds, the exported graph (the engine before this change);
- `iobind`: IO binding (the KV OrtValues of a step bound as the next step's past, logits into a kept buffer);
- `iobind+bcast`: IO binding on the rewritten graph (built once into build/bench/attention-bcast/).

Per context (Spider prompts of ~150 tokens, and of ~600 from the larger training schemas, made by the shared prompt
builder as bench.engines makes them) and batch size, every path adds the same prompts (prefix cache warm after the
first pass, so a re-add prefills one token) and runs exactly --steps decode steps (stop tokens ignored). Each step
is timed, and the time inside ONNX Runtime is told apart from the Python around it. Paths alternate (A B C, then
C B A, ...) so drift on this shared machine hits them alike; ratios against `feed` are the headline. The generated
tokens must be identical on every path. Peak RSS is per path and configuration: VmHWM is reset before its runs.
Writes reports/bench/kv-binding-<timestamp>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import onnxruntime as ort

from app.core.config import BUILD_DIR
from app.nl2sql.engine import DecodeBatch, OnnxGenerator
from app.nl2sql.prompt import build_prompt, format_schema
from bench import REPORT_DIR, memory
from models.bases import get_base

BCAST_DIR = BUILD_DIR / "bench" / "attention-bcast"
CONTEXTS = {"short": (120, 190), "long": (540, 700)}  # prompt tokens accepted for each context


def pick_prompts(gen: OnnxGenerator, per_context: int) -> dict[str, list[str]]:
    """Spider questions whose served prompt falls in each context's token window, several schemas each: dev
    questions for the short context; the larger training schemas (dev has none near 600 tokens) for the long."""
    from models.data import SPIDER_DIR, schema_at
    from models.evaluate import spider_items

    tables = SPIDER_DIR / "tables.json"
    sources = {"short": SPIDER_DIR / "dev.json", "long": SPIDER_DIR / "train_spider_lite.json"}
    chosen: dict[str, list[str]] = {}
    for ctx, (lo, hi) in CONTEXTS.items():
        if not sources[ctx].exists():
            raise SystemExit(f"Spider is not available at {SPIDER_DIR} (needs {sources[ctx].name})")
        items, _ = spider_items(sources[ctx], SPIDER_DIR / "database", tables if tables.exists() else None)
        schemas: dict[str, str | None] = {}
        per_db: dict[str, list[str]] = {}
        for it in items:
            db = it["db_id"]
            if db not in schemas:
                text = format_schema(schema_at(it["db_path"]))
                n = gen.count_tokens(build_prompt(text, it["question"], ()))
                schemas[db] = text if lo - 20 <= n <= hi else None  # the question moves the length a little
            if schemas[db] is None or len(per_db.get(db, [])) >= per_context:
                continue
            prompt = build_prompt(schemas[db], it["question"], ())
            if lo <= gen.count_tokens(prompt) <= hi:
                per_db.setdefault(db, []).append(prompt)
        # round-robin over the schemas, so a batch mixes lengths as the service's batches do
        pools = list(per_db.values())
        picked = [pool[i] for i in range(per_context) for pool in pools if i < len(pool)]
        if len(picked) < per_context:
            raise SystemExit(f"only {len(picked)} Spider prompts of {lo}-{hi} tokens for the {ctx} context")
        chosen[ctx] = picked[:per_context]
    return chosen


def bcast_model(src: Path) -> Path:
    """The rewritten graph of `src`, built once (rebuilt when the source model changes)."""
    from models.attention_graph import rewrite_dir

    dst = BCAST_DIR / src.name
    stat = (src / "model.onnx").stat()
    stamp = {"source": str(src.resolve()), "size": stat.st_size, "mtime": stat.st_mtime}
    stamp_file = dst / "bcast-source.json"
    if not (stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp and (dst / "model.onnx").exists()):
        print(f"rewriting {src} → {dst} (models.attention_graph) ...", flush=True)
        rewrite_dir(src, dst)
        stamp_file.write_text(json.dumps(stamp))
    return dst


class _OrtClock:
    """Stands in for the session (OnnxGenerator's `wrap_session`) and adds up the time spent inside ONNX Runtime."""

    def __init__(self, session: ort.InferenceSession):
        self._session, self.seconds = session, 0.0

    def run(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self._session.run(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0

    def run_with_iobinding(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self._session.run_with_iobinding(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0

    def __getattr__(self, name):
        return getattr(self._session, name)


def decode(gen: OnnxGenerator, prompts: list[str], steps: int, io_binding: bool) -> tuple[list, list, list[str]]:
    """Prefill `prompts` into one batch, then exactly `steps` decode steps on the path `io_binding` names: each
    step's wall and ORT seconds, and the texts (for the identity check). `gen` runs its session through _OrtClock."""
    clock: _OrtClock = gen.session
    batch, texts = DecodeBatch(gen, ignore_stop=True, io_binding=io_binding), {}
    for i, p in enumerate(prompts):
        batch.add(i, p, steps + 1)  # the first token comes from the prefill
    wall, inside = [], []
    while len(batch):
        clock.seconds = 0.0
        t0 = time.perf_counter()
        texts |= batch.step()
        wall.append(time.perf_counter() - t0)
        inside.append(clock.seconds)
    return wall, inside, [texts[i].text for i in range(len(prompts))]


def run(model_dir: Path, steps: int, repeats: int, batches: list[int], threads: int, bcast: bool) -> dict:
    t0 = time.perf_counter()
    entries = 2 * max(batches)
    base = OnnxGenerator(model_dir, threads, prefix_cache_entries=entries, wrap_session=_OrtClock)
    gens = {"feed": base, "iobind": base}
    if bcast and base.manifest.get("attention"):  # exports carry the rewrite now (models/export.py)
        print(f"{model_dir} already runs the rewritten attention: no separate iobind+bcast path", flush=True)
        bcast = False
    if bcast:
        gens["iobind+bcast"] = OnnxGenerator(
            bcast_model(model_dir), threads, prefix_cache_entries=entries, wrap_session=_OrtClock
        )
    load_s = time.perf_counter() - t0
    prompts = pick_prompts(base, max(batches))
    for name, gen in gens.items():  # warm-up: kernel selection, arena growth, the prefix cache
        for ctx in prompts:
            decode(gen, prompts[ctx][: max(batches)], 2, io_binding=name != "feed")
    paths = list(gens)
    results = []
    for ctx, ctx_prompts in prompts.items():
        for B in batches:
            ps = ctx_prompts[:B]
            acc = {p: {"wall": [], "ort": [], "texts": None, "peak": 0.0, "growth": 0.0} for p in paths}
            for r in range(repeats):
                for path in paths if r % 2 == 0 else paths[::-1]:
                    rss0 = memory.rss_mb()
                    memory.reset_peak_rss()
                    wall, inside, texts = decode(gens[path], ps, steps, io_binding=path != "feed")
                    a = acc[path]
                    peak = memory.peak_rss_mb()
                    a["peak"], a["growth"] = max(a["peak"], peak), max(a["growth"], peak - rss0)
                    a["wall"] += wall
                    a["ort"] += inside
                    if a["texts"] is None:
                        a["texts"] = texts
                    elif a["texts"] != texts:
                        a["texts_vary"] = True
            ref = acc["feed"]
            for path in paths:
                a = acc[path]
                step_ms = statistics.median(a["wall"]) * 1000
                ort_ms = statistics.median(a["ort"]) * 1000
                py = [w - o for w, o in zip(a["wall"], a["ort"], strict=True)]
                results.append(
                    {
                        "context": ctx,
                        "prompt_tokens": round(statistics.mean(base.count_tokens(p) for p in ps)),
                        "batch": B,
                        "path": path,
                        "step_ms": round(step_ms, 2),
                        "ort_ms": round(ort_ms, 2),
                        "python_ms": round(statistics.median(py) * 1000, 3),
                        "tok_s": round(B / (step_ms / 1000), 1),
                        "speedup_vs_feed": round(statistics.median(ref["wall"]) * 1000 / step_ms, 3),
                        "identical_to_feed": a["texts"] == ref["texts"] and not a.get("texts_vary"),
                        "peak_rss_mb": round(a["peak"], 1),
                        "peak_rss_growth_mb": round(a["growth"], 1),
                        "steps_timed": len(a["wall"]),
                    }
                )
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "model_dir": str(model_dir),
        "onnxruntime": ort.__version__,
        "threads": threads or os.cpu_count(),
        "steps": steps,
        "repeats": repeats,
        "load_s": round(load_s, 1),
        "prompts": {ctx: len(ps) for ctx, ps in prompts.items()},
        "results": results,
    }


def table(report: dict) -> str:
    head = (
        "| context | prompt tokens | batch | path | step ms | in ORT ms | Python ms | tok/s | × vs feed | identical "
        "| peak RSS MB | RSS growth MB |\n"
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---:|\n"
    )
    rows = [
        f"| {r['context']} | {r['prompt_tokens']} | {r['batch']} | {r['path']} | {r['step_ms']:.1f} | {r['ort_ms']:.1f} "
        f"| {r['python_ms']:.2f} | {r['tok_s']:.1f} | {r['speedup_vs_feed']:.2f} | {'yes' if r['identical_to_feed'] else 'NO'} "
        f"| {r['peak_rss_mb']:.0f} | {r['peak_rss_growth_mb']:.0f} |"
        for r in report["results"]
    ]
    return head + "\n".join(rows) + "\n"


def markdown(report: dict) -> str:
    return (
        f"# KV cache between decode steps ({report['date']})\n\n"
        f"Model `{report['model_dir']}`, onnxruntime {report['onnxruntime']}, {report['threads']} threads, "
        f"{report['steps']} forced decode steps per run × {report['repeats']} repeats per path (alternating order); "
        "medians over steps. `× vs feed` is the step-time ratio against the numpy feed path in the same run "
        "(the headline: the machine is shared and absolute times drift). `identical`: the same tokens as `feed`. "
        "Peak RSS is the process's (both graphs loaded when `iobind+bcast` runs); RSS growth is the peak during the "
        "path's runs over the RSS before them.\n\n" + table(report)
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=get_base().onnx_dir / "fp32")
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, default=0, help="0 = all cores")
    p.add_argument("--no-bcast", action="store_true", help="leave out the rewritten attention graph")
    a = p.parse_args()
    if not (a.model_dir / "model.onnx").exists():
        print(f"no model at {a.model_dir}: run `make model`", file=sys.stderr)
        return 2
    report = run(a.model_dir, a.steps, a.repeats, sorted(a.batch), a.threads, not a.no_bcast)
    print(table(report))
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    stem = REPORT_DIR / f"kv-binding-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {stem}.json and .md")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
