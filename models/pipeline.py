"""The whole fine-tuning workflow in one command: prepare → sweep → train the best → export → evaluate → publish →
report, resumable, with progress bars.

    python -m models.pipeline models/configs/pipeline_smol.py         # or: make pipeline [PIPELINE=...]
    python -m models.pipeline models/configs/pipeline_tiny.py --name=try --eval_limit=4
    python -m models.pipeline models/configs/pipeline_smol.py --redo=evaluate   # that stage and the ones after it

A pipeline preset is a small file of assignments (`models.presets`, the keys below). Stages, in order:

1. prepare:  `models.prepare` for the sweep's base unless its tokenized data is there (`data_dir` set: used as is);
2. sweep:    `models.sweep` with the preset's sweep file and `sweep_overrides` (its own study, storage and report:
             a study already run is resumed, or just read when it has all its trials);
3. train:    the best trial's config (lowest validation loss) with `final` over it (a longer budget), one run;
4. export:   its best weights merged and exported to ONNX, weight-only int<bits> (`models.export`), as served;
5. evaluate: EX of that export on `eval_limit` Spider dev questions and, with `suite`, the business suite
             (`models.evaluate`, decoding as `eval_args` says: the service's schema constraint and execution-guided
             candidates by default); with `baseline_model_dir`, the starting model's export on the same questions;
6. publish:  the compact adapter (`models.publish`) into `publish_dest` (<work_dir>/<name>/adapter unless set:
             committing it to models/adapters is a person's decision);
7. report:   <report_dir>/pipeline-<name>.{json,md}: the chosen configuration and why, EX by hardness and scenario,
             error categories, training speed, size and memory, in a page a person reads in two minutes.

<work_dir>/<name>/state.json records each finished stage and what it left, so the same command after a stop
resumes at the first unfinished stage; `--redo=STAGE` runs that stage and every later one again.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from models import machine, presets

# ---------------------------------------------------------------- defaults (override by preset / --key=value)
name = "pipeline"  # the pipeline's name: its work directory, its study, its report
sweep = "models/configs/sweep_smol.py"  # the sweep preset (models.sweep)
sweep_overrides = []  # `--key=value` for the sweep (e.g. "--n_trials=4", "--work_dir=...", "--report_dir=...")
final = {}  # train keys over the best trial's config for the final run (e.g. {"max_steps": 400})
data_dir = ""  # "" = the base's tokenized data (build/data/<base>), prepared when missing
prepare_args = []  # for `models.prepare` when it runs (e.g. "--limit=64": the first 64 examples of each split)
eval_limit = 100  # Spider dev questions (spread evenly); 0 = none
eval_args = ["--constrained", "--candidates", "4"]  # decoding as the service serves
suite = True  # also the business suite on the demo database
bits = 8  # the served export's weight precision (MatMulNBits)
baseline_model_dir = ""  # an export of the model the sweep started from: evaluated the same way, side by side
publish_dest = ""  # "" = <work_dir>/<name>/adapter
work_dir = "build/pipeline"
report_dir = "reports/pipeline"
redo = ""  # a stage name: run it and the stages after it again
# ---------------------------------------------------------------------------------------------------------------
CONFIG_KEYS = presets.config_keys(globals())
DEFAULTS = {k: globals()[k] for k in CONFIG_KEYS}
STAGES = ("prepare", "sweep", "train", "export", "evaluate", "publish", "report")


class PipelineError(ValueError):
    """Settings or state the pipeline cannot go on with; the message says which."""


def configure(argv: list[str]) -> dict:
    try:
        cfg = presets.configure(argv, copy.deepcopy(DEFAULTS), CONFIG_KEYS)
    except presets.PresetError as exc:
        raise PipelineError(str(exc)) from None
    if cfg["redo"] and cfg["redo"] not in STAGES:
        raise PipelineError(f"redo: unknown stage {cfg['redo']!r}: one of {', '.join(STAGES)}")
    if not Path(cfg["sweep"]).is_file():
        raise PipelineError(f"sweep: no sweep preset at {cfg['sweep']}")
    if cfg["bits"] not in (4, 8):
        raise PipelineError("bits: 4 or 8")
    if cfg["baseline_model_dir"] and not (Path(cfg["baseline_model_dir"]) / "model.onnx").exists():
        raise PipelineError(f"baseline_model_dir: no model.onnx in {cfg['baseline_model_dir']}")
    return cfg


class Pipeline:
    """The stages over one work directory, each recorded in state.json when it finishes."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.dir = Path(cfg["work_dir"]) / cfg["name"]
        self.state_path = self.dir / "state.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {"stages": {}}
        if cfg["redo"]:
            for stage in STAGES[STAGES.index(cfg["redo"]) :]:
                self.state["stages"].pop(stage, None)

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        tmp.replace(self.state_path)  # a stop while writing keeps the previous state

    def out(self, stage: str) -> dict:
        return self.state["stages"][stage]["out"]

    def run(self) -> Path:
        from tqdm import tqdm

        bar = tqdm(STAGES, desc=f"pipeline {self.cfg['name']}", unit="stage", file=sys.stdout)
        for stage in bar:
            bar.set_postfix_str(stage)
            if stage in self.state["stages"]:
                continue
            t0 = time.time()
            out = getattr(self, stage)()
            self.state["stages"][stage] = {"out": out, "seconds": round(time.time() - t0, 1)}
            self.save()
        bar.close()
        return Path(self.out("report")["md"])

    # ------------------------------------------------------------------ stages

    def sweep_argv(self) -> list[str]:
        """The sweep preset with the pipeline's overrides (and its data directory where it names one)."""
        c = self.cfg
        return [c["sweep"], *c["sweep_overrides"], *([f"--data_dir={c['data_dir']}"] if c["data_dir"] else [])]

    def prepare(self) -> dict:
        from models import sweep, train
        from models.bases import get_base

        settings = sweep.configure(self.sweep_argv())
        base_cfg = train.configure([settings["train_preset"]]) | settings["train"]
        spec = get_base(base_cfg["base"] or None)
        data = Path(base_cfg["data_dir"] or spec.data_dir)
        if not (data / "train.jsonl").exists():
            print(f"preparing the training data of {spec.name} → {data}", flush=True)
            argv = [
                sys.executable,
                "-m",
                "models.prepare",
                "--out-dir",
                str(data),
                "--no-report",
                *self.cfg["prepare_args"],
            ]
            subprocess.run(argv, check=True, env=os.environ | {"BASE_MODEL": spec.name})
        return {"base": spec.name, "data_dir": str(data)}

    def sweep(self) -> dict:
        from models import sweep

        code = sweep.main(self.sweep_argv())
        if code:
            raise PipelineError(f"the sweep stopped (exit {code}): see its report and the failed trials' train.log")
        settings = sweep.configure(self.sweep_argv())
        study = sweep.load_study(settings)
        best = study.best_trial
        return {
            "study": study.study_name,
            "trials": len(study.trials),
            "best_trial": best.number,
            "best_val_loss": best.value,
            "best_params": best.params,
            "best_ex": best.user_attrs.get("ex"),
            "config": sweep.best_config(study),
            "report": str(Path(settings["report_dir"]) / f"{study.study_name}.md"),
        }

    def train(self) -> dict:
        from tqdm import tqdm

        from models import train

        cfg = self.out("sweep")["config"] | self.cfg["final"] | {"out_dir": str(self.dir / "train")}
        bar = tqdm(desc="final training", unit="step", file=sys.stdout)

        def on_step(step: int, total: int) -> None:
            bar.total = total
            bar.n = step
            bar.refresh()

        log = train.run(cfg, on_step=on_step)
        bar.close()
        keep = (
            "status",
            "best_val",
            "step",
            "steps_total",
            "wall_s",
            "tokens_per_s",
            "peak_rss_mb",
            "trainable_params",
        )
        return {"run_dir": cfg["out_dir"], "config": cfg, **{k: log.get(k) for k in keep}}

    def export(self) -> dict:
        from models.bases import get_base
        from models.export import build

        spec = get_base(self.out("prepare")["base"])
        best = Path(self.out("train")["run_dir"]) / "best"
        # merged over the weights it was trained from (a sweep from the served model names them in base_dir)
        trained_over = Path(self.out("train")["config"]["base_dir"])
        base_dir = None if trained_over.resolve() == spec.model_dir.resolve() else trained_over
        out_dir, label = self.dir / "onnx", self.cfg["name"]
        qdir = build(spec, best, bits=self.cfg["bits"], out_dir=out_dir, label=label, force=True, base_dir=base_dir)
        return {"model_dir": str(qdir), "onnx_mb": round((qdir / "model.onnx").stat().st_size / 1e6, 1)}

    def evaluate(self) -> dict:
        from models import evaluate

        out = {}
        runs = {"dev": []} if self.cfg["eval_limit"] else {}
        if self.cfg["suite"]:
            runs["suite"] = ["--suite", "models/scenarios"]
        models = {"": self.out("export")["model_dir"]}
        if self.cfg["baseline_model_dir"]:
            models["baseline_"] = self.cfg["baseline_model_dir"]
        for prefix, model_dir in models.items():
            for kind, extra in runs.items():
                run = f"{self.cfg['name']}-{prefix}{kind}"
                argv = ["--run", run, "--model-dir", model_dir, "--out-dir", str(self.dir / "eval")]
                argv += ["--fresh", *self.cfg["eval_args"], *extra]
                argv += ["--limit", str(self.cfg["eval_limit"])] if kind == "dev" else []
                if evaluate.main(argv):
                    raise PipelineError(f"evaluation {run} failed")
                out[prefix + kind] = str(self.dir / "eval" / f"{run}.json")
        return out

    def publish(self) -> dict:
        from models.publish import publish

        dest = Path(self.cfg["publish_dest"] or self.dir / "adapter")
        publish(Path(self.out("train")["run_dir"]), dest)
        return {"adapter": str(dest), "adapter_mb": round(sum(f.stat().st_size for f in dest.iterdir()) / 1e6, 2)}

    def report(self) -> dict:
        result = self.result()
        out = Path(self.cfg["report_dir"])
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"pipeline-{self.cfg['name']}"
        stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
        stem.with_suffix(".md").write_text(markdown(result))
        return {"json": str(stem.with_suffix(".json")), "md": str(stem.with_suffix(".md"))}

    def result(self) -> dict:
        evals = {k: json.loads(Path(p).read_text()) for k, p in self.out("evaluate").items()}
        return {
            "name": self.cfg["name"],
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine.cpu() | {"torch_device": machine.torch_device()},
            "settings": self.cfg,
            "stage_seconds": {s: v["seconds"] for s, v in self.state["stages"].items()},
            "sweep": {k: v for k, v in self.out("sweep").items() if k != "config"}
            | {"report_link": os.path.relpath(self.out("sweep")["report"], self.cfg["report_dir"])},
            "train": self.out("train"),
            "export": self.out("export"),
            "publish": self.out("publish"),
            "eval": evals,
        }


