"""The tuning methods side by side on the tiny preset (SmolLM2, top 2 layers, 16 examples, 8 steps):
reports/methods/tiny.json and tiny.md.

    nice -n 19 python -m models.methods.measure                 # every method, twice (the second pass reversed)
    nice -n 19 python -m models.methods.measure --repeats 1

Each run is a process of its own (`--one METHOD`), so its peak RSS (VmHWM, `bench.memory`) is its own and not the
previous method's. A first, unreported run fills the lower-layer cache, so no method pays for it. Per method: the
trainable parameters, the bytes the trained layers hold in memory (weights and buffers: what `qlora` shrinks), the
size of the run's saved weights and of their published form, the peak RSS, seconds per optimizer step (the steps'
wall time only, as models.train counts it) and the validation loss after 4 and 8 steps. Seconds on a shared,
loaded machine move between passes: the report gives each pass and the load average around them.

Also measured: what the export's MatMulNBits quantization does to ternary weights (BitNet's merged form), read
back by running a one-MatMul graph on the identity matrix.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app.core.config import BUILD_DIR, ROOT
from models.machine import cpu, load_average
from models.methods import METHODS

DATA_DIR = BUILD_DIR / "methods" / "tiny-data"
RUNS_DIR = BUILD_DIR / "methods" / "runs"
REPORT_DIR = ROOT / "reports" / "methods"
RESULT = "RESULT "


def preset(method: str) -> Path:
    return ROOT / "models" / "configs" / ("tiny.py" if method == "lora" else f"tiny_{method}.py")


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("adapter_*"))


def trained_layer_bytes(cfg: dict) -> int:
    """Bytes of the parameters and buffers of the trained layers once the method has prepared the model."""
    from models import train
    from models.methods.base import layer_of

    model, split = train.build_model(cfg)
    tensors = [*model.named_parameters(), *model.named_buffers()]
    in_top = [t for name, t in tensors if (i := layer_of(name)) is not None and i >= split]
    return sum(t.numel() * t.element_size() for t in in_top)


def one(method: str, out: Path, overrides: list[str]) -> dict:
    """Train `method` on the tiny preset in this process, publish the best weights; what was measured."""
    from bench.memory import peak_rss_mb
    from models import train
    from models.publish import publish

    train.main([str(preset(method)), f"--out_dir={out}", f"--data_dir={DATA_DIR}", *overrides])
    peak = peak_rss_mb()  # before anything else is loaded
    log = json.loads((out / "log.json").read_text())
    published = publish(out, out / "published")
    return {
        "method": method,
        "trainable_params": log["trainable_params"],
        "trained_layer_mb": round(trained_layer_bytes(log["config"]) / 1e6, 2),
        "saved_mb": round(dir_bytes(out / "best") / 1e6, 3),
        "published_mb": round(dir_bytes(published) / 1e6, 3),
        "peak_rss_mb": peak,
        "steps": log["step"],
        "s_per_step": round(log["wall_s"] / log["step"], 3),
        "val_loss": {str(h["step"]): h["val_loss"] for h in log["history"]},  # JSON's keys are strings anyway
    }


def run_one(method: str, overrides: tuple[str, ...] = ()) -> dict:
    """`one` in a child process (it inherits this one's nice level)."""
    out = Path(tempfile.mkdtemp(prefix=f"{method}-", dir=RUNS_DIR))
    cmd = [sys.executable, "-m", "models.methods.measure", "--one", method, "--out", str(out), *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith(RESULT)), None)
    if proc.returncode or line is None:
        sys.exit(f"{method} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(line[len(RESULT) :])


def ternary_through_matmulnbits() -> dict:
    """bits → the levels MatMulNBits (symmetric, blocks of 32) gives back for ternary weights, in units of γ."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from models.methods.bitnet import ternary

    k, n = 576, 192
    t, gamma = ternary(torch.randn(n, k, generator=torch.Generator().manual_seed(0)))
    w = (t * gamma).numpy().T.copy()  # [in, out], as the exported MatMul holds it
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "ternary",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
        [numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    out = {}
    for bits in (8, 4, 2):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        q = MatMulNBitsQuantizer(model, bits=bits, block_size=32, is_symmetric=True, accuracy_level=4)
        q.process()
        session = ort.InferenceSession(q.model.model.SerializeToString(), providers=["CPUExecutionProvider"])
        back = session.run(None, {"x": np.eye(k, dtype=np.float32)})[0] / float(gamma)
        levels = t.numpy().T
        out[bits] = {str(v): round(float(back[levels == v].mean()), 4) for v in (-1, 0, 1)}
    return out


def write_report(report: dict) -> None:
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    (REPORT_DIR / "tiny.json").write_text(json.dumps(report, indent=2) + "\n")
    runs = report["runs"]
    by = {m: [r for r in runs if r["method"] == m] for m in METHODS}
    lora_s = min(r["s_per_step"] for r in by["lora"])
    c = report["cpu"]
    lines = [
        "# Tuning methods on the tiny preset",
        "",
        f"`python -m models.methods.measure` (under `nice -n 19`), {report['date']}: SmolLM2-135M, top 2 of 30 layers "
        f"trained on cached lower-layer outputs, 16 training and 8 validation examples, 8 optimizer steps, the "
        f"methods' tiny presets (`models/configs/tiny*.py`). CPU: {c['model']}, {c['cores']} cores; flags "
        + ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in c["flags"].items())
        + f". Load average {report['load_before']} before, {report['load_after']} after: the machine was shared "
        "with other training and evaluation, so seconds per step are noisy; each pass is listed.",
        "",
        "| method | trainable params | trained layers in memory (MB) | saved (MB) | published (MB) | peak RSS (MB) "
        "| s/step (each pass) | s/step vs lora (best pass) | val loss step 4 → 8 |",
        "|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for m, rs in by.items():
        r, best = rs[0], min(x["s_per_step"] for x in rs)
        losses = " → ".join(f"{v:.3f}" for v in r["val_loss"].values())
        lines.append(
            f"| {m} | {r['trainable_params']:,} | {r['trained_layer_mb']} | {r['saved_mb']} | {r['published_mb']} "
            f"| {max(x['peak_rss_mb'] for x in rs):.0f} | {', '.join(str(x['s_per_step']) for x in rs)} "
            f"| {best / lora_s:.2f}× | {losses} |"
        )
    first = {m: rs[0] for m, rs in by.items()}
    speed = {m: min(x["s_per_step"] for x in rs) / lora_s for m, rs in by.items()}
    q, lo, f, b = first["qlora"], first["lora"], first["full"], first["bitnet"]
    lines += [
        "",
        f"- **qlora** holds the trained layers in {q['trained_layer_mb']} MB instead of {lo['trained_layer_mb']} "
        f"({lo['trained_layer_mb'] / q['trained_layer_mb']:.1f}× less), yet its peak RSS is "
        f"{max(x['peak_rss_mb'] for x in by['qlora']) - max(x['peak_rss_mb'] for x in by['lora']):+.0f} MB against "
        "lora's: the rest of the model (lower layers, embeddings, head) stays float32 in the process, and quantizing "
        "allocates float temporaries beside the weights it replaces. Every step dequantizes each matrix twice "
        f"(forward, backward): {speed['qlora']:.2f}× lora's seconds per step here. On this CPU it buys nothing at "
        "SmolLM2's size; it would start to matter where the top layers' float weights, not the rest, fill memory.",
        f"- **full** trains {f['trainable_params']:,} parameters and saves only the trained layers ({f['saved_mb']} MB "
        f"float32, {f['published_mb']} MB published as float16): 2 of SmolLM2's 30 layers. Qwen's top 8 in float16 "
        "would be ~240 MB, too large to commit; a row-wise int8 difference from the base would be the next form.",
        f"- **bitnet** starts from the ternarized base (validation loss {[*b['val_loss'].values()][0]:.2f} at the "
        f"first evaluation against lora's {[*lo['val_loss'].values()][0]:.2f}) and recovers over the steps: "
        "quantization-aware training needs more steps than 8 to show what ternary top layers cost. Its published "
        f"form is {b['published_mb']} MB, {f['published_mb'] / b['published_mb']:.0f}× less than full's float16.",
        "- Seconds per step differ by up to 2.5× between passes of the same method on this shared machine: "
        "ratios under ~1.5× are within the noise.",
    ]
    t = report["ternary_through_matmulnbits"]
    lines += [
        "",
        "Ternary weights (−γ, 0, +γ) after the export's weight-only MatMulNBits (symmetric, blocks of 32), read back "
        "in units of γ: " + "; ".join(f"int{b}: {v['-1']}, {v['0']}, {v['1']}" for b, v in t.items()) + ".",
    ]
    (REPORT_DIR / "tiny.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--one", choices=METHODS, help=argparse.SUPPRESS)  # a child's run
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a, overrides = p.parse_known_args()
    if a.one:
        print(RESULT + json.dumps(one(a.one, a.out, overrides)), flush=True)
        return
    from models.base import load_tokenizer
    from models.bases import SMOLLM2
    from models.data import write_sample

    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    if not (DATA_DIR / "val.jsonl").exists():
        write_sample(DATA_DIR, load_tokenizer(SMOLLM2.model_dir), {"train": 16, "val": 8})
    run_one("lora", ("--max_steps=1", "--eval_interval=1"))  # fills the lower-layer cache; not reported
    report = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu(), "load_before": load_average(), "runs": []}
    for i in range(a.repeats):
        for m in METHODS if i % 2 == 0 else reversed(METHODS):
            print(f"pass {i + 1}: {m} ...", flush=True)
            report["runs"].append(run_one(m) | {"pass": i + 1})
    report["load_after"] = load_average()
    report["ternary_through_matmulnbits"] = ternary_through_matmulnbits()
    write_report(report)
    print((REPORT_DIR / "tiny.md").read_text())


if __name__ == "__main__":
    main()
