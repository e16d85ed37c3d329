"""The tuning methods against the LoRA baseline on real data and the same evaluation questions, as served:
reports/methods/<name>[-served].{json,md}, the name from the preset's (compare_smol.py: smol).

    nice -n 5 python -m models.methods.compare                        # lora qlora full bitnet prune, 50 dev questions
    nice -n 5 python -m models.methods.compare --methods prune      # one again; the others' results are kept
    nice -n 5 python -m models.methods.compare --start served       # each from the served model: smol-served.md
    nice -n 5 python -m models.methods.compare --preset models/configs/compare_qwen.py --start served \
        --methods lora qlora --eval-limit 100                        # the 0.5B Qwen: qwen-served.md

Every method trains with the preset (default models/configs/compare_smol.py: SmolLM2-135M, top 4 layers; the same
steps, data order and validation rows for every method) and its own keys below, in a process of its own (its peak RSS is its own); its best weights are
published (the committed form), exported to ONNX and quantized as the service serves (weight-only int8,
`models.export`), and evaluated on the same Spider dev questions (spread evenly, greedy, the engine the service runs).

`--start base` trains from the base weights: 40 CPU steps from there do not yet write usable SQL (EX 0), so the
validation loss is the comparison. `--start served` trains from the served SmolLM2 (the base with its committed
adapter merged, build/merged/<base>, which `python -m models.export --base smollm2-135m --keep` writes): every
method then continues from a model that answers, EX separates them, and the served model's own EX on the same
questions is the row to beat. It goes through `BASE_MODEL_DIR`, so training, export and evaluation all read the
merged weights, and the lower-layer cache gets a name of its own (`models.train.base_tag`).

Measured per method: trainable parameters, seconds per step, peak RSS of training, best validation loss, published
and exported size, EX (with valid SQL and mean generation ms per question in batches of 8).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from app.core.config import BUILD_DIR, ROOT
from models.machine import busy, cpu, flags_text, load_average

PRESET = ROOT / "models" / "configs" / "compare_smol.py"  # the default
REPORT_DIR = ROOT / "reports" / "methods"
STARTS = ("base", "served")
RESULT = "RESULT "
RESULT_FILE = "result.json"  # a finished run's measurements, beside it: a second invocation reuses them
# each method's own keys over the shared preset: full-weight methods take full fine-tuning's lower rate (LoRA's
# 1e-3 on every weight of a layer diverges); BitNet's latent weights need LoRA's rate to move across rounding
# thresholds; pruning removes 2 of 30 layers and an eighth of every MLP's channels (6 and a quarter left a validation
# loss of 2.11 after 60 recovery steps against 0.89 unpruned), then its top 4 layers recover (its
# frozen layers are not the base's: a cache of its own, all of them cached)
METHODS = {
    "lora": [],
    "qlora": ["--method=qlora", "--qlora_bits=4"],
    "full": ["--method=full", "--lr=1e-4"],
    "bitnet": ["--method=bitnet", "--lr=1e-3"],
    "prune": ["--method=prune", "--prune_layers=2", "--prune_mlp=0.125", "--lr=1e-4", "--cache_below_top=0"],
}


def preset_name(preset: Path) -> str:
    """compare_smol.py → smol: names the report and the work directory."""
    return Path(preset).stem.removeprefix("compare_")


def work_dir(start: str, name: str = "smol") -> Path:
    """Where a preset's and start's runs, exports and answers live (never reused by another preset or start)."""
    return BUILD_DIR / "methods" / f"compare-{name}-{start}"


def report_name(start: str, name: str = "smol") -> str:
    return name if start == "base" else f"{name}-{start}"


def use_start(start: str, base: str) -> None:
    """`served`: point BASE_MODEL_DIR at the merged served model, for this process and the children it starts."""
    if start == "base":
        os.environ.pop("BASE_MODEL_DIR", None)
        return
    merged = BUILD_DIR / "merged" / base
    if not (merged / "config.json").exists():
        sys.exit(f"--start served needs {merged} (python -m models.export --base {base} --keep writes it)")
    os.environ["BASE_MODEL_DIR"] = str(merged)


def one(method: str, work: Path, preset: Path = PRESET) -> dict:
    """Train, publish and export `method` in this process; what was measured (peak RSS read before the export)."""
    from bench.memory import peak_rss_mb
    from models import train
    from models.bases import get_base
    from models.export import build
    from models.publish import publish

    run_dir = work / "runs" / method
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh run: a resumed one would not measure the method's own steps
    for stale in (work / "eval").glob(f"compare-{method}-*"):
        stale.unlink()  # the earlier model's answers: `evaluate` resumes from what it finds
    log = train.main([str(preset), f"--out_dir={run_dir}", *METHODS[method]])
    peak = peak_rss_mb()
    published = publish(run_dir, run_dir / "published")
    spec = get_base(log["config"]["base"])
    qdir = build(spec, published, out_dir=work / "onnx" / method, label=f"compare-{method}", force=True)
    result = {
        "method": method,
        "overrides": METHODS[method],
        "trainable_params": log["trainable_params"],
        "steps": log["step"],
        "s_per_step": round(log["wall_s"] / log["step"], 3),
        "peak_rss_mb": peak,
        "best_val": round(log["best_val"], 4),
        "val_loss": {str(h["step"]): h["val_loss"] for h in log["history"]},
        "published_mb": round(sum(f.stat().st_size for f in published.glob("adapter_*")) / 1e6, 3),
        "onnx_int8_mb": round((qdir / "model.onnx").stat().st_size / 1e6, 1),
        "model_dir": str(qdir),
    }
    (run_dir / RESULT_FILE).write_text(json.dumps(result, indent=2))
    return result


def finished(method: str, work: Path) -> dict | None:
    """A finished run of the method with today's settings (its result.json), reused instead of trained again."""
    path = work / "runs" / method / RESULT_FILE
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    return result if result["overrides"] == METHODS[method] and Path(result["model_dir"]).exists() else None


