"""Graph surgery on the exported decoder: grouped-query attention by broadcasting instead of copying K and V.

The optimum export repeats each of the 3 key/value heads for its 3 query heads (`repeat_kv`: Unsqueeze → Expand →
Reshape), so every decode step copies the whole KV cache three times over per layer before attention reads it.
At batch 8 with 600 tokens of context that copy (Expand) was the largest single cost of a step. Here the query
heads are grouped instead, [B, 9, S, D] → [B, 3, 3, S, D], and MatMul broadcasts the cache [B, 3, 1, T, D] over
the group: the same per-head matrix products (same shapes, same kernels, same scale fusion), so logits and the
present KV stay bit-identical to the exported graph; only the copies go. The graph's inputs and outputs do not
change, so the engine runs either graph.

    python -m models.attention_graph build/onnx/fp32 build/onnx-bcast/fp32     # rewrite a model directory
    python -m models.attention_graph build/onnx/fp32 build/onnx/fp32           # in place
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper


class PatternError(ValueError):
    """The graph does not have the exported attention pattern this rewrite expects."""


def _single(consumers: dict[str, list[onnx.NodeProto]], name: str, op: str) -> onnx.NodeProto:
    nodes = [n for n in consumers[name] if n.op_type == op]
    if len(nodes) != 1:
        raise PatternError(f"expected one {op} reading {name}, found {len(nodes)}")
    return nodes[0]


def broadcast_kv_heads(model: onnx.ModelProto, kv_heads: int, groups: int, head_dim: int) -> int:
    """Rewrite every layer's attention in place; returns the number of layers rewritten."""
    g = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in g.node:
        for x in n.input:
            consumers[x].append(n)
    consts = {
        "qw_bcast_q_shape": [0, kv_heads, groups, -1, head_dim],
        "qw_bcast_out_shape": [0, kv_heads * groups, -1, head_dim],
        "qw_bcast_axis1": [1],
    }
    g.initializer.extend(numpy_helper.from_array(np.array(v, np.int64), k) for k, v in consts.items())
    added: dict[str, list[onnx.NodeProto]] = {}  # name of the node to insert before -> new nodes
    layers = [o.name for o in g.output if o.name.startswith("present.") and o.name.endswith(".key")]
    for key in layers:
        value = key[: -len("key")] + "value"
        # keys: present → Unsqueeze → Expand → Reshape → Transpose → Mul (scale) → MatMul(q * scale, ·)
        k_unsq = _single(consumers, key, "Unsqueeze")
        k_exp = _single(consumers, k_unsq.output[0], "Expand")
        k_resh = _single(consumers, k_exp.output[0], "Reshape")
        k_tr = _single(consumers, k_resh.output[0], "Transpose")
        k_mul = _single(consumers, k_tr.output[0], "Mul")
        scores = _single(consumers, k_mul.output[0], "MatMul")
        q_mul = next(n for n in g.node if scores.input[0] in n.output)
        if q_mul.op_type != "Mul":
            raise PatternError(f"the query of {scores.name} is not scaled by a Mul")
        add_mask = _single(consumers, scores.output[0], "Add")
        mask_slot = 1 if add_mask.input[0] == scores.output[0] else 0
        softmax = _single(consumers, add_mask.output[0], "Softmax")
        axis = next((a for a in softmax.attribute if a.name == "axis"), None)
        if axis is not None and axis.i not in (-1, 3):
            raise PatternError(f"{softmax.name} is not over the last axis")
        if axis is not None:
            axis.i = -1  # still the last axis once scores are 5-D
        # values: present → Unsqueeze → Expand → Reshape → MatMul(probs, ·) → Transpose
        v_unsq = _single(consumers, value, "Unsqueeze")
        v_exp = _single(consumers, v_unsq.output[0], "Expand")
        v_resh = _single(consumers, v_exp.output[0], "Reshape")
        pv = _single(consumers, v_resh.output[0], "MatMul")
        after = consumers[pv.output[0]]
        prefix = scores.name.rsplit("/", 1)[0] + "/qw_bcast"

        # queries grouped by their key/value head; the scale Mul stays next to the MatMul so ORT still folds both
        # scales into one FusedMatMul alpha, as it does for the exported graph
        q5 = helper.make_node("Reshape", [q_mul.input[0], "qw_bcast_q_shape"], [f"{prefix}_q"], name=f"{prefix}_q")
        q_mul.input[0] = q5.output[0]
        k_tr.input[0] = k_unsq.output[0]  # [B, kv, 1, T, D]: no copy to 9 heads
        del k_tr.attribute[:]
        k_tr.attribute.append(helper.make_attribute("perm", [0, 1, 2, 4, 3]))
        # the mask slice reads the key length from the expanded keys: the cache has the same length
        for n in consumers[k_resh.output[0]]:
            if n.op_type == "Shape":
                n.input[0] = key
        mask5 = helper.make_node(
            "Unsqueeze", [add_mask.input[mask_slot], "qw_bcast_axis1"], [f"{prefix}_mask"], name=f"{prefix}_mask"
        )
        add_mask.input[mask_slot] = mask5.output[0]
        pv.input[1] = v_unsq.output[0]
        out4 = helper.make_node("Reshape", [pv.output[0], "qw_bcast_out_shape"], [f"{prefix}_o"], name=f"{prefix}_o")
        for n in after:
            n.input[:] = [out4.output[0] if x == pv.output[0] else x for x in n.input]
        added.setdefault(q_mul.name, []).append(q5)
        added.setdefault(add_mask.name, []).append(mask5)
        added.setdefault(after[0].name, []).append(out4)
    nodes = []
    for n in g.node:
        nodes += added.get(n.name, [])
        nodes.append(n)
    _keep_live(g, nodes)
    return len(layers)


