"""Patch an ONNX export with a LoRA's merged delta: the same graph with a few weights rewritten, instead of a
re-export.

    python -m models.patch build/onnx/qwen2.5-coder-1.5b/int8 <adapter dir> <out dir> [--label NAME]

Re-exporting the 1.5B traces its fp32 weights again (~21 GB of memory at the peak: more than a machine serving it has
to spare). A LoRA changes only the linear layers it wraps, W' = W + s·B·A, and in an export those weights are the
initializers of one MatMul (fp32, [K, N]) or MatMulNBits (int8 codes in blocks of 32 along K, one scale per block,
[N, K/32, 32]) node each, named after the module (`/model/layers.27/self_attn/q_proj/MatMul_Q8` is
`model.layers.27.self_attn.q_proj`). A patch copies the export and rewrites only those. A quantized block keeps its
scale and adds the delta to its codes in steps of that scale; only a block the delta pushes past the int8 range is
requantized with a new one. So the patch adds no rounding beyond half a step of the delta itself, and every weight the
adapter does not touch keeps its bytes.

The adapter must have been trained over the weights the export holds: the base's own export, which has no adapter and
is served few-shot. The patched export keeps the format examples in its prompts (`prompt_examples` in its manifest),
so the LoRA must be trained with them there too (`models.specialize` does).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from models.adapter_io import WEIGHTS, load_weights

ZERO_POINT_8BIT = 128  # MatMulNBits' implied zero point for 8-bit codes without a zero-point input (symmetric)


class PatchError(Exception):
    """The export or the adapter cannot be patched this way (the message says why)."""


def lora_deltas(adapter_dir: Path) -> dict[str, np.ndarray]:
    """{module path (`model.layers.27.self_attn.q_proj`): s·B·A as [out, in] float32} of a peft LoRA adapter,
    stored in float or in the compact row-wise int8 form (`models.adapter_io`)."""
    adapter_dir = Path(adapter_dir)
    try:
        cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
        weights = load_weights(adapter_dir / WEIGHTS)
    except (OSError, ValueError) as exc:
        raise PatchError(f"no LoRA adapter at {adapter_dir}: {exc}") from None
    if cfg.get("peft_type", "LORA") != "LORA":
        raise PatchError(f"{adapter_dir} is a {cfg.get('peft_type')} adapter; only LoRA is patched")
    deltas = {}
    for key, a in weights.items():
        if ".lora_A." not in key:
            continue
        b = weights[key.replace(".lora_A.", ".lora_B.")]
        module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
        r = a.shape[0]  # a rank pattern gives modules their own rank; the factor's shape says which
        alpha = next((v for k, v in (cfg.get("alpha_pattern") or {}).items() if module.endswith(k)), cfg["lora_alpha"])
        scale = alpha / (r**0.5 if cfg.get("use_rslora") else r)
        deltas[module] = (b.double() @ a.double() * scale).float().numpy()
    if not deltas:
        raise PatchError(f"{adapter_dir} holds no LoRA factors")
    return deltas


def linear_nodes(graph) -> dict[str, object]:
    """{module path: its MatMul or MatMulNBits node}, from the node names the exporter gives them."""
    out = {}
    for node in graph.node:
        if node.op_type in ("MatMul", "MatMulNBits") and node.name.startswith("/"):
            path, _, last = node.name.strip("/").rpartition("/")
            if last.startswith("MatMul") and path:
                out.setdefault(path.replace("/", "."), node)
    return out


def requantize_8bit(codes: np.ndarray, scales: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """MatMulNBits 8-bit blocks plus a delta: (codes [N, blocks, bs] uint8, scales [N, blocks], blocks rescaled).

    A block whose codes stay in range keeps its scale (its unchanged weights keep their exact values); the others get
    the scale of their new largest magnitude."""
    n, nb, bs = codes.shape
    pad = np.zeros((n, nb * bs), np.float32)
    pad[:, : delta.shape[1]] = delta
    d = pad.reshape(n, nb, bs)
    s = scales.astype(np.float32).reshape(n, nb, 1)
    q = codes.astype(np.float32) - ZERO_POINT_8BIT
    with np.errstate(divide="ignore", invalid="ignore"):
        # onnxruntime's scales are signed (the largest magnitude maps to code -128); a zero scale (an all-zero
        # block) cannot take a delta and is requantized below
        new = np.where(s != 0, q + d / s, np.inf)
    new = np.round(new)
    bad = ~np.all((new >= -128) & (new <= 127), axis=2)
    if bad.any():
        w = q[bad] * s[bad] + d[bad]
        s_new = np.abs(w).max(axis=1, keepdims=True) / 127
        new[bad] = np.where(s_new > 0, np.round(w / np.where(s_new > 0, s_new, 1)), 0)
        s[bad] = s_new
    out_codes = (np.clip(new, -128, 127) + ZERO_POINT_8BIT).astype(np.uint8)
    return out_codes, s.reshape(scales.shape).astype(scales.dtype), int(bad.sum())


def patch_model(model, deltas: dict[str, np.ndarray]) -> dict:
    """Add each delta to its node's weight initializers in the loaded model (in place). Returns counts."""
    from onnx import numpy_helper

    nodes = linear_nodes(model.graph)
    inits = {t.name: t for t in model.graph.initializer}
    uses = Counter(name for node in model.graph.node for name in node.input)
    missing = sorted(set(deltas) - set(nodes))
    if missing:
        raise PatchError(f"no MatMul in the export for {len(missing)} adapted modules, e.g. {missing[0]}")

    def tensor(name: str) -> np.ndarray:
        if name not in inits:
            raise PatchError(f"{name} is not a weight initializer of the export")
        if uses[name] != 1:  # a tied weight (e.g. embeddings and head) would change its other use too
            raise PatchError(f"{name} is shared by {uses[name]} nodes; patching it would change the others")
        return numpy_helper.to_array(inits[name])

    def put(name: str, arr: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(arr, name))

    rescaled = 0
    for module, delta in deltas.items():
        node = nodes[module]
        if node.op_type == "MatMul":
            w = tensor(node.input[1])  # [in, out]
            if w.shape != delta.T.shape:
                raise PatchError(f"{module}: export weight {w.shape}, adapter delta {delta.T.shape}")
            put(node.input[1], (w.astype(np.float32) + delta.T).astype(w.dtype))
            continue
        attrs = {a.name: a.i for a in node.attribute if a.type == a.INT}
        if attrs.get("bits") != 8 or (len(node.input) > 3 and node.input[3]):
            raise PatchError(
                f"{module}: only symmetric 8-bit MatMulNBits weights are patched (bits={attrs.get('bits')})"
            )
        codes, scales = tensor(node.input[1]), tensor(node.input[2])
        if (attrs["N"], attrs["K"]) != delta.shape:
            raise PatchError(f"{module}: export weight {(attrs['N'], attrs['K'])}, adapter delta {delta.shape}")
        new_codes, new_scales, n_bad = requantize_8bit(codes, scales, delta)
        put(node.input[1], new_codes)
        put(node.input[2], new_scales)
        rescaled += n_bad
    return {"modules": len(deltas), "blocks_rescaled": rescaled}


