"""Stage 4, export: base (+ LoRA adapter, merged) → ONNX with KV cache → weight-only int8 for onnxruntime.

    python -m models.export                          # BASE_MODEL's committed adapter if there is one, else the base
    python -m models.export --base smollm2-135m      # another registered base (models.bases)
    python -m models.export --adapter none           # the base model alone (zero-shot)
    python -m models.export --bits 4                 # int4 weights instead of int8

Writes build/onnx/<base>/fp32 and build/onnx/<base>/int8; the service serves int8 by default.

Quantization: dynamic signed-int8 (per-tensor activations) overflows on AVX2 CPUs without VNNI and halved
accuracy on a toy test here; weight-only MatMulNBits (8-bit weights, block-wise scales, accuracy_level=4: int8
compute with fp32 accumulation) matched fp32 exactly. Each export writes `querywise.json` (model id, adapter,
quantization, a stamp of its inputs) so a second `make model` is a no-op unless the adapter or settings changed.

The exported graph copies each key/value head out to its 3 query heads at every step; `models.attention_graph`
rewrites attention to broadcast them instead (bit-identical logits and KV, 1.04-1.64x faster decode steps, most at
batch 8 with long prompts). An export from before that rewrite is upgraded in place (`attention` in the manifest);
its stamp stays, since its answers do not change.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.core.config import BUILD_DIR  # noqa: E402
from models.adapter_io import materialize  # noqa: E402
from models.attention_graph import rewrite_dir, save_model  # noqa: E402
from models.base import convert, load_tokenizer  # noqa: E402
from models.bases import BaseModelError, BaseSpec, get_base  # noqa: E402

MANIFEST = "querywise.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
BROADCAST = "broadcast kv heads (models.attention_graph)"


def _stamp(spec: BaseSpec, adapter: Path | None, bits: int, block_size: int) -> str:
    h = hashlib.sha256(f"v3 {spec.name} last-logits bits={bits} block={block_size}".encode())
    if adapter:
        for f in sorted(adapter.glob("adapter_*")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def model_id(spec: BaseSpec, adapter: Path | None) -> str:
    return f"{spec.name}+{adapter.name}" if adapter else f"{spec.name} (base, few-shot)"


def merge(spec: BaseSpec, adapter: Path | None, out_dir: Path) -> Path:
    """Base weights with the LoRA update folded in: the exported graph has no adapter overhead."""
    if adapter is None:
        return spec.model_dir
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    print(f"merging adapter {adapter} ...", flush=True)
    base = AutoModelForCausalLM.from_pretrained(spec.model_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, materialize(adapter)).merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir, safe_serialization=True)
    load_tokenizer(spec.model_dir).save_pretrained(out_dir)
    return out_dir


def export_onnx(src: Path, out_dir: Path, tokenizer_dir: Path) -> Path:
    from optimum.exporters.onnx import main_export

    print(f"exporting {src} to ONNX (KV cache) ...", flush=True)
    main_export(
        str(src), output=str(out_dir), task="text-generation-with-past", do_validation=False, local_files_only=True
    )
    for name in TOKENIZER_FILES:  # the engine needs only the fast tokenizer, not the GGUF copy
        shutil.copy(tokenizer_dir / name, out_dir / name)
    return out_dir


def keep_last_logits(onnx_path: Path) -> None:
    """Compute logits for the last position only.

    Generation needs the next-token distribution of the last position; the exported graph computes the
    49k-vocabulary head for every prompt position (a 600-token prompt in a batch of 8 makes ~1 GB of logits and
    ~20% of prefill compute). A Slice before the lm_head MatMul keeps `hidden[:, -1:, :]`; decoding steps
    (one position) are unchanged.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(onnx_path))
    head = next(n for n in model.graph.node if n.op_type == "MatMul" and "lm_head" in n.name)
    hidden, last = head.input[0], head.input[0] + "_last"
    consts = {"qw_last_starts": -1, "qw_last_ends": np.iinfo(np.int64).max, "qw_last_axes": 1}
    model.graph.initializer.extend(numpy_helper.from_array(np.array([v], np.int64), k) for k, v in consts.items())
    slice_node = helper.make_node("Slice", [hidden, *consts], [last], name="/lm_head/SliceLast")
    head.input[0] = last
    nodes = list(model.graph.node)
    nodes.insert(nodes.index(head), slice_node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    logits = next(o for o in model.graph.output if o.name == "logits")
    logits.type.tensor_type.shape.dim[1].Clear()
    logits.type.tensor_type.shape.dim[1].dim_value = 1
    save_model(model, onnx_path)


def quantize(fp32_dir: Path, out_dir: Path, bits: int = 8, block_size: int = 32) -> Path:
    import logging

    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)

    print(f"quantizing weights to int{bits} (MatMulNBits, block {block_size}) ...", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    q = MatMulNBitsQuantizer(
        str(fp32_dir / "model.onnx"), bits=bits, block_size=block_size, is_symmetric=True, accuracy_level=4
    )
    q.process()
    q.model.save_model_to_file(str(out_dir / "model.onnx"), use_external_data_format=False)
    for f in fp32_dir.iterdir():
        if f.suffix == ".json" and f.name != MANIFEST:
            shutil.copy(f, out_dir / f.name)
    return out_dir


def upgrade_attention(d: Path) -> None:
    """Rewrite the attention of an export made before `models.attention_graph` existed (in place, once)."""
    info = read_manifest(d)
    if not info or info.get("attention") == BROADCAST or not (d / "model.onnx").exists():
        return
    print(f"rewriting attention to broadcast KV heads: {d}", flush=True)
    rewrite_dir(d, d)
    write_manifest(d, **(info | {"attention": BROADCAST}))


def write_manifest(d: Path, **info) -> None:
    (d / MANIFEST).write_text(json.dumps(info, indent=2))


def read_manifest(d: Path) -> dict:
    try:
        return json.loads((d / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def build(
    spec: BaseSpec,
    adapter: Path | None,
    bits: int = 8,
    block_size: int = 32,
    force: bool = False,
    out_dir: Path | None = None,
    label: str | None = None,
) -> Path:
    """`out_dir` (default build/onnx/<base>) gets fp32/ and int<bits>/; another out_dir also keeps the merged
    weights to itself (removed after), so a second export never touches the served one. `label` names the model
    (`<base>+<label>`) instead of the adapter directory's name."""
    stamp = _stamp(spec, adapter, bits, block_size)
    root = out_dir or spec.onnx_dir
    qdir, fdir = root / f"int{bits}", root / "fp32"
    if not force and read_manifest(qdir).get("stamp") == stamp and (qdir / "model.onnx").exists():
        for d in (fdir, qdir):
            upgrade_attention(d)
        print(f"ONNX model up to date: {qdir}")
        return qdir
    t0 = time.time()
    convert(spec)
    info = {
        "model_id": f"{spec.name}+{label}" if label else model_id(spec, adapter),
        "adapter": label or (adapter.name if adapter else None),
        "stamp": stamp,
        "base": spec.name,
        "base_title": spec.title,
    }
    src = merge(spec, adapter, root / "merged" if out_dir else BUILD_DIR / "merged" / spec.name)
    if fdir.exists():
        shutil.rmtree(fdir)
    export_onnx(src, fdir, spec.model_dir)
    keep_last_logits(fdir / "model.onnx")
    rewrite_dir(fdir, fdir)  # before quantizing: weight-only int8 leaves attention's MatMuls alone, so it inherits it
    info["attention"] = BROADCAST
    write_manifest(fdir, **info, quantization="fp32")
    if qdir.exists():
        shutil.rmtree(qdir)
    quantize(fdir, qdir, bits, block_size)
    write_manifest(
        qdir, **info, quantization=f"weight-only int{bits} (MatMulNBits, block {block_size}, accuracy_level 4)"
    )
    if out_dir and src != spec.model_dir:
        shutil.rmtree(src, ignore_errors=True)
    for d in (fdir, qdir):
        print(f"  {d}: {(d / 'model.onnx').stat().st_size / 1e6:.0f} MB")
    print(f"export done in {time.time() - t0:.0f}s")
    return qdir


def main() -> None:
    p = argparse.ArgumentParser(description="Merge, export to ONNX and quantize the serving model")
    p.add_argument("--base", default=None, help="registry name (default: BASE_MODEL or qwen2.5-coder-0.5b)")
    p.add_argument(
        "--adapter",
        default="",
        help="LoRA adapter directory, or 'none' for the base model (default: the base's committed adapter if present)",
    )
    p.add_argument("--bits", type=int, choices=(4, 8), default=8)
    p.add_argument("--block-size", type=int, default=32)
    p.add_argument("--force", action="store_true")
    a = p.parse_args()
    try:
        spec = get_base(a.base)
    except BaseModelError as exc:
        sys.exit(str(exc))
    adapter = None if a.adapter == "none" else Path(a.adapter or spec.adapter_dir)
    if adapter is not None and not (adapter / "adapter_config.json").exists():
        if a.adapter:
            sys.exit(f"no LoRA adapter at {adapter} (expected adapter_config.json)")
        print(f"no committed adapter for {spec.name}: exporting the base model (zero-shot)")
        adapter = None
    try:
        build(spec, adapter, a.bits, a.block_size, a.force)
    except BaseModelError as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main()
