"""Stage 4, export: base (+ trained weights, merged) → ONNX with KV cache → weight-only int8 for onnxruntime.

    python -m models.export                          # BASE_MODEL's committed adapter if there is one, else the base
    python -m models.export --base smollm2-135m      # another registered base (models.bases)
    python -m models.export --adapter none           # the base model alone (zero-shot)
    python -m models.export --bits 4                 # int4 weights instead of int8

    python -m models.export --keep                   # also keep the fp32 export and the merged weights (benchmarks)
    python -m models.export --adapter RUN/published --out-dir build/onnx/smollm2-135m/pruned --keep
                                                     # another model beside the served one (a pruned one here)

Any method's saved weights (`models.methods`: a LoRA adapter, full top layers, QLoRA, BitNet) are merged by their
method into a plain model first. Writes build/onnx/<base>/int8, what the service serves. The base is read from its
GGUF when it was never converted, the merge happens in memory, and the fp32 export is a step on the way (in
memory-backed /dev/shm when there is room, removed once its graph is loaded): for Qwen that keeps the 2.4 GB base,
the 2.4 GB merged weights and the export's 5 GB peak off the disk (a fresh machine's `make test` ran out of space
with them). `--keep` leaves build/onnx/<base>/fp32, build/merged/<base> and the converted base build/base/<base> in
place for the benchmarks that compare against them.

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
import gc
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.core.config import BUILD_DIR  # noqa: E402
from models.attention_graph import rewrite_dir, rewrite_model, save_model  # noqa: E402
from models.base import convert, load_base, load_model, load_tokenizer, save_tokenizer  # noqa: E402
from models.bases import BaseModelError, BaseSpec, get_base  # noqa: E402
from models.embed_int8 import quantize_embeddings  # noqa: E402
from models.methods import MethodError, is_saved, load_merged  # noqa: E402

MANIFEST = "querywise.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
BROADCAST = "broadcast kv heads (models.attention_graph)"


def _stamp(spec: BaseSpec, adapter: Path | None, bits: int, block_size: int, base_dir: Path | None = None) -> str:
    h = hashlib.sha256(f"v4 {spec.name} last-logits bits={bits} block={block_size}".encode())
    if base_dir is not None:  # other weights of the base (their path: a merged model is rewritten in place rarely)
        h.update(f" base_dir={Path(base_dir).resolve()}".encode())
    if adapter:
        for f in sorted(adapter.glob("adapter_*")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def model_id(spec: BaseSpec, adapter: Path | None) -> str:
    return f"{spec.name}+{adapter.name}" if adapter else f"{spec.name} (base, few-shot)"


def merge(spec: BaseSpec, adapter: Path | None, keep_dir: Path | None = None, base_dir: Path | None = None):
    """The base (converted dir or GGUF, `models.base.load_base`) with the trained weights merged by their method, in
    memory: the exported graph has no adapter overhead. `keep_dir` also saves the merged weights there (for BitNet
    the ternary weights; the per-token activation rounding is in the exported graph, not in those files).
    `base_dir`: other weights of the base that the adapter was trained over (a run's `base_dir`, e.g. the served
    model merged): merged onto the registry base instead, such an adapter would lose what those weights add."""
    if base_dir is not None:
        if not (Path(base_dir) / "config.json").exists():
            raise BaseModelError(f"base_dir {base_dir} has no config.json (a Hugging Face model directory)")
        model, tok = load_model(base_dir), load_tokenizer(base_dir)
    else:
        model, tok = load_base(spec)
    if adapter is not None:
        print(f"merging {adapter} ...", flush=True)
        model = load_merged(model, adapter)
        if keep_dir is not None:
            keep_dir.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(keep_dir, safe_serialization=True)
            save_tokenizer(tok, keep_dir)
    return model, tok


@contextmanager
def tensor_files_kept():
    """Leave a large export's weights as the exporter wrote them, one file per tensor beside the graph.

    Over protobuf's 2 GB, optimum gathers the exporter's per-tensor files into one file and deletes them only after:
    both copies lie on disk together (12.4 GB for the 1.5B in fp32, which filled a CI machine's disk). The graph is
    loaded into memory right after the export anyway, so the gathering buys nothing here: optimum decides it by
    `check_model_uses_external_data`, which answers "no" while this is active.
    """
    import optimum.exporters.onnx.convert as convert_module

    original = convert_module.check_model_uses_external_data
    convert_module.check_model_uses_external_data = lambda _model: False
    try:
        yield
    finally:
        convert_module.check_model_uses_external_data = original


def export_model(model, tok, out_dir: Path) -> Path:
    """ONNX with KV cache (optimum's text-generation-with-past) of an in-memory model, its tokenizer beside it.

    A graph over 2 GB keeps its weights in one file per tensor beside it (`tensor_files_kept`): load it with
    `onnx.load`, which finds them, and save it with `save_model`."""
    from optimum.exporters.onnx import onnx_export_from_model

    print(f"exporting to ONNX (KV cache) in {out_dir} ...", flush=True)
    model.config.use_cache = True
    model.config.architectures = [type(model).__name__]  # as save_pretrained records it (a GGUF load leaves none)
    with tensor_files_kept():
        onnx_export_from_model(
            model, out_dir, task="text-generation-with-past", do_validation=False, preprocessors=[tok]
        )
    save_tokenizer(tok, out_dir)  # the repaired one (end of turn, no BOS, no space clean-up)
    return out_dir


def export_onnx(src: Path, out_dir: Path, tokenizer_dir: Path) -> Path:
    """ONNX export of a model directory (optimum's loader)."""
    from optimum.exporters.onnx import main_export

    print(f"exporting {src} to ONNX (KV cache) ...", flush=True)
    main_export(
        str(src), output=str(out_dir), task="text-generation-with-past", do_validation=False, local_files_only=True
    )
    for name in TOKENIZER_FILES:  # the engine needs only the fast tokenizer, not the GGUF copy
        shutil.copy(tokenizer_dir / name, out_dir / name)
    return out_dir


def keep_last_logits(onnx_path: Path) -> None:
    """`last_logits_only` on a saved graph, saved back in place."""
    import onnx

    model = onnx.load(str(onnx_path))
    last_logits_only(model)
    save_model(model, onnx_path)


def last_logits_only(model) -> None:
    """Compute logits for the last position only (on a loaded graph, in place).

    Generation needs the next-token distribution of the last position; the exported graph computes the
    49k-vocabulary head for every prompt position (a 600-token prompt in a batch of 8 makes ~1 GB of logits and
    ~20% of prefill compute). A Slice before the lm_head MatMul keeps `hidden[:, -1:, :]`; decoding steps
    (one position) are unchanged.
    """
    import numpy as np
    from onnx import helper, numpy_helper

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


def quantize(model, out_dir: Path, bits: int = 8, block_size: int = 32) -> Path:
    """Weight-only MatMulNBits quantization of a loaded fp32 graph (consumed), saved as out_dir/model.onnx."""
    import logging

    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)

    print(f"quantizing weights to int{bits} (MatMulNBits, block {block_size}) ...", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    q = MatMulNBitsQuantizer(model, bits=bits, block_size=block_size, is_symmetric=True, accuracy_level=4)
    q.process()
    # the embedding table, which MatMulNBits leaves in fp32 (half the 0.5B export's size), to int8 as well
    quantize_embeddings(q.model.model)
    # over protobuf's 2 GB (the 1.5B's int8 weights) `save_model` puts the weights in one file beside the graph
    q.model.topological_sort()
    save_model(q.model.model, out_dir / "model.onnx")
    return out_dir


def _mem_available() -> float:
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return 0


def scratch_dir(need: float, base: Path = Path("/dev/shm")) -> Path | None:
    """A fresh directory in memory-backed /dev/shm for a transient export of `need` bytes, or None (then the build
    directory is used): only if the tmpfs has room and the memory available (the model to export already loaded)
    holds 2.5x that and 2 GB besides. Measured for the 1.5B (6.8 GB export): the tracing process grows by ~4 GB, and
    once the graph is loaded from the export both lie in memory together (21.7 of 23 GB used with 8 GB to spare
    at the check: too close, so that export now goes to disk; the 0.5B's 2.8 GB still goes to /dev/shm)."""
    try:
        if not base.is_dir() or shutil.disk_usage(base).free < need or _mem_available() < 2.5 * need + 2e9:
            return None
        return Path(tempfile.mkdtemp(prefix="querywise-export-", dir=base))
    except OSError:
        return None


def _tensors(graph):
    """Every tensor a graph holds: its initializers and its nodes' tensor attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def side_files(export_dir: Path) -> list[Path]:
    """An export's files other than its graph and the graph's weight files (configs, tokenizer)."""
    import onnx

    model = onnx.load(str(export_dir / "model.onnx"), load_external_data=False)
    weights = {entry.value for t in _tensors(model.graph) for entry in t.external_data if entry.key == "location"}
    return [f for f in export_dir.iterdir() if f.is_file() and f.name != "model.onnx" and f.name not in weights]


def check_room(d: Path, need: float) -> None:
    """Refuse, naming both sizes, an export that would fill the disk under `d` halfway (a clear message, not an
    OSError from deep inside the exporter)."""
    free = shutil.disk_usage(d).free
    if free < need:
        raise BaseModelError(
            f"exporting needs about {need / 1e9:.1f} GB free under {d} for the fp32 graph on the way to int8; "
            f"{free / 1e9:.1f} GB are free (free some space, or export on a machine with more)"
        )


def upgrade_attention(d: Path) -> None:
    """Rewrite the attention of an export made before `models.attention_graph` existed (in place, once)."""
    info = read_manifest(d)
    if not info or info.get("attention") == BROADCAST or not (d / "model.onnx").exists():
        return
    print(f"rewriting attention to broadcast KV heads: {d}", flush=True)
    rewrite_dir(d, d)
    write_manifest(d, **(info | {"attention": BROADCAST}))


def onnx_size(d: Path) -> int:
    """Bytes of an export's graph with its external weights, if any (`model.onnx_data` beside a large graph)."""
    return sum(f.stat().st_size for f in d.glob("model.onnx*"))


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
    keep: bool = False,
    base_dir: Path | None = None,
) -> Path:
    """`out_dir` (default build/onnx/<base>) gets int<bits>/ (and fp32/ with `keep`), so a second export never
    touches the served one. `label` names the model (`<base>+<label>`) instead of the adapter directory's name.
    `keep` also leaves the fp32 export, the converted base and (default out_dir only) the merged weights.
    `base_dir`: the weights the adapter was trained over when they are not the registry base's (`merge`)."""
    stamp = _stamp(spec, adapter, bits, block_size, base_dir)
    root = out_dir or spec.onnx_dir
    qdir, fdir = root / f"int{bits}", root / "fp32"
    done = read_manifest(qdir).get("stamp") == stamp and (qdir / "model.onnx").exists()
    if keep:
        done = done and read_manifest(fdir).get("stamp") == stamp and (fdir / "model.onnx").exists()
    if not force and done:
        for d in (fdir, qdir):
            upgrade_attention(d)
        print(f"ONNX model up to date: {qdir}")
        return qdir
    t0 = time.time()
    if keep:
        convert(spec)
    info = {
        "model_id": f"{spec.name}+{label}" if label else model_id(spec, adapter),
        "adapter": label or (adapter.name if adapter else None),
        "stamp": stamp,
        "base": spec.name,
        "base_title": spec.title,
    }
    keep_dir = BUILD_DIR / "merged" / spec.name if keep and not out_dir and base_dir is None else None
    model, tok = merge(spec, adapter, keep_dir, base_dir)
    for d in (fdir, qdir):
        if d.exists():
            shutil.rmtree(d)
    # the fp32 export is the weights once (one file per tensor, `tensor_files_kept`): to scratch space in memory
    # when there is room for it, else beside fp32/ (kept, it is gathered into fp32/ and then removed)
    weights = 4 * sum(p.numel() for p in model.parameters())
    scratch = None if keep else scratch_dir(1.1 * weights)  # the graph's own bytes besides (6.7 GB for the 1.5B)
    export_dir = scratch or fdir.with_name("fp32.exporting")
    if scratch is None:  # refused only where it surely fails: the fp32 weights alone (twice, kept) would not fit
        root.mkdir(parents=True, exist_ok=True)
        check_room(root, weights * (2 if keep else 1))
    shutil.rmtree(export_dir, ignore_errors=True)
    try:
        export_model(model, tok, export_dir)
        del model  # the weights are in the export now
        gc.collect()
        import onnx

        graph = onnx.load(str(export_dir / "model.onnx"))  # with its weights: the steps below work in memory
        last_logits_only(graph)
        rewrite_model(graph, json.loads((export_dir / "config.json").read_text()))  # int8 inherits it
        info["attention"] = BROADCAST
        qdir.mkdir(parents=True)
        for f in export_dir.iterdir():
            if f.suffix == ".json" and f.name != MANIFEST:
                shutil.copy(f, qdir / f.name)
        if keep:
            fdir.mkdir(parents=True)
            for f in side_files(export_dir):
                shutil.copy(f, fdir / f.name)
            shutil.rmtree(export_dir)  # the graph and its weights are in memory
            save_model(graph, fdir / "model.onnx")
            write_manifest(fdir, **info, quantization="fp32")
            graph = onnx.load(str(fdir / "model.onnx"))  # saving weights externally took them out of the graph
            print(f"  {fdir}: {onnx_size(fdir) / 1e6:.0f} MB")
    finally:
        # gone before the int8 model is written: the two never lie on disk together
        shutil.rmtree(export_dir, ignore_errors=True)
    # after any method's merge: BitNet's ternary weights come out 8-bit too (models.methods.bitnet says how exactly)
    quantize(graph, qdir, bits, block_size)
    write_manifest(
        qdir,
        **info,
        quantization=f"weight-only int{bits} (MatMulNBits, block {block_size}, accuracy_level 4; embeddings int8)",
    )
    print(f"  {qdir}: {onnx_size(qdir) / 1e6:.0f} MB")
    print(f"export done in {time.time() - t0:.0f}s")
    return qdir


def main() -> None:
    p = argparse.ArgumentParser(description="Merge, export to ONNX and quantize the serving model")
    p.add_argument("--base", default=None, help="registry name (default: BASE_MODEL or qwen2.5-coder-1.5b)")
    p.add_argument(
        "--adapter",
        default="",
        help="trained weights (a LoRA adapter or any method's saved dir), or 'none' for the base model "
        "(default: the base's committed adapter if present)",
    )
    p.add_argument("--bits", type=int, choices=(4, 8), default=8)
    p.add_argument("--block-size", type=int, default=32)
    p.add_argument(
        "--base-dir",
        type=Path,
        default=None,
        help="the weights the adapter was trained over, when not the registry base's (a run's base_dir, e.g. "
        "build/merged/<base>); the export's own out-dir is then required, so the served model is not replaced",
    )
    p.add_argument("--force", action="store_true")
    p.add_argument("--keep", action="store_true", help="also keep the fp32 export, merged weights and converted base")
    p.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="write int<bits>/ (and fp32/) here instead of build/onnx/<base> (e.g. build/onnx/<base>/pruned, which "
        "the quantization table's pruned rows read)",
    )
    a = p.parse_args()
    try:
        spec = get_base(a.base)
    except BaseModelError as exc:
        sys.exit(str(exc))
    adapter = None if a.adapter == "none" else Path(a.adapter or spec.adapter_dir)
    if adapter is not None and not is_saved(adapter):
        if a.adapter:
            sys.exit(f"no trained weights at {adapter} (expected adapter_config.json or adapter_method.json)")
        print(f"no committed adapter for {spec.name}: exporting the base model (zero-shot)")
        adapter = None
    if a.base_dir is not None and a.out_dir is None:
        sys.exit("--base-dir needs --out-dir: the export over other weights goes beside the served model")
    try:
        build(spec, adapter, a.bits, a.block_size, a.force, out_dir=a.out_dir, keep=a.keep, base_dir=a.base_dir)
    except (BaseModelError, MethodError) as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main()