def _keep_live(g: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    """Drop the nodes (and initializers) no graph output depends on any more: the K/V expansion and its shapes."""
    needed = {o.name for o in g.output}
    live = []
    for n in reversed(nodes):
        if any(o in needed for o in n.output):
            live.append(n)
            needed.update(n.input)
    live.reverse()
    del g.node[:]
    g.node.extend(live)
    inits = [t for t in g.initializer if t.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Save atomically; weights over protobuf's 2 GB limit (Qwen fp32: 2.5 GB) go to one external data file beside
    the graph, `<name>_data`, which onnxruntime finds by its relative location.

    Both files are written in a fresh folder and then moved into place: onnx appends to an existing data file, and
    the model being saved usually came from (and is held in memory from) the one it replaces.
    """
    path = Path(path)
    tmp_dir = path.parent / f".{path.name}.saving"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir()
    data = path.name + "_data"
    if sum(len(t.raw_data) for t in model.graph.initializer) > 1_800_000_000:
        onnx.save(
            model, str(tmp_dir / path.name), save_as_external_data=True, all_tensors_to_one_file=True, location=data
        )
        (tmp_dir / data).replace(path.parent / data)
    else:
        onnx.save(model, str(tmp_dir / path.name))
        (path.parent / data).unlink(missing_ok=True)
    (tmp_dir / path.name).replace(path)
    tmp_dir.rmdir()


def rewrite_model(model: onnx.ModelProto, config: dict) -> int:
    """Rewrite a loaded graph in place for its Hugging Face `config`; returns the number of layers rewritten."""
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    return broadcast_kv_heads(model, kv_heads, heads // kv_heads, head_dim)


def rewrite_dir(src: Path, dst: Path) -> int:
    """Copy a model directory with its graph rewritten; returns the number of layers rewritten."""
    model = onnx.load(str(src / "model.onnx"))
    n = rewrite_model(model, json.loads((src / "config.json").read_text()))
    copy_beside_graph(src, dst)
    save_model(model, dst / "model.onnx")
    return n


def copy_beside_graph(src: Path, dst: Path) -> None:
    """Copy an export directory's files other than the graph and its external data (which the caller re-saves)."""
    dst.mkdir(parents=True, exist_ok=True)
    if dst.resolve() != src.resolve():  # a directory may also be rewritten in place (as an export step)
        for f in src.iterdir():
            if f.is_file() and not f.name.startswith("model.onnx"):
                shutil.copy(f, dst / f.name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path, help="model directory (model.onnx, config.json, tokenizer)")
    p.add_argument("dst", type=Path)
    a = p.parse_args()
    print(f"{a.src} → {a.dst}: {rewrite_dir(a.src, a.dst)} attention layers rewritten")


if __name__ == "__main__":
    main()