def _ex_lines(title: str, s: dict) -> list[str]:
    groups = " · ".join(f"{g} {v['ex']}% ({v['n']})" for g, v in s["groups"].items())
    cats = ", ".join(f"{c} {n}" for c, n in s["categories"].items())
    return [
        f"**{title}: EX {s['ex']}%** on {s['n']} questions (greedy alone {s['ex_greedy']}%), valid SQL "
        f"{s['valid_sql']}%, {s['mean_gen_ms_per_question']} ms generation per question (batched)",
        "",
        f"- by group: {groups}",
        f"- answers by category: {cats}",
        "",
    ]


def markdown(r: dict) -> str:
    sw, tr, ex = r["sweep"], r["train"], r["export"]
    cfg = tr["config"]
    flags = machine.flags_text(r["machine"])
    lines = [
        f"# Pipeline `{r['name']}` ({r['date']})",
        "",
        f"Machine: {r['machine']['model']}, {r['machine']['cores']} cores ({flags}); torch device "
        f"{r['machine']['torch_device']}.",
        "",
        "## Chosen configuration",
        "",
        f"The sweep `{sw['study']}` ran {sw['trials']} trials ([its report]({sw['report_link']})); trial "
        f"{sw['best_trial']} had the lowest validation loss ({sw['best_val_loss']:.4f}; EX on the sweep's questions "
        f"{sw['best_ex']}): {', '.join(f'{k} = {v:.3g}' if isinstance(v, float) else f'{k} = {v}' for k, v in sw['best_params'].items())}. The final run trained "
        f"it from `{cfg['base_dir']}` with {r['settings']['final'] or 'no change'}: method {cfg['method']}, top {cfg['train_layers']} layers, "
        f"{tr['step']} of {tr['steps_total']} steps ({tr['status']}), best validation loss {tr['best_val']:.4f}.",
        "",
        "## Accuracy as served (the int8 export, decoding as the service decodes)",
        "",
    ]
    for kind, title in (("dev", "Spider dev"), ("suite", "Business suite")):
        if kind in r["eval"]:
            lines += _ex_lines(title, r["eval"][kind])
    if any(k.startswith("baseline_") for k in r["eval"]):
        lines += [
            f"Against the model the sweep started from (`{r['settings']['baseline_model_dir']}`), on the same "
            "questions decoded the same way:",
            "",
            "| questions | start EX % | pipeline EX % | start greedy % | pipeline greedy % |",
            "|---|---:|---:|---:|---:|",
        ]
        for kind, title in (("dev", "Spider dev"), ("suite", "Business suite")):
            if f"baseline_{kind}" in r["eval"]:
                a, b = r["eval"][f"baseline_{kind}"], r["eval"][kind]
                lines.append(f"| {title} ({b['n']}) | {a['ex']} | {b['ex']} | {a['ex_greedy']} | {b['ex_greedy']} |")
        lines.append("")
    lines += [
        "## Speed, size, memory",
        "",
        "| what | value |",
        "|---|---:|",
        f"| training tokens/s | {tr['tokens_per_s']} |",
        f"| training wall s | {tr['wall_s']:.0f} |",
        f"| training peak RSS MB | {tr['peak_rss_mb']} |",
        f"| trainable parameters | {tr['trainable_params']:,} |",
        f"| published adapter MB | {r['publish']['adapter_mb']} |",
        f"| ONNX int{r['settings']['bits']} MB | {ex['onnx_mb']} |",
        "",
        "Stage seconds: " + ", ".join(f"{s} {v:.0f}" for s, v in r["stage_seconds"].items()) + ".",
        "",
        f"Adapter: `{r['publish']['adapter']}`; model: `{ex['model_dir']}`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    from models.sweep import SweepError

    try:
        path = Pipeline(configure(argv)).run()
    except (PipelineError, SweepError) as exc:
        print(f"pipeline: {exc}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
