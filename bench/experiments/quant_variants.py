"""Quantization variants of the served ONNX model, side by side: size, speed, batch invariance, agreement, EX.

    python -m bench.experiments.quant_variants                       # every variant, EX on 200 dev questions
    python -m bench.experiments.quant_variants --variants fp32 nbits8-b32-acc4 --ex-limit 0 --prompts 4

Every variant is built from build/onnx/fp32/model.onnx into build/onnx/variants/<name>/ (a loadable model
directory: tokenizer and config files and a querywise.json manifest, as models.export writes them) and rebuilt
only when the fp32 export's stamp or the variant's recipe changes. fp32 is the reference and is used in place.

Each variant is measured in its own child process (peak RSS is that variant's alone), on prompts from the shared
prompt builder (bench.engines.bench_prompts, Spider dev spread evenly), prefix cache off:

- prefill ms of the median-length prompt, decode tok/s at batch 1 (exactly `--new-tokens` forced tokens, the
  tokens after the first over the time after the first) and total tok/s of a forced batch of 8 (prefills included);
- batch invariance: each prompt's greedy answer decoded alone against the same prompt decoded in batches of 8 with
  the other prompts (the service batches requests; an answer should not depend on its neighbours), and against the
  same prompt prefilled from the prefix cache after another question on its database (the service reuses the
  cached schema prefix, so only the question's tokens are prefilled: a prefill of other shape);
- agreement with fp32: identical extracted SQL, on the alone answers and on the EX predictions;
- EX on the same Spider dev questions as bench.ex (models.evaluate's items, batching, judging and summary),
  written to reports/eval/quant-<variant>-dev<N>-<stamp>.{jsonl,json,md} and reused while the model is unchanged.

Speed is measured again in `--speed-rounds` further passes over all variants (a fresh process each, alternating
order), and the median of the passes is reported: load from other jobs drifts over a run of many minutes.
The report (reports/bench/quant-variants-<time>.{json,md,png}) leads with ratios against fp32 from the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.nl2sql.engine import DecodeBatch, OnnxGenerator  # noqa: E402
from app.nl2sql.generator import MAX_NEW_TOKENS  # noqa: E402
from app.nl2sql.prompt import build_prompt, format_schema  # noqa: E402
from bench import REPORT_DIR, ROOT, ex, memory  # noqa: E402
from bench.child import run_json  # noqa: E402
from bench.engines import bench_prompts, decode_forced  # noqa: E402
from models import machine  # noqa: E402
from models.bases import get_base  # noqa: E402
from models.export import MANIFEST, read_manifest, write_manifest  # noqa: E402

FP32_DIR = get_base().onnx_dir / "fp32"
# a structurally pruned model's fp32 export (models.methods.prune, exported with models.export there): the pruned
# rows of the table are measured when it exists, reported as skipped when not
PRUNED_DIR = get_base().onnx_dir / "pruned" / "fp32"
VARIANTS_DIR = get_base().onnx_dir / "variants"
RECIPE_VERSION = "v1"  # bump when the build code changes what a recipe produces
SPEED_KEYS = ("prefill_ms", "decode_tok_s", "batch_tok_s")
DRIFT_KEYS = ("batch_logit_drift", "same_length_logit_drift", "prefix_logit_drift")
SIBLING_QUESTION = "How many rows does each table have?"  # another question on the same database


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    method: str  # reference | nbits (MatMulNBits weight-only) | dynamic (quantize_dynamic, int8 activations) | fp16
    bits: int = 32
    block_size: int = 0
    accuracy_level: int | None = None
    head: bool = False  # lm_head quantized too (the export ties it to the embedding: fp32 otherwise)
    gather: bool = False  # the embedding Gather quantized too (GatherBlockQuantized: 4-bit only)
    per_channel: bool = False
    reduce_range: bool = False
    op_types: tuple[str, ...] = ()  # dynamic: () = every op type quantize_dynamic supports
    fp32_edge_layers: int = 0  # nbits: the first and last k decoder layers' MatMuls left fp32 (mixed precision)
    source: str = "fp32"  # the fp32 export it starts from: "fp32" (FP32_DIR) or "pruned" (PRUNED_DIR)
    note: str = ""


VARIANTS = [
    Variant("fp32", "fp32 (served)", "reference", note="the reference; build/onnx/fp32 as exported"),
    Variant(
        "nbits8-b32-acc4",
        "MatMulNBits int8, block 32, acc 4",
        "nbits",
        8,
        32,
        4,
        note="the current int8 (models.export.quantize): int8 compute, lm_head fp32",
    ),
    Variant("nbits8-b128-acc4", "MatMulNBits int8, block 128, acc 4", "nbits", 8, 128, 4, note="coarser scales"),
    Variant(
        "nbits8-b32-acc1",
        "MatMulNBits int8, block 32, acc 1",
        "nbits",
        8,
        32,
        1,
        note="MLAS fp32-compute kernel on int8 weights (CompFp32)",
    ),
    Variant(
        "nbits8-b32-acc0",
        "MatMulNBits int8, block 32, acc 0",
        "nbits",
        8,
        32,
        0,
        note="accuracy level unset: ORT's most accurate implementation, the fallback every build supports",
    ),
    Variant(
        "nbits8-b32-acc4-head",
        "MatMulNBits int8, block 32, acc 4, lm_head too",
        "nbits",
        8,
        32,
        4,
        head=True,
        note="which ops: the tied lm_head gets its own int8 copy (embedding Gather stays fp32)",
    ),
    Variant("nbits4-b32-acc4", "MatMulNBits int4, block 32, acc 4", "nbits", 4, 32, 4, note="lm_head fp32"),
    Variant(
        "nbits4-b32-acc4-all",
        "MatMulNBits int4, block 32, acc 4, lm_head + embedding",
        "nbits",
        4,
        32,
        4,
        head=True,
        gather=True,
        note="which ops: every weight int4 (embedding as GatherBlockQuantized)",
    ),
    Variant(
        "nbits8-b32-acc4-edge2",
        "MatMulNBits int8, block 32, acc 4, first and last 2 layers fp32",
        "nbits",
        8,
        32,
        4,
        fp32_edge_layers=2,
        note="mixed fp32/int8: the layers nearest the embedding and the head, where errors matter most, kept fp32",
    ),
    Variant(
        "fp16",
        "float16 weights and activations (onnxruntime.transformers.float16)",
        "fp16",
        16,
        note="graph inputs/outputs float32; ops without a CPU float16 kernel run through inserted Casts",
    ),
    Variant("pruned-fp32", "pruned + recovered, fp32", "reference", source="pruned", note="models.methods.prune"),
    Variant(
        "pruned-nbits8-b32-acc4",
        "pruned + recovered, MatMulNBits int8, block 32, acc 4",
        "nbits",
        8,
        32,
        4,
        source="pruned",
        note="the pruned model quantized as the service quantizes",
    ),
    Variant(
        "dyn-u8s8-pc-rr",
        "quantize_dynamic MatMul, u8 act / s8 weights, per-channel, reduce_range",
        "dynamic",
        8,
        per_channel=True,
        reduce_range=True,
        op_types=("MatMul",),
        note="ORT's AVX2 (no VNNI) recipe: 7-bit weights avoid the u8×s8 pair-sum saturation",
    ),
    Variant(
        "dyn-default",
        "quantize_dynamic defaults (per-tensor, all ops)",
        "dynamic",
        8,
        note="per-tensor s8 weights, full range, Gather/Transpose too: expected to saturate on AVX2 without VNNI",
    ),
]
BY_NAME = {v.name: v for v in VARIANTS}


# ---------------------------------------------------------------- building


def source_dir(v: Variant | None = None) -> Path:
    """The fp32 export a variant starts from (FP32_DIR unless it is a pruned one)."""
    return PRUNED_DIR if v is not None and v.source == "pruned" else FP32_DIR


def fp32_stamp(v: Variant | None = None) -> str:
    """The fp32 export's answers: models.export keeps it through answer-preserving upgrades of the graph."""
    return read_manifest(source_dir(v)).get("stamp", "nostamp")