def child(args: list[str]) -> dict:
    """This module with `args` in a fresh process (inheriting the nice level); its RESULT line."""
    proc = subprocess.run(
        [sys.executable, "-m", "models.methods.compare", *args], cwd=ROOT, capture_output=True, text=True
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith(RESULT)), None)
    if proc.returncode or line is None:
        return {"error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}"}
    return json.loads(line[len(RESULT) :])


def evaluate(method: str, model_dir: str, limit: int, work: Path) -> dict:
    """EX of the method's int8 export on `limit` dev questions, greedy, batches of 8 (a child process)."""
    from models import evaluate as ev

    run = f"compare-{method}-dev{limit}"
    argv = ["--run", run, "--model-dir", model_dir, "--limit", str(limit), "--out-dir", str(work / "eval")]
    if ev.main(argv):
        return {"error": f"evaluation {run} failed"}
    s = json.loads((work / "eval" / f"{run}.json").read_text())
    return {k: s[k] for k in ("n", "ex", "valid_sql", "mean_gen_ms_per_question", "groups", "categories")}


def timing_note(report: dict, cores: int) -> str:
    """What the s/step column is worth: the methods ran one after another, so other jobs running meanwhile (a load
    above the core count before or after) slow some of them and not others."""
    if busy(report["load_before"], report["load_after"], cores=cores):
        return (
            "Other jobs ran meanwhile (sweeps, evaluations): each method's s/step is that moment's, not the "
            "method's, and the ratios to lora mislead; `reports/methods/tiny.md` measures speed in alternating passes."
        )
    return (
        f"Nothing else kept the {cores} cores busy (load at most {cores} before and after): the s/step ratios to lora "
        "hold, to the noise of one pass each (`reports/methods/tiny.md` measures speed in alternating passes)."
    )


