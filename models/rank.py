"""Adapter-rank estimation: a LoRA rank per module type proposed from the weight update of a short full fine-tune,
then checked against its neighbouring ranks by training them; reports/rank/<name>.json and .md.

    python -m models.rank models/configs/rank_smollm2.py --steps 60                      # the estimate only
    python -m models.rank models/configs/rank_smollm2.py --steps 60 --check --check-steps 100
    python -m models.rank models/configs/tiny.py --steps 2 --check --check-steps 2 --ranks 4,8 --data_dir=/tmp/d

Other `--key=value` arguments are `models.train` overrides, applied to every run (after the preset).

Estimate. A full fine-tune of the preset's top `train_layers` layers (`--steps`, `--full-lr`: full fine-tuning wants
a lower rate than LoRA's), then per linear module ΔW = W_trained − W_base and its singular values σ. The effective
rank is the smallest r whose top r values hold `--energy` of Σσ² (what a rank-r truncation keeps of ΔW, in the
Frobenius norm); the entropy-based effective rank of Roy & Vetterli (2007), exp(H(σ/Σσ)), is recorded beside it. Per
module type (q_proj ... down_proj) the median over the layers, rounded to a power of two in [2, 64], is the proposed
`lora_rank_pattern` ({type: rank}; `models.methods.lora` keeps alpha/r at the preset's, so every rank trains at the
uniform runs' scale).

Why the full update is a proxy for what LoRA can learn: LoRA confines each module's ΔW to rank r, and the best rank-r
approximation of an update is its truncated SVD (Eckart–Young); a short fine-tune from the same weights on the same
data stays where the loss change is about ⟨∇L, ΔW⟩, so the directions the unconstrained update takes are the ones a
low-rank one needs. Its limits: Adam scales every coordinate on its own, which spreads part of each step over many
directions (the noisy tail), and the tail shrinks relative to the coherent part as steps add up (that grows like t,
the noise like √t). Measured on SmolLM2's top 2 layers at lr 1e-4: the 0.9-energy ranks were 21-95 after 8 steps on
16 rows and 11-50 after 40 steps on 300 rows, while the entropy ranks (which weigh the tail by σ, not σ²) stayed at
90-350. So the estimate depends on the budget and the threshold, and Frobenius energy is not loss: the check is what
says whether it was right.

Check (`--check`). LoRA runs of `--check-steps` each, same seed and data order: the proposal, every rank halved, every
rank doubled, and the uniform ranks `--ranks`; the proposal again with `--seeds` other seeds, whose spread of best
validation loss is the noise. Runs that train the same ranks are trained once. Verdict (`verdict`): tol = max(that
spread, `--min-tol`); the good runs are those within tol of the best validation loss; the estimate is right when the
proposal is good and no good run has fewer trainable parameters; too high when a good run has fewer; too low when
the proposal is not good and the good runs have more; inconclusive when every run is good (rank made no measurable
difference at this budget). Every rank trains at the same alpha/r and lr, so a larger one moves the model further per
step: a short budget favours large ranks, and the verdict holds for the budget it was measured at.

Runs live in build/rank/<preset>/ (`--work-dir`); a run whose log.json shows it finished with the same config is
reused, so another `--energy` or `--out` retrains only what changed (a run of another config there is replaced).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

from app.core.config import BUILD_DIR, ROOT
from models.machine import flags_text

DEFAULT_RANKS = (4, 8, 16, 32)
MIN_RANK, MAX_RANK = 2, 64
ENERGY_LEVELS = (0.5, 0.8, 0.9, 0.95, 0.99)  # recorded for every layer: how the estimate moves with the threshold
FINISHED = ("max_steps", "early_stopped", "time_budget")  # models.train's end states


# ---------------------------------------------------------------------------------------------- effective rank


def energy_rank(s, energy: float) -> int:
    """The smallest r whose top r singular values (`s`, descending) hold `energy` of Σσ²; 0 for a zero matrix."""
    import torch

    power = torch.as_tensor(s, dtype=torch.float64) ** 2
    total = float(power.sum())
    if total == 0:
        return 0
    share = power.cumsum(0) / total
    return int((share < energy - 1e-12).sum()) + 1  # the slack: n equal values reach 1.0 only up to rounding


def entropy_rank(s) -> float:
    """Roy & Vetterli's effective rank: exp of the Shannon entropy of σ/Σσ (n for n equal values); 0 for zero."""
    import torch

    s = torch.as_tensor(s, dtype=torch.float64)
    if float(s.sum()) == 0:
        return 0.0
    p = s[s > 0] / s.sum()
    return float(torch.exp(-(p * p.log()).sum()))


