"""Where the ONNX engine's time goes: ONNX Runtime's profiler over one prompt's prefill and forced decode steps.

The served generator runs unchanged, loaded with the served session options plus profiling. Each `model_run` of
the profile is one run of the session (the first after the warm-up is the prefill, the rest decode steps); kernel
events are assigned to the run they fall in and summed per operator type. The time outside the runs (Python:
feeds, KV-cache merges, token picking, tokenizer) is the wall time minus the runs.

    python -m bench.experiments.profile_ort --model-dir build/onnx/int8
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from app.nl2sql.engine import OnnxGenerator, served_session_options
from bench.engines import bench_prompts, decode_forced
from models.bases import get_base


def _phase(events: list[dict], runs: list[dict]) -> dict:
    ops: Counter = Counter()
    for e in events:
        ops[e["args"].get("op_name", "?")] += e["dur"]
    total = sum(ops.values()) or 1
    run_us = sum(r["dur"] for r in runs)
    return {
        "runs": len(runs),
        "ms_per_run": round(run_us / 1000 / max(len(runs), 1), 2),
        "kernel_share_of_run": round(total / max(run_us, 1), 3),
        "ops": {op: round(us / total, 3) for op, us in ops.most_common(8)},
    }


def profile(model_dir: Path, prompt: str, new_tokens: int = 60, threads: int = 0) -> dict:
    with tempfile.TemporaryDirectory(prefix="qw-ortprof-") as tmp:
        opts = served_session_options(threads)
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        # no prefix cache: the warm-up prompt is the profiled prompt
        gen = OnnxGenerator(model_dir, prefix_cache_entries=0, session_options=opts)
        # forced length: the same number of decode steps for every model
        decode_forced(gen, [prompt], 2)  # warm-up: a prefill and one decode step, left out below
        t0 = time.perf_counter()
        [g] = decode_forced(gen, [prompt], new_tokens)
        wall_us = (time.perf_counter() - t0) * 1e6
        trace = json.loads(Path(gen.session.end_profiling()).read_text())
    runs = sorted((e for e in trace if e.get("name") == "model_run"), key=lambda e: e["ts"])[2:]
    kernels = [e for e in trace if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]

    def inside(run: dict) -> list[dict]:
        return [e for e in kernels if run["ts"] <= e["ts"] <= run["ts"] + run["dur"]]

    prefill, decode = runs[:1], runs[1:]
    run_us = sum(r["dur"] for r in runs)
    return {
        "model_dir": str(model_dir),
        "prompt_tokens": g.prompt_tokens,
        "new_tokens": g.new_tokens,
        "wall_ms": round(wall_us / 1000, 1),
        "outside_session_share": round(1 - run_us / wall_us, 3),
        "prefill": _phase([e for r in prefill for e in inside(r)], prefill),
        "decode": _phase([e for r in decode for e in inside(r)], decode),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=get_base().onnx_dir / "fp32")
    p.add_argument("--new-tokens", type=int, default=60)
    a = p.parse_args()
    prompts = bench_prompts(1, 0) or bench_prompts(0, 1)
    print(json.dumps(profile(a.model_dir, prompts[0]["prompt"], a.new_tokens), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
