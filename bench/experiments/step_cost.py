"""What a decode step costs by batch size and context length: the ceiling on what batching can buy.

Continuous batching turns B one-row steps into one B-row step. If a B-row step cost the same as a one-row step,
B clients would get B× the throughput of one; it costs more, because every row reads its own KV cache (the graph
concatenates past and new keys and values, then attention reads them: memory traffic that grows with B × context)
and the weight matmuls run at M = B instead of M = 1. The ratio `8 rows / (step at 8 ÷ step at 1)` is therefore
the most that 8 concurrent requests can gain over one, before prefill (compute-bound, not batched) and the
closed loop's drain take their share. Prompts are synthetic (distinct words, so the prefix cache has nothing to
share); each cell is the median of `steps` steps after two warm-up steps.

    python -m bench.experiments.step_cost --contexts 40 400 800 --batches 1 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from app.nl2sql.engine import DecodeBatch, OnnxGenerator
from models.bases import get_base

FP32_DIR = get_base().onnx_dir / "fp32"


def synthetic_prompt(gen: OnnxGenerator, tokens: int) -> str:
    text = "<|im_start|>user\n" + " ".join(f"word{i}" for i in range(tokens))
    ids = gen.tokenizer.encode(text, add_special_tokens=False).ids[:tokens]
    return gen.tokenizer.decode(ids, skip_special_tokens=False)


def step_ms(gen: OnnxGenerator, batch: int, context: int, steps: int) -> float:
    rows = DecodeBatch(gen, ignore_stop=True)  # every row decodes the same number of steps
    prompt = synthetic_prompt(gen, context)
    for key in range(batch):
        rows.add(key, prompt, steps + 10)
    times = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        rows.step()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times[2:]) * 1000, 2)


def measure(
    model_dir: Path = FP32_DIR,
    batches: tuple[int, ...] = (1, 8),
    contexts: tuple[int, ...] = (40, 400, 800),
    steps: int = 10,
    threads: int = 0,
) -> dict:
    gen = OnnxGenerator(model_dir, threads, prefix_cache_entries=0)
    cells = [
        {"batch": b, "context": t, "step_ms": step_ms(gen, b, t, steps)} for t in contexts for b in sorted(batches)
    ]
    out = {"model_dir": str(model_dir), "steps": steps, "cells": cells, "gain": []}
    one = {c["context"]: c["step_ms"] for c in cells if c["batch"] == 1}
    for c in cells:
        if c["batch"] > 1 and one.get(c["context"]):
            cost = c["step_ms"] / one[c["context"]]
            out["gain"].append(
                {"batch": c["batch"], "context": c["context"], "step_cost": round(cost, 2),
                 "decode_gain": round(c["batch"] / cost, 2)}
            )  # fmt: skip
    return out


def markdown(result: dict) -> list[str]:
    lines = [
        "| context tokens | batch | step ms | step vs batch 1 | decode throughput vs batch 1 |",
        "|---:|---:|---:|---:|---:|",
    ]
    gains = {(g["batch"], g["context"]): g for g in result["gain"]}
    for c in result["cells"]:
        g = gains.get((c["batch"], c["context"]))
        cost, gain = (f"{g['step_cost']:.2f}×", f"{g['decode_gain']:.2f}×") if g else ("1.00×", "1.00×")
        lines.append(f"| {c['context']} | {c['batch']} | {c['step_ms']:.1f} | {cost} | {gain} |")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=FP32_DIR)
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--contexts", nargs="+", type=int, default=[40, 400, 800])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if not (a.model_dir / "model.onnx").exists():
        print(f"no model at {a.model_dir}: run `make model` first", file=sys.stderr)
        return 2
    result = measure(a.model_dir, tuple(a.batches), tuple(a.contexts), a.steps, a.threads)
    print("\n".join(markdown(result)), file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