def round_rank(r: float, lo: int = MIN_RANK, hi: int = MAX_RANK) -> int:
    """The nearest power of two to `r` on a log scale (LoRA ranks are compared by factors of two), within [lo, hi]."""
    if r <= lo:
        return lo
    return min(hi, max(lo, 2 ** round(math.log2(r))))


def module_type(name: str) -> str:
    """`model.layers.28.mlp.down_proj.weight` → `down_proj`."""
    return name.rsplit(".", 2)[-2]


def update_spectra(trained: dict, base: dict, targets: list[str], energy: float) -> dict:
    """Per module type, per trained layer: the effective ranks of ΔW = trained − base (2-D weights of `targets`)."""
    import torch

    from models.methods.base import layer_of

    spectra: dict = {}
    names = [n for n in trained if n.endswith(".weight") and trained[n].ndim == 2 and module_type(n) in targets]
    for name in sorted(names, key=lambda n: (targets.index(module_type(n)), layer_of(n) or 0)):
        w = trained[name]
        s = torch.linalg.svdvals(w.double() - base[name].double())
        spectra.setdefault(module_type(name), []).append(
            {
                "layer": layer_of(name),
                "shape": list(w.shape),
                "energy_rank": energy_rank(s, energy),
                "entropy_rank": round(entropy_rank(s), 1),
                "energy_ranks": {str(e): energy_rank(s, e) for e in ENERGY_LEVELS},
                "top_sigma": [round(float(x / s[0]), 3) for x in s[:5]] if float(s[0]) else [],
            }
        )
    return spectra


def propose(spectra: dict) -> tuple[dict, dict]:
    """(the proposed pattern {type: rank}, the median energy rank per type it was rounded from)."""
    medians = {t: float(statistics.median(x["energy_rank"] for x in layers)) for t, layers in spectra.items()}
    return {t: round_rank(m) for t, m in medians.items()}, medians


# ---------------------------------------------------------------------------------------------- the verdict


def verdict(runs: list[dict], proposal: str, tol: float) -> tuple[str, str]:
    """(right | too high | too low | inconclusive, why): `runs` carry label, best_val, trainable_params; `proposal`
    is the proposal's label. Good runs: best_val within `tol` of the lowest. Right: the proposal is good and no good
    run has fewer parameters."""
    by = {r["label"]: r for r in runs}
    prop = by[proposal]
    best = min(r["best_val"] for r in runs)
    good = [r for r in runs if r["best_val"] <= best + tol]
    knee = min(good, key=lambda r: (r["trainable_params"], r["best_val"]))
    if len(good) == len(runs):
        return "inconclusive", (
            f"every run is within {tol:.4f} of the best validation loss {best:.4f}: rank made no measurable "
            f"difference at this budget ({knee['label']}, the smallest, would do)"
        )
    prop_good = any(r is prop for r in good)
    if prop_good and prop["trainable_params"] <= knee["trainable_params"]:
        return "right", (
            f"the proposal ({prop['best_val']:.4f}) is within {tol:.4f} of the best ({best:.4f}) and no run as good "
            f"has fewer trainable parameters"
        )
    if prop_good or knee["trainable_params"] < prop["trainable_params"]:
        return "too high", (
            f"{knee['label']} ({knee['best_val']:.4f}, {knee['trainable_params']:,} parameters) is within {tol:.4f} "
            f"of the best ({best:.4f}) with fewer parameters than the proposal ({prop['best_val']:.4f}, "
            f"{prop['trainable_params']:,})"
        )
    return "too low", (
        f"the proposal ({prop['best_val']:.4f}) is more than {tol:.4f} above the best ({best:.4f}); the cheapest run "
        f"within {tol:.4f} of the best, {knee['label']}, has {knee['trainable_params']:,} parameters against {prop['trainable_params']:,}"
    )


# ---------------------------------------------------------------------------------------------- the runs