def write_report(report: dict) -> Path:
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    name = report_name(report.get("start", "base"), report.get("name", "smol"))
    (REPORT_DIR / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = [r for r in report["runs"] if "error" not in r]
    lora = next((r for r in rows if r["method"] == "lora"), None)
    n_eval = max(((r.get("eval") or {}).get("n", 0) for r in rows), default=0)
    c = report["cpu"]
    served = report.get("start") == "served"
    title, preset = report.get("title", "SmolLM2-135M"), report.get("preset", "models/configs/compare_smol.py")
    start = (
        f"the served {title} (the base with its committed adapter merged: every method continues from a model that "
        "answers)"
        if served
        else "its base weights"
    )
    origin = "the served model" if served else "its base"
    command = "".join(
        [" --start served" if served else "", "" if preset.endswith("compare_smol.py") else f" --preset {preset}"]
    )
    lines = [
        f"# Tuning methods against LoRA on the same questions ({title} from {origin}, as served)",
        "",
        f"`python -m models.methods.compare{command}`, {report['date']}. {title} "
        f"from {start}, the top {report.get('train_layers', 4)} of {report.get('n_layers', 30)} layers trained "
        f"{report['steps']} steps of ≤{report['batch_tokens']} tokens on {report.get('limit_train', 400)} Spider train "
        f"rows (`{preset}`{', matmuls in bf16' if report.get('autocast') == 'bf16' else ''}, each method's own keys "
        "below), best weights by "
        "validation loss published, exported and quantized as the service serves (weight-only int8), then EX on the "
        f"same {n_eval} Spider dev questions (spread evenly; greedy, no constraint or candidates). "
        f"CPU: {c['model']}, {c['cores']} cores ({flags_text(c)}); load average {report['load_before']} before, "
        f"{report['load_after']} after. {timing_note(report, c['cores'])}",
        "",
        "| method | keys | trainable params | s/step | vs lora | peak RSS MB | best val loss | published MB "
        "| int8 ONNX MB | EX % (questions) | valid SQL % | gen ms/question |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    reference = report.get("reference")
    if reference and "error" not in reference:
        lines.append(
            f"| *served, not trained further* | – | – | – | – | – | – | – | {reference['onnx_int8_mb']} "
            f"| {reference['ex']} ({reference['n']}) | {reference['valid_sql']} "
            f"| {reference['mean_gen_ms_per_question']} |"
        )
    for r in rows:
        e = r.get("eval", {})
        ratio = f"{r['s_per_step'] / lora['s_per_step']:.2f}×" if lora else "–"
        lines.append(
            f"| {r['method']} | {' '.join(r['overrides']) or '(preset)'} | {r['trainable_params']:,} "
            f"| {r['s_per_step']} | {ratio} | {r['peak_rss_mb']:.0f} | {r['best_val']} | {r['published_mb']} "
            f"| {r['onnx_int8_mb']} | {e.get('ex', '–')} ({e.get('n', 0)}) | {e.get('valid_sql', '–')} "
            f"| {e.get('mean_gen_ms_per_question', '–')} |"
        )
    unevaluated = [r["method"] for r in rows if not r.get("eval")]
    if unevaluated:
        measured = {r["method"]: r["eval"]["ex"] for r in rows if r.get("eval")}
        why = (
            f"every method evaluated ({', '.join(measured)}) answered none right at this budget, so EX ranks "
            "nothing here and the validation loss is the comparison"
            if measured and not any(measured.values())
            else "see the validation loss"
        )
        lines.append(f"\n- EX not measured for {', '.join(unevaluated)} (`--eval-limit 0`): {why}.")
    if reference and "error" in reference:
        lines.append(f"\n- **the served model's own EX failed**: {reference['error'][:400]}")
    for r in report["runs"]:
        if "error" in r:
            lines.append(f"\n- **{r['method']} failed**: {r['error'][:400]}")
    lines += ["", "EX by hardness:", ""]
    for r in rows:
        groups = r.get("eval", {}).get("groups", {})
        if groups:
            lines.append(f"- {r['method']}: " + " · ".join(f"{g} {v['ex']}% ({v['n']})" for g, v in groups.items()))
    if reference and reference.get("groups"):
        lines.append(
            "- served, not trained further: "
            + " · ".join(f"{g} {v['ex']}% ({v['n']})" for g, v in reference["groups"].items())
        )
    (REPORT_DIR / f"{name}.md").write_text("\n".join(lines) + "\n")
    return REPORT_DIR / f"{name}.md"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--eval-limit", type=int, default=50)
    p.add_argument("--start", choices=STARTS, default="base", help="train from the base weights or the served model")
    p.add_argument("--preset", type=Path, default=PRESET, help="the training preset every method shares")
    p.add_argument("--one", choices=list(METHODS), help=argparse.SUPPRESS)  # a child's training
    p.add_argument("--eval", nargs=2, metavar=("METHOD", "MODEL_DIR"), help=argparse.SUPPRESS)  # a child's EX
    a = p.parse_args()
    from models import presets

    if not a.preset.is_file():
        sys.exit(f"no preset at {a.preset}")
    preset = presets.read_preset(a.preset)
    use_start(a.start, preset["base"])
    name = preset_name(a.preset)
    work = work_dir(a.start, name)
    if a.one:
        print(RESULT + json.dumps(one(a.one, work, a.preset)), flush=True)
        return
    if a.eval:
        print(RESULT + json.dumps(evaluate(*a.eval, a.eval_limit, work)), flush=True)
        return
    report = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu(), "load_before": load_average(), "runs": []}
    report |= {"start": a.start, "steps": preset["max_steps"], "batch_tokens": preset["batch_tokens"]}
    report |= {"name": name, "eval_limit": a.eval_limit} | describe(a.preset, preset)
    start = ["--start", a.start, "--preset", str(a.preset)]
    if a.start == "served" and a.eval_limit:
        report["reference"] = served_reference(preset["base"], a.eval_limit, start)
    for method in a.methods:
        print(f"==> {method}: train, publish, export ...", flush=True)
        r = finished(method, work) or child(["--one", method, *start])
        if "error" not in r and a.eval_limit:
            print(f"    {method}: best val {r['best_val']}, {r['s_per_step']} s/step; EX ...", flush=True)
            r["eval"] = child(["--eval", method, r["model_dir"], "--eval-limit", str(a.eval_limit), *start])
        report["runs"].append({"method": method} | r)
    report["load_after"] = load_average()
    # methods not run this time keep their earlier results (same preset; each row says how many questions its EX
    # had), in the usual order
    previous = REPORT_DIR / f"{report_name(a.start, name)}.json"
    if previous.exists():
        done = {r["method"] for r in report["runs"]}
        report["runs"] += [r for r in json.loads(previous.read_text())["runs"] if r["method"] not in done]
    report["runs"].sort(key=lambda r: list(METHODS).index(r["method"]))
    print(write_report(report).read_text())


def describe(path: Path, preset: dict) -> dict:
    """What the report says of the preset: the base's title and layer count (of the weights training starts from),
    how many layers train, on how many rows."""
    from models.bases import get_base

    spec = get_base(preset["base"])
    config_file = spec.model_dir / "config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    rel = Path(path).resolve()
    return {
        "title": spec.title.removesuffix("-Instruct"),
        "preset": str(rel.relative_to(ROOT)) if rel.is_relative_to(ROOT) else str(path),
        "train_layers": preset["train_layers"],
        "n_layers": config.get("num_hidden_layers"),
        "limit_train": preset["limit_train"],
        "autocast": preset.get("autocast", ""),
    }


def served_reference(base: str, limit: int, start: list[str]) -> dict:
    """EX of the served int8 export itself (build/onnx/<base>/int8, the merged model every method starts from) on
    the same questions: what a method must beat."""
    from models.bases import get_base

    qdir = get_base(base).onnx_dir / "int8"
    if not (qdir / "model.onnx").exists():
        return {"error": f"no served export at {qdir} (python -m models.export --base {base} --keep)"}
    r = child(["--eval", "served", str(qdir), "--eval-limit", str(limit), *start])
    return r | {"onnx_int8_mb": round((qdir / "model.onnx").stat().st_size / 1e6, 1), "model_dir": str(qdir)}


if __name__ == "__main__":
    main()