def variant_dir(v: Variant) -> Path:
    return source_dir(v) if v.method == "reference" else VARIANTS_DIR / v.name


def variant_stamp(v: Variant) -> str:
    """The variant's answers: the fp32 export's stamp and the recipe (a change in either re-runs its EX)."""
    recipe = json.dumps(asdict(v) | {"note": "", "label": ""}, sort_keys=True)
    return hashlib.sha256(f"{RECIPE_VERSION} {fp32_stamp(v)} {recipe}".encode()).hexdigest()[:8]


def build_stamp(v: Variant) -> str:
    """The variant's graph: its answers' stamp and the whole fp32 manifest, so a graph upgrade that keeps the
    answers (the stamp), such as the attention rewrite, still rebuilds the variant (speed may change)."""
    manifest = json.dumps(read_manifest(source_dir(v)), sort_keys=True)
    return hashlib.sha256(f"{variant_stamp(v)} {manifest}".encode()).hexdigest()[:8]


def untie_head(model) -> None:
    """Give lm_head its own weight initializer.

    The export ties lm_head to the embedding through a Transpose of `model.embed_tokens.weight`, so its MatMul has
    no constant B and weight-only quantizers leave it fp32 (and ORT folds the Transpose into a second fp32 copy at
    load). A transposed initializer of its own lets MatMulNBits quantize the 49k-row head like any projection.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    head = next(n for n in model.graph.node if n.op_type == "MatMul" and "lm_head" in n.name)
    tr = next(n for n in model.graph.node if n.op_type == "Transpose" and n.output[0] == head.input[1])
    weight = numpy_helper.to_array(inits[tr.input[0]])
    model.graph.initializer.append(numpy_helper.from_array(weight.T.copy(), head.input[1]))
    model.graph.node.remove(tr)


def _quantize_nbits(v: Variant, src: Path, dst: Path) -> None:
    import logging

    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    model = onnx.load(str(src))
    if v.head:
        untie_head(model)
    q = MatMulNBitsQuantizer(
        model,
        nodes_to_exclude=edge_layer_matmuls(model, v.fp32_edge_layers),
        bits=v.bits,
        block_size=v.block_size,
        is_symmetric=True,
        accuracy_level=v.accuracy_level,
        op_types_to_quantize=("MatMul", "Gather") if v.gather else ("MatMul",),
    )
    q.process()
    q.model.save_model_to_file(str(dst), use_external_data_format=False)


def flags_text(host: dict) -> str:
    """The CPU flags of a report's host; reports written before they were recorded said AVX2 without VNNI."""
    return machine.flags_text(host["cpu"]) if "cpu" in host else "AVX2, no VNNI"