def train_once(cfg: dict) -> dict:
    """`models.train.run` of `cfg` in its out_dir, or the log of a finished run there with the same config."""
    from models import train

    out = Path(cfg["out_dir"])
    log_path = out / "log.json"
    if log_path.exists():
        log = json.loads(log_path.read_text())
        if log.get("status") in FINISHED and log.get("config") == json.loads(json.dumps(cfg)):
            print(f"reusing the finished run in {out}")
            return log
    shutil.rmtree(out, ignore_errors=True)  # another config's run: models.train would resume it
    return train.run(cfg)


def run_summary(log: dict) -> dict:
    return {
        "best_val": round(log["best_val"], 5),
        "trainable_params": log["trainable_params"],
        "steps": log["step"],
        "s_per_step": round(log["wall_s"] / max(log["step"], 1), 3),
        "status": log["status"],
    }


def estimate(cfg: dict, work: Path, steps: int, full_lr: float, energy: float) -> dict:
    """The full fine-tune, the effective ranks of its update and the proposal."""
    from models.adapter_io import load_weights
    from models.base import load_model
    from models.methods.base import WEIGHTS

    full_cfg = cfg | {"method": "full", "lr": full_lr, "max_steps": steps, "eval_interval": steps}
    full_cfg["out_dir"] = str(work / "full")
    log = train_once(full_cfg)
    trained = load_weights(Path(full_cfg["out_dir"]) / "best" / WEIGHTS)  # one evaluation, at the end: the last step
    base = load_model(cfg["base_dir"]).state_dict()
    spectra = update_spectra(trained, base, cfg["target_modules"], energy)
    if not spectra:
        sys.exit(f"the full fine-tune trained none of the target modules {cfg['target_modules']}")
    proposal, medians = propose(spectra)
    return {"full_run": run_summary(log), "spectra": spectra, "median_energy_rank": medians, "proposal": proposal}


