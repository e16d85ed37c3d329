"""Token embeddings stored as int8 in an exported graph (block-wise scales), dequantized after the lookup.

onnxruntime's weight-only quantizer turns every MatMul into 8-bit MatMulNBits but can quantize a Gather only to 4
bits (`GatherBlockQuantized`), so the embedding table stayed fp32: 0.54 GB of the 0.5B export's 1.1 GB and 0.93 GB
of the 1.5B's (152k tokens × 896 or 1536). A lookup reads a few rows, so dequantizing them costs nothing measurable;
the memory the table took does not come back otherwise. Here the table becomes int8 with one fp32 scale per block
of 32 values of a row (symmetric, like MatMulNBits' 8-bit blocks):

    Gather(table, ids)  →  Gather(q, ids) → Cast → Reshape[.., D/32, 32] × Unsqueeze(Gather(scales, ids)) → Reshape[.., D]

Only a table that nothing else reads is rewritten (a model whose output head shares it keeps the fp32 table for
the head; then there is nothing to save).
"""

from __future__ import annotations

import numpy as np

MIN_ROWS = 10_000  # a vocabulary, not a small lookup table
BLOCK = 32


def quantize_rows(table: np.ndarray, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values [V, D], fp32 scales [V, D/block]) with table ≈ values * scales (per block of a row)."""
    v, d = table.shape
    blocks = table.reshape(v, d // block, block).astype(np.float32)
    scales = np.abs(blocks).max(axis=2) / 127.0
    safe = np.where(scales == 0, 1.0, scales)
    q = np.clip(np.rint(blocks / safe[..., None]), -127, 127).astype(np.int8)
    return q.reshape(v, d), scales.astype(np.float32)


def quantize_embeddings(model, block: int = BLOCK) -> list[str]:
    """Rewrite, in place, each large fp32 embedding Gather of `model` (an onnx ModelProto); returns their names."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    readers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    done = []
    for node in list(graph.node):
        if node.op_type != "Gather" or node.input[0] not in inits or readers[node.input[0]] != 1:
            continue
        if any(a.name == "axis" and a.i != 0 for a in node.attribute):
            continue
        t = inits[node.input[0]]
        if t.data_type != TensorProto.FLOAT or len(t.dims) != 2 or t.dims[0] < MIN_ROWS or t.dims[1] % block:
            continue
        name, ids, out = t.name, node.input[1], node.output[0]
        d = int(t.dims[1])
        q, scales = quantize_rows(numpy_helper.to_array(t), block)
        p = f"{name}_int8"
        new_inits = [
            numpy_helper.from_array(q, p),
            numpy_helper.from_array(scales, f"{p}_scales"),
            numpy_helper.from_array(np.array([0, 0, d // block, block], np.int64), f"{p}_blocked"),
            numpy_helper.from_array(np.array([0, 0, d], np.int64), f"{p}_rows"),
            numpy_helper.from_array(np.array([-1], np.int64), f"{p}_last"),
        ]
        nodes = [
            helper.make_node("Gather", [p, ids], [f"{p}_q"], name=f"{p}/Gather", axis=0),
            helper.make_node("Cast", [f"{p}_q"], [f"{p}_f"], name=f"{p}/Cast", to=TensorProto.FLOAT),
            helper.make_node("Reshape", [f"{p}_f", f"{p}_blocked"], [f"{p}_b"], name=f"{p}/Reshape"),
            helper.make_node("Gather", [f"{p}_scales", ids], [f"{p}_s"], name=f"{p}/GatherScales", axis=0),
            helper.make_node("Unsqueeze", [f"{p}_s", f"{p}_last"], [f"{p}_s1"], name=f"{p}/Unsqueeze"),
            helper.make_node("Mul", [f"{p}_b", f"{p}_s1"], [f"{p}_m"], name=f"{p}/Mul"),
            helper.make_node("Reshape", [f"{p}_m", f"{p}_rows"], [out], name=f"{p}/ReshapeBack"),
        ]
        at = list(graph.node).index(node)
        graph.node.remove(node)
        for k, n in enumerate(nodes):
            graph.node.insert(at + k, n)
        graph.initializer.remove(t)
        graph.initializer.extend(new_inits)
        done.append(name)
    return done


def main(argv: list[str] | None = None) -> int:
    """`python -m models.embed_int8 SRC OUT`: an existing export with its embeddings made int8 (for comparisons)."""
    import argparse
    import json
    import sys
    from pathlib import Path

    import onnx

    from models.attention_graph import copy_beside_graph, save_model

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("src", type=Path, help="an export directory (model.onnx, tokenizer, querywise.json)")
    p.add_argument("out", type=Path)
    a = p.parse_args(argv)
    if not (a.src / "model.onnx").exists():
        print(f"no model.onnx in {a.src}", file=sys.stderr)
        return 2
    model = onnx.load(str(a.src / "model.onnx"))
    names = quantize_embeddings(model)
    copy_beside_graph(a.src, a.out)
    save_model(model, a.out / "model.onnx")
    manifest = a.out / "querywise.json"
    if manifest.exists():
        info = json.loads(manifest.read_text())
        info["quantization"] = info.get("quantization", "") + "; embeddings int8"
        manifest.write_text(json.dumps(info, indent=2))
    print(f"{a.out}: embeddings int8: {', '.join(names) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