def edge_layer_matmuls(model, k: int) -> list[str]:
    """The MatMul nodes of the first and last `k` decoder layers (named `/model/layers.<i>/...` by the export)."""
    if not k:
        return []
    layer = re.compile(r"layers\.(\d+)/")
    found = {n.name: int(m.group(1)) for n in model.graph.node if n.op_type == "MatMul" and (m := layer.search(n.name))}
    if not found:
        raise ValueError("no MatMul node names a decoder layer (expected /model/layers.<i>/...)")
    last = max(found.values())
    return [name for name, i in found.items() if i < k or i > last - k]


def _to_fp16(v: Variant, src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))


def _quantize_dynamic(v: Variant, src: Path, dst: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing" and per-node chatter
    quantize_dynamic(
        src,
        dst,
        op_types_to_quantize=list(v.op_types) or None,
        per_channel=v.per_channel,
        reduce_range=v.reduce_range,
        weight_type=QuantType.QInt8,  # activations are always u8 in dynamic mode
    )


def build(v: Variant, force: bool = False) -> Path:
    """The variant's model directory, built unless an up-to-date one is there."""
    out = variant_dir(v)
    if v.method == "reference":
        if not (out / "model.onnx").exists():
            raise FileNotFoundError(f"no export at {out}")
        return out
    if not (source_dir(v) / "model.onnx").exists():
        raise FileNotFoundError(f"no export at {source_dir(v)}")
    built = build_stamp(v)
    if not force and read_manifest(out).get("build") == built and (out / "model.onnx").exists():
        return out
    print(f"  building {v.name} ...", flush=True)
    t0 = time.time()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    quantize = {"nbits": _quantize_nbits, "fp16": _to_fp16}.get(v.method, _quantize_dynamic)
    quantize(v, source_dir(v) / "model.onnx", out / "model.onnx")
    for f in source_dir(v).glob("*.json"):
        if f.name != MANIFEST:
            shutil.copy(f, out / f.name)
    info = read_manifest(source_dir(v)) | {"stamp": variant_stamp(v), "build": built, "variant": v.name}
    info |= {"fp32_stamp": fp32_stamp(v)}
    write_manifest(out, **info | {"quantization": v.label})
    print(f"  built {v.name} in {time.time() - t0:.0f} s", flush=True)
    return out


# ---------------------------------------------------------------- measuring (in a child process per variant)


def _sql(text: str) -> str:
    from app.nl2sql.extract import extract_sql

    return extract_sql(text)


def _greedy(gen, prompts: list[str], batch: int, max_new: int) -> list[str]:
    out: list[str] = []
    for i in range(0, len(prompts), batch):
        out += [g.text for g in gen.generate(prompts[i : i + batch], max_new)]
    return out


def ex_run_name(v: Variant, limit: int) -> str:
    return f"quant-{v.name}-dev{limit}-{variant_stamp(v)}"


def _ex_summary_path(v: Variant, limit: int) -> Path | None:
    """A finished EX run of this exact model; fp32 also reuses bench.ex's run of the same export."""
    names = [ex_run_name(v, limit)]
    if v.method == "reference" and v.source == "fp32":
        names.append(f"bench-onnx-fp32-dev{limit}-{fp32_stamp()[:8]}")
    return next((path for name in names if (path := ex.summary_path(name, limit))), None)


def evaluate(v: Variant, gen: OnnxGenerator, limit: int, batch: int = 8) -> Path:
    """EX on `limit` Spider dev questions spread evenly (bench.ex's items): run or resume, then summarize."""
    hit = _ex_summary_path(v, limit)
    if hit:
        return hit
    meta = {"engine": f"ONNX Runtime, {v.label}", "model_id": f"{gen.model_id} [{v.name}]"}
    return ex.evaluate_run(gen, ex_run_name(v, limit), limit, meta, batch)


def _load(v: Variant, *, cache_entries: int = 0, record: bool = False) -> tuple[OnnxGenerator, float]:
    """The variant's generator and its load seconds; prefix cache off unless `cache_entries` (every prompt
    prefilled whole), its session run through a _LogitRecorder with `record`."""
    t0 = time.perf_counter()
    gen = OnnxGenerator(
        variant_dir(v), prefix_cache_entries=cache_entries, wrap_session=_LogitRecorder if record else None
    )
    return gen, time.perf_counter() - t0


def speed(gen: OnnxGenerator, prompts: list[str], new_tokens: int, batch: int) -> dict:
    """Prefill ms of the median-length prompt and decode tok/s at batch 1 (medians of 3), and total tok/s of a
    forced batch (prefills included); every answer forced to `new_tokens` tokens."""
    decode_forced(gen, prompts[:1], 4)  # warm-up: first-run allocations and kernel selection
    lengths = [gen.count_tokens(p) for p in prompts]
    median_prompt = sorted(zip(lengths, prompts, strict=True))[len(prompts) // 2][1]
    prefill, decode = [], []
    for _ in range(3):
        stamps: list[float] = []
        t0 = time.perf_counter()
        decode_forced(gen, [median_prompt], new_tokens, stamps)
        prefill.append((stamps[0] - t0) * 1000)
        decode.append((len(stamps) - 1) / max(stamps[-1] - stamps[0], 1e-9))
    k = min(batch, len(prompts))
    t0 = time.perf_counter()
    gens = decode_forced(gen, prompts[:k], new_tokens)
    return {
        "median_prompt_tokens": int(statistics.median(lengths)),
        "prefill_ms": round(statistics.median(prefill), 1),
        "decode_tok_s": round(statistics.median(decode), 1),
        "batch": k,
        "batch_tok_s": round(sum(g.new_tokens for g in gens) / (time.perf_counter() - t0), 1),
    }


def _sibling_prompts(items: list[dict]) -> list[str]:
    """Per prompt, another question on its database through the shared prompt builder: the same schema prefix."""
    from models.data import SPIDER_DIR, schema_at, sqlite_path

    schemas: dict[str, str] = {}
    for it in items:
        if it["db_id"] not in schemas:
            schemas[it["db_id"]] = format_schema(schema_at(str(sqlite_path(SPIDER_DIR / "database", it["db_id"]))))
    return [build_prompt(schemas[it["db_id"]], SIBLING_QUESTION, ()) for it in items]


def _after_cached_sibling(cached: OnnxGenerator, prompts: list[str], siblings: list[str], max_new: int) -> list[str]:
    """Each prompt decoded right after its sibling was prefilled into `cached`'s one-entry prefix cache (as the
    service does): only the tokens after the shared schema prefix are prefilled."""
    out = []
    for prompt, sibling in zip(prompts, siblings, strict=True):
        cached.prefix_cache.clear()
        cached.generate([sibling], 1)  # its prefill leaves the schema's KV in the cache
        hits = cached.prefix_cache.hits
        out.append(cached.generate([prompt], max_new)[0].text)
        if cached.prefix_cache.hits != hits + 1:
            raise RuntimeError("the prefix cache was not used: the sibling prompt shares no prefix")
    return out


class _LogitRecorder:
    """Stands in for the session (OnnxGenerator's `wrap_session`): while `on`, keeps the last-position logits of
    every `run` (prefills, and decode steps on the numpy feed path)."""

    def __init__(self, session):
        self._session, self.logits, self.on = session, [], False

    def run(self, *args, **kwargs):
        out = self._session.run(*args, **kwargs)
        if self.on:
            self.logits.append(np.array(out[0][:, -1]))
        return out

    def __getattr__(self, name):
        return getattr(self._session, name)


def _step_logits(gen: OnnxGenerator, rows: list[str], steps: int) -> list[np.ndarray]:
    """The logits of the first `steps` decode steps of `rows` decoding together, one [rows, vocab] per step. The
    steps take the numpy feed path (IO-bound steps bypass `run`; the kernels are the same) and ignore stop tokens,
    so no row leaves and shifts the others."""
    rec: _LogitRecorder = gen.session
    batch = DecodeBatch(gen, ignore_stop=True, io_binding=False)
    for i, p in enumerate(rows):
        batch.add(i, p, steps + 1)
    rec.logits.clear()
    rec.on = True
    try:
        for _ in range(steps):
            batch.step()
    finally:
        rec.on = False
    return list(rec.logits)


def logit_drift(gen: OnnxGenerator, prompts: list[str], steps: int = 2) -> dict:
    """Largest |logit difference| between a prompt alone and the same prompt (a) in one decode batch with the others
    (left-padded to the longest), over its first `steps` decode steps, and (b) in a batch of 4 copies of itself (a
    batch without padding: do the quantized matmuls couple rows?). `gen` records its runs (_load's `record`).

    Equal greedy answers on a few prompts can hide coupled rows; 0 (or fp32's rounding level) holds for every prompt.
    """
    alone = [[x[0] for x in _step_logits(gen, [p], steps)] for p in prompts]
    batched = _step_logits(gen, prompts, steps)
    copies = _step_logits(gen, [prompts[0]] * 4, steps)
    return {
        "batch_logit_drift": max(
            float(np.abs(batched[s][i] - alone[i][s]).max()) for i in range(len(prompts)) for s in range(steps)
        ),
        "same_length_logit_drift": max(
            float(np.abs(x[i] - alone[0][s]).max()) for s, x in enumerate(copies) for i in range(4)
        ),
    }


def prefix_logit_drift(cached: OnnxGenerator, prompts: list[str], siblings: list[str]) -> float:
    """Largest |logit difference| between a prompt's prefill whole and after its sibling's cached prefix."""
    drift = 0.0
    for prompt, sibling in zip(prompts, siblings, strict=True):
        ids = cached.tokenizer.encode(prompt, add_special_tokens=False).ids
        cached.prefix_cache.clear()
        whole, _ = cached.prefill(ids)
        cached.prefix_cache.clear()
        cached.prefill(cached.tokenizer.encode(sibling, add_special_tokens=False).ids)
        after, _ = cached.prefill(ids)
        drift = max(drift, float(np.abs(after - whole).max()))
    return drift


def measure(v: Variant, n_prompts: int, new_tokens: int, batch: int, max_new: int) -> dict:
    path = variant_dir(v)
    gen, load_s = _load(v, record=True)
    rss_loaded = memory.rss_mb()
    items = bench_prompts(n_prompts, 0)
    prompts = [p["prompt"] for p in items]
    timing = speed(gen, prompts, new_tokens, batch)
    alone = _greedy(gen, prompts, 1, max_new)
    together = _greedy(gen, prompts, batch, max_new)
    drift = logit_drift(gen, prompts[:batch])
    peak = memory.peak_rss_mb()  # before the second copy below, and before EX (batches of long answers)
    del gen
    # the cached-prefix measurements need a prefix cache: the model again, with one entry
    cached, _ = _load(v, cache_entries=1)
    siblings = _sibling_prompts(items)
    prefixed = _after_cached_sibling(cached, prompts, siblings, max_new)
    drift["prefix_logit_drift"] = prefix_logit_drift(cached, prompts[:batch], siblings[:batch])
    row = {
        "name": v.name,
        "label": v.label,
        "method": v.method,
        "note": v.note,
        "path": str(path),
        "size_mb": round(sum(f.stat().st_size for f in path.glob("model.onnx*")) / 1e6, 1),
        "load_s": round(load_s, 2),
        "rss_after_load_mb": rss_loaded,
        "peak_rss_mb": peak,
        "n_prompts": len(prompts),
        "new_tokens": new_tokens,
        **timing,
        "speed_samples": {k: [timing[k]] for k in SPEED_KEYS},
        "invariant": sum(a == b for a, b in zip(alone, together, strict=True)),
        "prefix_invariant": sum(a == b for a, b in zip(alone, prefixed, strict=True)),
        **drift,
        "alone_sql": [_sql(t) for t in alone],
        "batched_sql": [_sql(t) for t in together],
        "prefixed_sql": [_sql(t) for t in prefixed],
    }
    return row


def ex_fields(summary_path: Path) -> dict:
    s = json.loads(summary_path.read_text())
    out = {k: s.get(k) for k in ("run", "n", "ex", "valid_sql", "mean_gen_ms_per_question", "wall_s")}
    return out | {"jsonl": str(summary_path.with_suffix(".jsonl").relative_to(ROOT))}


def _child(args: list[str], timeout_s: float) -> dict:
    """`python -m bench.experiments.quant_variants --child ...` in a fresh process: its last stdout line, or
    {"error": ...}."""
    return run_json(
        "bench.experiments.quant_variants",
        *args,
        timeout_s=timeout_s,
        on_timeout=" (a partial EX run resumes next time)",
    )


def run_variant(
    v: Variant,
    n_prompts: int,
    new_tokens: int,
    batch: int,
    max_new: int,
    ex_limit: int,
    ref: dict | None = None,
    ex_min_speed: float = 0.0,
    timeout_s: float = 1800,
) -> dict:
    """Build (in this process), measure and evaluate (a child process each) one variant; failures are reported.

    EX is not run for a variant whose batch throughput is under `ex_min_speed` × the reference's (`ref`): too slow
    to serve, so its accuracy decides nothing (a cached EX run is still reported).
    """
    base = {"name": v.name, "label": v.label, "method": v.method, "note": v.note}
    try:
        build(v)
    except Exception as exc:  # a recipe the installed onnxruntime cannot produce is a result, not a crash
        return base | {"skipped": f"cannot build: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
    args = ["--child", v.name, "--prompts", str(n_prompts), "--new-tokens", str(new_tokens), "--batch", str(batch)]
    row = _child([*args, "--max-new", str(max_new)], timeout_s)
    if "decode_tok_s" not in row:
        return base | row
    if not ex_limit:
        return row
    cached = _ex_summary_path(v, ex_limit)
    floor = ex_min_speed * ref["batch_tok_s"] if ref else 0.0
    if cached:
        row["ex"] = ex_fields(cached)
    elif row["batch_tok_s"] < floor:
        row["ex_skipped"] = (
            f"not run: batch-{batch} {row['batch_tok_s']:.0f} tok/s is under {ex_min_speed:.2f}× fp32's "
            f"({ref['batch_tok_s']:.0f}), too slow to serve"
        )
    else:
        print(f"  {v.name}: EX on {ex_limit} dev questions ...", flush=True)
        ex = _child(["--child", v.name, "--ex-only", "--ex-limit", str(ex_limit), "--batch", str(batch)], 3 * timeout_s)
        if "error" in ex:
            row["ex_error"] = ex["error"]
        else:
            row["ex"] = ex
    return row


def speed_round(rows: list[dict], n_prompts: int, new_tokens: int, batch: int, reverse: bool) -> None:
    """One more speed measurement of every measured variant, each in a fresh process; medians over the samples."""
    for r in reversed(rows) if reverse else rows:
        if "decode_tok_s" not in r:
            continue
        args = ["--child", r["name"], "--speed-only", "--prompts", str(n_prompts)]
        t = _child([*args, "--new-tokens", str(new_tokens), "--batch", str(batch)], 900)
        if "error" in t:
            print(f"  {r['name']}: speed round failed: {t['error']}", flush=True)
            continue
        for k in SPEED_KEYS:
            r["speed_samples"][k].append(t[k])
            r[k] = round(statistics.median(r["speed_samples"][k]), 1)
        print(
            f"  {r['name']}: {t['prefill_ms']:.0f} ms · {t['decode_tok_s']:.1f} tok/s · {t['batch_tok_s']:.0f}",
            flush=True,
        )


# ---------------------------------------------------------------- comparing and reporting


def _preds(jsonl: str) -> dict[int, str]:
    out = {}
    for line in (ROOT / jsonl).read_text().splitlines():
        r = json.loads(line)
        out[r["id"]] = r["pred"]
    return out


def compare(rows: list[dict]) -> None:
    """Agreement with fp32 and ratios against it, added to every measured row (>1 is better for every ratio)."""
    ref = next((r for r in rows if r["name"] == "fp32" and "decode_tok_s" in r), None)
    if ref is None:
        return
    ref_ex = _preds(ref["ex"]["jsonl"]) if ref.get("ex") else None
    for r in rows:
        if "decode_tok_s" not in r:
            continue
        r["agree_fp32"] = sum(a == b for a, b in zip(r["alone_sql"], ref["alone_sql"], strict=True))
        if ref_ex and r.get("ex"):
            mine = _preds(r["ex"]["jsonl"])
            r["ex"]["agree_fp32"] = sum(mine.get(i) == p for i, p in ref_ex.items())
        ratio = lambda a, b: round(a / b, 2) if a and b else None  # noqa: E731
        r["vs_fp32"] = {
            "size": ratio(ref["size_mb"], r["size_mb"]),
            "peak_rss": ratio(ref["peak_rss_mb"], r["peak_rss_mb"]),
            "prefill": ratio(ref["prefill_ms"], r["prefill_ms"]),
            "decode": ratio(r["decode_tok_s"], ref["decode_tok_s"]),
            "batch": ratio(r["batch_tok_s"], ref["batch_tok_s"]),
            "ex_points": round(r["ex"]["ex"] - ref["ex"]["ex"], 1) if r.get("ex") and ref.get("ex") else None,
        }


def verdict(rows: list[dict]) -> list[str]:
    """Plain statements read off the table: which variants are invariant (answers, logits), the fastest good one."""
    ok = [r for r in rows if "vs_fp32" in r]
    if not ok:
        return []
    n = ok[0]["n_prompts"]
    ref = next((r for r in ok if r["method"] == "reference"), None)
    quantized = [r for r in ok if r["method"] != "reference"]
    names = lambda rs: ", ".join(r["name"] for r in rs) or "none"  # noqa: E731
    lines = [
        f"Answers identical alone and in batches ({n}/{n}): {names([r for r in quantized if r['invariant'] == n])}; "
        f"alone and after a cached prefix: {names([r for r in quantized if r['prefix_invariant'] == n])}.",
    ]
    if ref and ref.get("batch_logit_drift") is not None:
        bar = 10 * max(ref["batch_logit_drift"], 1e-6)

        def fp32_level(r: dict) -> bool:
            drifts = [r.get(k) for k in ("batch_logit_drift", "prefix_logit_drift")]
            return all(d is not None and d <= bar for d in drifts)

        close = [r for r in quantized if fp32_level(r)]
        worst = max((r["batch_logit_drift"] or 0 for r in quantized if not fp32_level(r)), default=0)
        lines.append(
            f"Logits as close to alone as fp32's own (max |Δlogit| ≤ {bar:.1g}, batched and after a cached prefix): "
            f"{names(close)}"
            + (
                f"; the others move logits by up to {worst:.2g}, so a near-tie can flip an answer by its neighbours."
                if worst
                else "."
            )
        )
    # rows independent in the matmuls: a suffix prefilled alone (other rows, other M) and a batch of copies match
    rowwise = [r for r in quantized if r.get("same_length_logit_drift") == 0.0 and r["prefix_logit_drift"] == 0.0]
    if rowwise:
        lines.append(
            f"A cached prefix and a batch of one prompt repeated (no padding) give bitwise the logits alone for "
            f"{names(rowwise)}: their matmuls treat rows independently, and their batched drift comes from left "
            "padding (attention over masked keys moves fp32 by rounding; quantizing activations amplifies it)."
        )
    good = [r for r in quantized if r["vs_fp32"]["ex_points"] is not None and r["vs_fp32"]["ex_points"] >= -1.0]
    if good:
        best = max(good, key=lambda r: r["vs_fp32"]["decode"] or 0)
        lines.append(
            f"Fastest decode within 1 EX point of fp32: {best['name']} ({best['vs_fp32']['decode']:.2f}× decode, "
            f"{best['vs_fp32']['batch']:.2f}× batch-{best['batch']}, EX {best['ex']['ex']}%, "
            f"{best['invariant']}/{n} answers batch-invariant, {best['prefix_invariant']}/{n} after a cached prefix)."
        )
    return lines


def _f(v, fmt: str = "{:.2f}×") -> str:
    return "–" if v is None else fmt.format(v)


def markdown(result: dict, plot: str | None) -> str:
    rows, cfg, host = result["variants"], result["config"], result["host"]
    n, ex_n = cfg["prompts"], cfg["ex_limit"]
    lines = [
        f"# Quantization variants {result['date']}",
        "",
        f"Machine: {host['cpus']} CPU cores ({flags_text(host)}), shared with other jobs and noisy: load average "
        f"{host['load_before']} before, {host['load_after']} after. Read the ratios (same run, same prompts), not "
        f"the absolute times. onnxruntime {host['onnxruntime']}. Each variant runs in its own process.",
        "",
        f"Speed: the median-length of {n} Spider dev prompts (served prompt, prefix cache off), {cfg['new_tokens']} "
        f"forced tokens; batch = {cfg['batch']} prompts decoded together (total tok/s, prefills included). "
        f"Speed is the median of {cfg.get('speed_rounds', 0) + 1} passes (fresh process each). "
        f"Invariance: greedy answer alone vs in batches of {cfg['batch']} with the other prompts, and vs prefilled "
        f"after a cached schema prefix (prefix cache, as served) ({n} prompts, up to {cfg['max_new']} tokens); "
        f"max |Δlogit|: the largest logit difference against alone, first 2 decode steps of {cfg['batch']} prompts "
        "in one (left-padded) batch / of 4 copies of one prompt in a batch (no padding) / the prefill after a cached "
        "prefix (0 = bitwise identical; fp32's own level is the bar: equal answers on a few prompts can hide coupled "
        "rows). "
        f"Agreement: identical SQL with fp32 (alone answers; EX predictions). EX: {ex_n} Spider dev questions as "
        "bench.ex picks them, batches of 8.",
        "",
        "## Headline: against fp32 (higher is better; EX in points)",
        "",
        f"| variant | size | peak RSS | prefill | decode b1 | batch {cfg['batch']} | batch-invariant | "
        f"prefix-cache-invariant | max \\|Δlogit\\| batched / same-length batch / prefix | = fp32 (alone) | EX | "
        f"EX Δ | "
        f"= fp32 (EX {ex_n}) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "vs_fp32" not in r:
            reason = r.get("skipped") or r.get("error") or "not compared"
            lines.append(f"| {r['name']} | not measured: {reason} |||||||||||| ")
            continue
        q, ex = r["vs_fp32"], r.get("ex") or {}
        lines.append(
            f"| {r['name']} | {_f(q['size'])} | {_f(q['peak_rss'])} | {_f(q['prefill'])} | {_f(q['decode'])} | "
            f"{_f(q['batch'])} | {r['invariant']}/{r['n_prompts']} | {r['prefix_invariant']}/{r['n_prompts']} | "
            f"{' / '.join(_f(r.get(k), '{:.2g}') for k in DRIFT_KEYS)} | "
            f"{r['agree_fp32']}/{r['n_prompts']} | "
            f"{_f(ex.get('ex'), '{:.1f}%')} | {_f(q['ex_points'], '{:+.1f}')} | "
            f"{_f(ex.get('agree_fp32'), '{}')}/{ex.get('n', '–')} |"
        )
    lines += ["", *verdict(rows), ""]
    if plot:
        lines += [f"![variants]({plot})", ""]
    lines += [
        "## Absolute",
        "",
        # (EX generation times are left out: each EX run met a different load, several were cached)
        "| variant | recipe | size MB | peak RSS MB | load s | prefill ms | decode tok/s (passes) | batch tok/s | "
        "EX valid SQL % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "decode_tok_s" not in r:
            continue
        ex = r.get("ex") or {}
        spread = ", ".join(f"{x:.0f}" for x in r["speed_samples"]["decode_tok_s"])
        lines.append(
            f"| {r['name']} | {r['label']} | {r['size_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['load_s']:.1f} | "
            f"{r['prefill_ms']:.0f} | {r['decode_tok_s']:.1f} ({spread}) | {r['batch_tok_s']:.0f} | "
            f"{_f(ex.get('valid_sql'), '{:.1f}')} |"
        )
    lines += ["", "## Variants", ""]
    for r in rows:
        why = r.get("ex_skipped") or (f"failed: {r['ex_error']}" if r.get("ex_error") else None)
        lines.append(f"- **{r['name']}**: {r['label']}. {r['note']}" + (f". EX {why}." if why else ""))
    if result.get("notes"):
        lines += ["", "## Notes", "", *[f"- {x}" for x in result["notes"]]]
    lines += ["", f"Wall time {result['wall_s'] / 60:.0f} min. EX runs: reports/eval/quant-*-dev{ex_n}-*."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> Path | None:
    """Decode speed-up against EX, one point per variant; filled = invariant (batches and cached prefixes)."""
    pts = [r for r in rows if "vs_fp32" in r and r.get("ex")]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, r in enumerate(pts):
        x, y, n = r["vs_fp32"]["decode"], r["ex"]["ex"], r["n_prompts"]
        filled = r["invariant"] == n and r["prefix_invariant"] == n
        ax.scatter(x, y, s=60, edgecolors="C0", facecolors="C0" if filled else "none")
        # labels above and below in turn: variants with the same EX sit side by side
        ax.annotate(r["name"], (x, y), fontsize=8, xytext=(4, 4 if i % 2 else -11), textcoords="offset points")
    ax.set_xlabel("decode tok/s at batch 1, × fp32 (same run)")
    ax.set_ylabel(f"EX % on {pts[0]['ex']['n']} Spider dev questions")
    ax.set_title("Quantization variants (filled: answers invariant to batching and prefix cache)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(result: dict, out_dir: Path, stamp: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    png = plot(result["variants"], out_dir / f"quant-variants-{stamp}.png")
    result["plot"] = png.name if png else None
    json_path, md_path = out_dir / f"quant-variants-{stamp}.json", out_dir / f"quant-variants-{stamp}.md"
    json_path.write_text(json.dumps(result, indent=2))
    md_path.write_text(markdown(result, result["plot"]))
    return json_path, md_path


def compare_all(
    names: list[str],
    n_prompts: int = 20,
    new_tokens: int = 60,
    batch: int = 8,
    max_new: int = MAX_NEW_TOKENS,
    ex_limit: int = 200,
    speed_rounds: int = 2,
    ex_min_speed: float = 0.5,
) -> dict:
    """Every named variant (fp32 first: it is the reference), compared; the report's content."""
    from importlib.metadata import version

    names = ["fp32"] + [n for n in names if n != "fp32"]
    load = lambda: " ".join(f"{x:.2f}" for x in os.getloadavg())  # noqa: E731
    t0 = time.time()
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": {"cpus": os.cpu_count(), "load_before": load(), "onnxruntime": version("onnxruntime")}
        | {"cpu": machine.cpu()},
        "config": {"prompts": n_prompts, "new_tokens": new_tokens, "batch": batch, "max_new": max_new}
        | {"ex_limit": ex_limit, "ex_min_speed": ex_min_speed, "speed_rounds": speed_rounds}
        | {"fp32_stamp": fp32_stamp()},
    }
    rows = []
    for name in names:
        print(f"==> {name}", flush=True)
        ref = rows[0] if rows and "batch_tok_s" in rows[0] else None
        r = run_variant(BY_NAME[name], n_prompts, new_tokens, batch, max_new, ex_limit, ref, ex_min_speed)
        if "decode_tok_s" in r:
            ex = (r.get("ex") or {}).get("ex")
            print(
                f"  {name}: {r['size_mb']:.0f} MB · peak {r['peak_rss_mb']:.0f} MB · prefill {r['prefill_ms']:.0f} "
                f"ms · {r['decode_tok_s']:.1f} tok/s · batch {r['batch_tok_s']:.0f} tok/s · invariant "
                f"{r['invariant']}/{r['n_prompts']} · after a cached prefix {r['prefix_invariant']}/{r['n_prompts']} · "
                f"EX {ex}",
                flush=True,
            )
        else:
            print(f"  {name}: {r.get('skipped') or r.get('error')}", flush=True)
        rows.append(r)
    for i in range(speed_rounds):
        print(f"==> speed round {i + 2} of {speed_rounds + 1}", flush=True)
        speed_round(rows, n_prompts, new_tokens, batch, reverse=i % 2 == 0)
    compare(rows)
    result["variants"] = rows
    result["host"]["load_after"] = load()
    result["wall_s"] = round(time.time() - t0, 1)
    result["verdict"] = verdict(rows)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", choices=list(BY_NAME), default=list(BY_NAME))
    p.add_argument("--prompts", type=int, default=20, help="Spider dev prompts (speed, invariance, agreement)")
    p.add_argument("--new-tokens", type=int, default=60, help="forced tokens for the speed measurements")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-new", type=int, default=MAX_NEW_TOKENS, help="greedy answer cap for invariance and agreement")
    p.add_argument("--ex-limit", type=int, default=200, help="Spider dev questions for EX (0: no EX)")
    p.add_argument(
        "--ex-min-speed",
        type=float,
        default=0.5,
        help="no EX for a variant whose batch tok/s is under this fraction of fp32's (too slow to serve)",
    )
    p.add_argument("--speed-rounds", type=int, default=2, help="further speed passes over all variants (medians)")
    p.add_argument("--out", type=Path, default=REPORT_DIR)
    p.add_argument("--child", choices=list(BY_NAME), help=argparse.SUPPRESS)  # measure one built variant
    p.add_argument("--speed-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ex-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--render", type=Path, metavar="JSON", help="rewrite a report's .md and .png from its .json")
    a = p.parse_args(argv)
    if a.render:  # after a change to the markdown: no measuring
        result = json.loads(a.render.read_text())
        result["verdict"] = verdict(result["variants"])
        write_report(result, a.render.parent, a.render.stem.removeprefix("quant-variants-"))
        print(markdown(result, result["plot"]))
        return 0
    if a.child and a.ex_only:
        v = BY_NAME[a.child]
        gen, _ = _load(v)
        print(json.dumps(ex_fields(evaluate(v, gen, a.ex_limit, a.batch))))
        return 0
    if a.child and a.speed_only:
        v = BY_NAME[a.child]
        gen, _ = _load(v)
        print(json.dumps(speed(gen, [it["prompt"] for it in bench_prompts(a.prompts, 0)], a.new_tokens, a.batch)))
        return 0
    if a.child:
        print(json.dumps(measure(BY_NAME[a.child], a.prompts, a.new_tokens, a.batch, a.max_new)))
        return 0
    if not (FP32_DIR / "model.onnx").exists():
        print(f"no fp32 model at {FP32_DIR}: run `make model` first", file=sys.stderr)
        return 2
    result = compare_all(
        a.variants, a.prompts, a.new_tokens, a.batch, a.max_new, a.ex_limit, a.speed_rounds, a.ex_min_speed
    )
    json_path, md_path = write_report(result, a.out, datetime.now(UTC).strftime("%Y%m%dT%H%M"))
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
