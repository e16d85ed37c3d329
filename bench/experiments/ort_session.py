"""ONNX Runtime session settings for the served model, side by side: threads, spinning, graph optimizations,
execution mode. Which one is fastest on this CPU, and does any of them change an answer?

Each variant runs in its own process (a fresh session, its own arena), in two rounds that alternate the variants so
drift on a shared machine hits them all; the median of the two is kept. Measured per variant: prefill of the
median-length prompt (prefix cache off), one decode step at batch 1 and at batch 8 (8 different prompts), and the
greedy answers to those 8 prompts, compared with the served settings' answers.

    python -m bench.experiments.ort_session             # → reports/bench/ort-session-<date>.{json,md}
    python -m bench.experiments.ort_session --variants served threads-1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench import REPORT_DIR
from bench.child import run_json
from models.bases import get_base


@dataclass(frozen=True)
class Variant:
    name: str
    note: str
    threads: int = 0  # intra-op threads; 0 = onnxruntime's default (one per core)
    optimization: str = "ORT_ENABLE_ALL"
    parallel: bool = False  # ORT_PARALLEL execution mode (inter-op threads run independent nodes together)
    config: dict[str, str] = field(default_factory=dict)  # session config entries


VARIANTS = [
    Variant("served", "what app.nl2sql.engine builds: all cores, ORT_ENABLE_ALL, sequential"),
    Variant("threads-1", "one intra-op thread", threads=1),
    Variant("no-spin", "worker threads sleep instead of spinning between kernels",
            config={"session.intra_op.allow_spinning": "0"}),
    Variant("opt-extended", "graph optimizations up to EXTENDED (no layout optimizations)",
            optimization="ORT_ENABLE_EXTENDED"),
    Variant("opt-basic", "BASIC graph optimizations only (constant folding, redundant nodes)",
            optimization="ORT_ENABLE_BASIC"),
    Variant("opt-off", "no graph optimization", optimization="ORT_DISABLE_ALL"),
    Variant("parallel", "ORT_PARALLEL execution mode, 2 inter-op threads", parallel=True),
]  # fmt: skip
BY_NAME = {v.name: v for v in VARIANTS}


def session_options(v: Variant):
    import onnxruntime as ort

    from app.nl2sql.engine import served_session_options

    opts = served_session_options(v.threads)  # the engine's, threads included (the ORT_THREADS setting unless set)
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, v.optimization)
    opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL if v.parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    if v.parallel:
        opts.inter_op_num_threads = 2
    for key, value in v.config.items():
        opts.add_session_config_entry(key, value)
    return opts


def measure(v: Variant, model_dir: Path, n_prompts: int = 8, steps: int = 20, new_tokens: int = 48) -> dict:
    """In this process: the served generator on the variant's session; speed and answers."""
    from app.nl2sql.engine import DecodeBatch, OnnxGenerator
    from bench.engines import bench_prompts

    t0 = time.perf_counter()
    gen = OnnxGenerator(model_dir, prefix_cache_entries=0, session_options=session_options(v))
    load_s = time.perf_counter() - t0
    prompts = [p["prompt"] for p in bench_prompts(n_prompts, 0)]
    median_prompt = sorted(prompts, key=gen.count_tokens)[len(prompts) // 2]
    answers = [g.text for g in gen.generate(prompts, new_tokens)]  # also the warm-up

    def prefill_ms() -> float:
        ids = gen.tokenizer.encode(median_prompt, add_special_tokens=False).ids
        t = time.perf_counter()
        gen.prefill(ids)
        return (time.perf_counter() - t) * 1000

    def step_ms(batch: list[str]) -> float:
        rows = DecodeBatch(gen, ignore_stop=True)  # every row keeps decoding for the whole measurement
        for i, p in enumerate(batch):
            rows.add(i, p, steps + 4)
        times = []
        for _ in range(steps + 2):
            t = time.perf_counter()
            rows.step()
            times.append((time.perf_counter() - t) * 1000)
        return statistics.median(times[2:])

    return {
        "load_s": round(load_s, 2),
        "prefill_ms": round(statistics.median(prefill_ms() for _ in range(3)), 1),
        "prompt_tokens": gen.count_tokens(median_prompt),
        "step_b1_ms": round(step_ms([median_prompt]), 2),
        "step_b8_ms": round(step_ms(prompts), 2),
        "answers": answers,
    }


def run(variants: list[Variant], model_dir: Path, rounds: int = 2) -> dict:
    runs: dict[str, list[dict]] = {v.name: [] for v in variants}
    for r in range(rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for v in order:
            runs[v.name].append(
                run_json("bench.experiments.ort_session", "--one", v.name, "--model-dir", str(model_dir), timeout_s=900)
            )
            print(f"  round {r + 1}: {v.name}: {_brief(runs[v.name][-1])}", flush=True)
    served = next((x for x in runs.get("served", []) if "answers" in x), None)
    rows = []
    for v in variants:
        ok = [x for x in runs[v.name] if "error" not in x]
        row: dict = asdict(v)
        if not ok:
            rows.append(row | {"error": runs[v.name][-1].get("error")})
            continue
        for k in ("load_s", "prefill_ms", "step_b1_ms", "step_b8_ms"):
            row[k] = round(statistics.median(x[k] for x in ok), 2)
            row[f"{k}_runs"] = [x[k] for x in ok]
        row["prompt_tokens"] = ok[0]["prompt_tokens"]
        if served:
            same = sum(a == b for a, b in zip(ok[0]["answers"], served["answers"], strict=True))
            row["same_answers"] = f"{same}/{len(served['answers'])}"
        rows.append(row)
    return {"variants": rows}


def _brief(x: dict) -> str:
    if "error" in x:
        return f"error: {x['error']}"
    return f"prefill {x['prefill_ms']:.0f} ms · step b1 {x['step_b1_ms']:.1f} ms · step b8 {x['step_b8_ms']:.1f} ms"


def markdown(result: dict) -> str:
    rows = result["variants"]
    base = next((r for r in rows if r["name"] == "served" and "prefill_ms" in r), None)

    def ratio(r: dict, k: str) -> str:  # > 1: faster than served
        return f"{base[k] / r[k]:.2f}×" if base and r.get(k) else "–"

    lines = [
        f"# ONNX Runtime session settings {result['date']}",
        "",
        f"Machine: {result['host']['cpus']} CPU cores, load average {result['host']['load_before']} before and "
        f"{result['host']['load_after']} after; onnxruntime {result['host']['onnxruntime']}. Model: "
        f"`{result['model_dir']}`. Each variant in its own process, {result['rounds']} rounds in alternating order, "
        "medians. Prefill: the median-length prompt of 8 Spider dev questions, whole (prefix cache off). Step: one "
        "decode step at batch 1 / batch 8 (the 8 prompts). Same answers: greedy answers to the 8 prompts (48 new "
        "tokens) identical to the served settings'.",
        "",
        "| variant | prefill ms | step b1 ms | step b8 ms | prefill vs served | step b1 vs served | step b8 vs served | "
        "same answers | what |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "prefill_ms" not in r:
            lines.append(f"| {r['name']} | not measured: {r.get('error')} | | | | | | | {r['note']} |")
            continue
        lines.append(
            f"| {r['name']} | {r['prefill_ms']:.0f} | {r['step_b1_ms']:.1f} | {r['step_b8_ms']:.1f} | "
            f"{ratio(r, 'prefill_ms')} | {ratio(r, 'step_b1_ms')} | {ratio(r, 'step_b8_ms')} | "
            f"{r.get('same_answers', '–')} | {r['note']} |"
        )
    lines += ["", "Ratios above 1 are faster than the served settings."]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=[v.name for v in VARIANTS], choices=list(BY_NAME))
    p.add_argument("--model-dir", type=Path, default=get_base().onnx_dir / "fp32")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPORT_DIR)
    p.add_argument("--one", choices=list(BY_NAME), help=argparse.SUPPRESS)  # internal: measure one variant, print JSON
    a = p.parse_args()
    if not (a.model_dir / "model.onnx").exists():
        print(f"no model at {a.model_dir}: run `make model` first", file=sys.stderr)
        return 2
    if a.one:
        print(json.dumps(measure(BY_NAME[a.one], a.model_dir)))
        return 0
    import onnxruntime as ort

    load = lambda: " ".join(f"{x:.2f}" for x in os.getloadavg())  # noqa: E731
    host = {"cpus": os.cpu_count(), "load_before": load(), "onnxruntime": ort.__version__}
    result = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "model_dir": str(a.model_dir)}
    result |= {"rounds": a.rounds, "host": host}
    result |= run([BY_NAME[n] for n in a.variants], a.model_dir, a.rounds)
    host["load_after"] = load()
    a.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M")
    (a.out / f"ort-session-{stamp}.json").write_text(json.dumps(result, indent=2))
    md = markdown(result)
    (a.out / f"ort-session-{stamp}.md").write_text(md)
    print(md)
    print(f"wrote {a.out}/ort-session-{stamp}.json and .md")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