def patch_export(src: Path, adapter_dir: Path, out_dir: Path, label: str | None = None) -> dict:
    """Write `out_dir`: the export at `src` with the adapter's delta in its weights, its tokenizer and configs, and a
    manifest naming the model `<base>+<label>` (default: the adapter folder's name). Returns what was patched."""
    import onnx

    from models.attention_graph import save_model
    from models.export import read_manifest, side_files, write_manifest

    src, out_dir = Path(src), Path(out_dir)
    if not (src / "model.onnx").exists():
        raise PatchError(f"no export at {src} (model.onnx)")
    info = read_manifest(src)
    if info.get("adapter"):
        raise PatchError(
            f"{src} already holds the adapter {info['adapter']}; a patch goes onto the weights the new adapter was "
            "trained over (the base's own export)"
        )
    deltas = lora_deltas(adapter_dir)
    model = onnx.load(str(src / "model.onnx"))
    counts = patch_model(model, deltas)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(model, out_dir / "model.onnx")
    del model
    for f in side_files(src):
        if f.name != "querywise.json":
            shutil.copy2(f, out_dir / f.name)
    label = label or Path(adapter_dir).name
    base = info.get("base") or src.parent.name
    # the source has no adapter, so it is served few-shot; the patched model keeps the format examples in its
    # prompts (`prompt_examples`), as the LoRA is trained with them (models.specialize does)
    write_manifest(out_dir, **(info | {"model_id": f"{base}+{label}", "adapter": label, "prompt_examples": True,
                                       "patched_from": str(src), "patch": counts}))  # fmt: skip
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path, help="an export directory (model.onnx, tokenizer, querywise.json)")
    p.add_argument("adapter", type=Path, help="a LoRA adapter directory (adapter_config.json and weights)")
    p.add_argument("out", type=Path, help="the patched export's directory")
    p.add_argument("--label", default=None, help="the model id's part after '+' (default: the adapter's folder)")
    a = p.parse_args()
    try:
        counts = patch_export(a.src, a.adapter, a.out, a.label)
    except PatchError as exc:
        sys.exit(f"patch: {exc}")
    print(f"patched {counts['modules']} modules ({counts['blocks_rescaled']} blocks rescaled) into {a.out}")


if __name__ == "__main__":
    main()