def variants(proposal: dict, uniform: list[int]) -> list[tuple[str, dict]]:
    """(label, ranks per module type) of the check's runs, each set of ranks once (its labels joined)."""
    types = list(proposal)
    named = [
        ("proposal", dict(proposal)),
        ("proposal ÷ 2", {t: max(1, r // 2) for t, r in proposal.items()}),
        ("proposal × 2", {t: 2 * r for t, r in proposal.items()}),
        *((f"uniform {r}", dict.fromkeys(types, r)) for r in uniform),
    ]
    merged: dict[str, tuple[str, dict]] = {}
    for label, ranks in named:
        key = json.dumps(ranks, sort_keys=True)
        merged[key] = (f"{merged[key][0]} = {label}", ranks) if key in merged else (label, ranks)
    return list(merged.values())


def lora_cfg(cfg: dict, ranks: dict, steps: int, out: Path, seed: int) -> dict:
    """A LoRA run of the preset training `ranks` ({type: rank}); alpha/r stays the preset's (`models.methods.lora`)."""
    method = cfg["method"] if cfg["method"] in ("lora", "qlora") else "lora"
    return cfg | {"method": method, "lora_rank_pattern": ranks, "max_steps": steps, "out_dir": str(out), "seed": seed}


def slug(label: str) -> str:
    """A run's directory name: `proposal ÷ 2 = uniform 4` → `proposal-half`."""
    short = label.split(" = ")[0].replace("÷ 2", "half").replace("× 2", "double")
    return re.sub(r"[^a-z0-9]+", "-", short).strip("-")


def check(cfg: dict, work: Path, proposal: dict, steps: int, uniform: list[int], seeds: int, min_tol: float) -> dict:
    """The check's runs, the noise (the proposal's spread over seeds) and the verdict."""
    runs = []
    for label, ranks in variants(proposal, uniform):
        log = train_once(lora_cfg(cfg, ranks, steps, work / f"lora-{slug(label)}", cfg["seed"]))
        runs.append({"label": label, "ranks": ranks, **run_summary(log)})
    prop = runs[0]
    noise = [prop["best_val"]]
    for k in range(1, seeds + 1):
        log = train_once(lora_cfg(cfg, proposal, steps, work / f"lora-proposal-seed{k}", cfg["seed"] + k))
        noise.append(round(log["best_val"], 5))
    spread = max(noise) - min(noise)
    tol = max(spread, min_tol)
    result, why = verdict(runs, prop["label"], tol)
    return {"runs": runs, "proposal_seeds": noise, "spread": round(spread, 5), "tol": round(tol, 5),
            "verdict": result, "why": why}  # fmt: skip


# ---------------------------------------------------------------------------------------------- the report


def machine(cfg: dict) -> dict:
    import torch

    from models.machine import cpu, load_average
    from models.train import resolve_device

    device = resolve_device(cfg["device"])
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"cpu": cpu(), "device": str(device), "gpu": gpu, "threads": cfg["threads"],
            "load_average": load_average()}  # fmt: skip


def write_report(report: dict, report_dir: Path) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    name = report["name"]
    (report_dir / f"{name}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    md = report_dir / f"{name}.md"
    md.write_text("\n".join(report_lines(report)) + "\n")
    return md


def report_lines(report: dict) -> list[str]:
    s, c, est = report["settings"], report.get("check"), report["estimate"]
    if c:
        head = f"**Verdict: {c['verdict']}.** {c['why'][0].upper()}{c['why'][1:]}."
    else:
        head = "**Not checked** (run with `--check` to train the proposal against its neighbours)."
    lines = [
        f"# Adapter-rank estimate: {report['name']}",
        "",
        head,
        "",
        f"Proposed `lora_rank_pattern` = `{json.dumps(est['proposal'])}`: the median over layers of the smallest rank "
        f"holding {s['energy']} of the energy (Σσ²) of each module's update after {s['steps']} steps of full "
        f"fine-tuning (lr {s['full_lr']}, top {s['train_layers']} layers), rounded to a power of two in "
        f"[{MIN_RANK}, {MAX_RANK}].",
    ]
    if c:
        lines += [
            "",
            f"## Check: LoRA, {s['check_steps']} steps each, seed {s['seed']}, lr {s['lr']}, alpha/r "
            f"{s['lora_alpha'] / s['lora_r']:g}",
            "",
            f"Noise: the proposal's best validation loss over {len(c['proposal_seeds'])} seeds "
            f"{c['proposal_seeds']} spreads {c['spread']}; tolerance {c['tol']} (at least {s['min_tol']}). Right = "
            "within the tolerance of the best run, and no run that close has fewer trainable parameters.",
            "",
            "| run | ranks | trainable params | best val loss | vs best | s/step |",
            "|---|---|---:|---:|---:|---:|",
        ]
        best = min(r["best_val"] for r in c["runs"])
        for r in sorted(c["runs"], key=lambda r: r["trainable_params"]):
            ranks = " ".join(f"{t.removesuffix('_proj')} {v}" for t, v in r["ranks"].items())
            mark = "**" if r is c["runs"][0] else ""  # the proposal
            lines.append(
                f"| {mark}{r['label']}{mark} | {ranks} | {r['trainable_params']:,} | {r['best_val']:.4f} "
                f"| {r['best_val'] - best:+.4f} | {r['s_per_step']} |"
            )
    layer_ids = [x["layer"] for x in next(iter(est["spectra"].values()))]
    lines += [
        "",
        f"## Effective ranks of the full fine-tune's update (per layer: energy {s['energy']} / entropy)",
        "",
        "| module | median | proposed | " + " | ".join(f"layer {i}" for i in layer_ids) + " |",
        "|---|---:|---:|" + "---:|" * len(layer_ids),
    ]
    for t, layers in est["spectra"].items():
        cells = " | ".join(f"{x['energy_rank']} / {x['entropy_rank']:.0f}" for x in layers)
        lines.append(f"| {t} | {est['median_energy_rank'][t]:g} | {est['proposal'][t]} | {cells} |")
    f, m = est["full_run"], report["machine"]
    cpu = m["cpu"]
    lines += [
        "",
        "The entropy rank (Roy & Vetterli 2007) weighs the singular values by σ, not σ², so the noisy tail of a short "
        "Adam run dominates it; it is recorded for comparison, not used. Energy ranks at other thresholds are in the "
        "JSON (`energy_ranks`).",
        "",
        "## Settings and machine",
        "",
        f"- `python -m models.rank {' '.join(s['argv'])}` on {report['date']}; base {s['base']}, preset "
        f"{s['preset']}, overrides {s['overrides'] or 'none'}.",
        f"- Full fine-tune: {f['steps']} steps, {f['trainable_params']:,} parameters, best val {f['best_val']}, "
        f"{f['s_per_step']} s/step.",
        f"- Machine: {cpu['model']}, {cpu['cores']} cores ({flags_text(cpu)}); device {m['device']}"
        + (f" ({m['gpu']})" if m["gpu"] else "")
        + f", {m['threads']} threads; load average {m['load_average']} at the start (seconds per step on a shared "
        "machine are noisy).",
    ]
    return lines


# ---------------------------------------------------------------------------------------------- the command line


def parse_ranks(text: str) -> list[int]:
    if text.strip() == "none":  # the proposal against its halves and doubles only
        return []
    try:
        ranks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ranks: comma-separated integers, got {text!r}") from None
    if not ranks or min(ranks) < 1:
        raise argparse.ArgumentTypeError(f"--ranks: positive integers, got {text!r}")
    return ranks


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m models.rank",
        description=__doc__.splitlines()[0],
        epilog="other --key=value: models.train overrides",
    )
    p.add_argument("preset", type=Path, help="a models.train preset (models/configs/*.py)")
    p.add_argument("--steps", type=int, default=100, help="full fine-tune steps for the estimate")
    p.add_argument("--energy", type=float, default=0.9, help="share of Σσ² the effective rank holds, in (0, 1]")
    p.add_argument("--full-lr", type=float, default=1e-4, help="the full fine-tune's learning rate")
    p.add_argument("--check", action="store_true", help="train the proposal against its neighbours")
    p.add_argument("--check-steps", type=int, default=200, help="steps of each LoRA run of the check")
    p.add_argument(
        "--ranks",
        type=parse_ranks,
        default=list(DEFAULT_RANKS),
        help="uniform ranks the check trains ('none': only the proposal's halves and doubles)",
    )
    p.add_argument("--seeds", type=int, default=2, help="other seeds the proposal is trained with (the noise)")
    p.add_argument("--min-tol", type=float, default=0.005, help="the least validation-loss tolerance")
    p.add_argument("--out", default="", help="the report's name (default: the preset's)")
    p.add_argument("--report-dir", type=Path, default=ROOT / "reports" / "rank")
    p.add_argument("--work-dir", type=Path, default=BUILD_DIR / "rank", help="runs go to <work-dir>/<preset>/")
    return p


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The arguments and the models.train overrides (`--key=value` that are not this script's)."""
    p = parser()
    a, rest = p.parse_known_args(argv)
    stray = [x for x in rest if not (x.startswith("--") and "=" in x)]
    if stray:
        p.error(f"unrecognized arguments: {' '.join(stray)} (models.train overrides are --key=value)")
    if a.steps < 1 or a.check_steps < 1 or a.seeds < 0:
        p.error("--steps and --check-steps must be at least 1, --seeds at least 0")
    if not 0 < a.energy <= 1:
        p.error(f"--energy must be in (0, 1], got {a.energy}")
    a.out = a.out or a.preset.stem
    if not re.fullmatch(r"[\w.-]+", a.out):
        p.error(f"--out: a file name (letters, digits, . _ -), got {a.out!r}")
    return a, rest


def main(argv: list[str]) -> Path:
    from models import train

    a, overrides = parse(argv)
    cfg = train.configure([str(a.preset), *overrides])
    work = a.work_dir / a.preset.stem
    report = {
        "name": a.out,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(cfg),
        "settings": {
            "argv": argv, "preset": str(a.preset), "overrides": overrides, "base": cfg["base"] or cfg["base_dir"],
            "train_layers": cfg["train_layers"], "target_modules": cfg["target_modules"], "steps": a.steps,
            "full_lr": a.full_lr, "energy": a.energy, "check_steps": a.check_steps, "uniform_ranks": a.ranks,
            "seeds": a.seeds, "min_tol": a.min_tol, "seed": cfg["seed"], "lr": cfg["lr"], "lora_r": cfg["lora_r"],
            "lora_alpha": cfg["lora_alpha"], "batch_tokens": cfg["batch_tokens"], "limit_train": cfg["limit_train"],
            "limit_val": cfg["limit_val"],
        },
    }  # fmt: skip
    report["estimate"] = estimate(cfg, work, a.steps, a.full_lr, a.energy)
    print(f"proposed lora_rank_pattern: {report['estimate']['proposal']}", flush=True)
    if a.check:
        report["check"] = check(cfg, work, report["estimate"]["proposal"], a.check_steps, a.ranks, a.seeds, a.min_tol)
    md = write_report(report, a.report_dir)
    print(md.read_text())
    return md


if __name__ == "__main__":
    main(sys.argv[1:])
