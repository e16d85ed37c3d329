"""Hyper-parameter sweeps: an Optuna study over `models.train` runs, as many worker processes as asked, its trials
kept in a database, so a sweep is resumable and can be spread over machines.

    python -m models.sweep models/configs/sweep_smol.py                  # 2 local workers (the preset's), resumable
    python -m models.sweep models/configs/sweep_smol.py --workers=1 --n_trials=30
    python -m models.sweep models/configs/sweep_smol.py --report-only    # rewrite the report from the storage
    make sweep [SWEEP=models/configs/sweep_smol.py] [WORKERS=2]

A sweep preset is a small file of assignments (`models.presets`): the study's settings below, the search space
(a list is a set of choices, one value pins it; a tuple `(low, high)` is a range: integers uniform, floats
log-uniform, as a learning rate wants) and any key of `models.train`, fixed for every trial over `train_preset`
(e.g. `eval_interval`, and the per-trial budget `max_steps` and/or `max_minutes`). `precision` picks the frozen
base's precision: fp32 → `lora`, int8 → `qlora` with `qlora_bits = 8`, int4 → `qlora` (NF4). `limit_train` and
`limit_val` train every trial on a few hundred rows spread over all of Spider's databases; `cache_below_top` (at least
the largest `train_layers`) and `cache_max_len` (the largest `max_len`) let every trial read one lower-layer cache.

A trial trains the sampled config into <work_dir>/<study>/trial-<n> (its output in train.log there) and reports its
validation losses to the pruner, which stops a trial that does worse than the median of the earlier ones at the
same step. The objective is the best validation loss (one objective: what pruning needs). A completed trial is
then evaluated: EX on `eval_limit` Spider dev questions (spread evenly) with the torch engine on its best weights,
one question at a time; the mean generation time per question is the served-latency proxy. Both, with the training
time, tokens/s, peak RSS (VmHWM over the trial's training), trainable parameters and the device (`device = "auto"`:
a CUDA GPU when torch sees one, unchanged commands), are kept as the trial's user attributes; a pruned or failed
trial keeps what it had.

Workers: `workers` processes on this machine, each `threads` torch threads (0 = cores // workers), all on the same
storage. The study ends with `n_trials` finished (complete or pruned) trials: a worker starts a trial only while
fewer are finished or running, and a trial that a race between workers created beyond that ends at once as a failed
"surplus" trial, left out of the report. Running the same command again resumes (the study is loaded, not made
anew); stopping one (Ctrl-C) marks its running trials failed; a worker killed outright leaves its trial running in
the storage until its heartbeat is stale (3 minutes), then the next command or worker marks it failed.

Storage: `storage = ""` is SQLite, <work_dir>/<study>.db (several processes write to it: every transaction takes the
write lock when it begins, and waits up to 60 s for it). To
spread the trials over several machines, make a PostgreSQL database they all reach and run the same command on
each machine with `--storage=postgresql+psycopg://user:password@host/dbname` (psycopg 3, installed): every worker
of every machine draws its trials from the one study, and the report (from any machine, `--report-only`) sees
them all. Each machine needs the base and the tokenized data (`python -m models.prepare`); trial directories stay
on the machine that ran them.

Output: reports/sweeps/<study>.json, .md (headline first) and .png (the Pareto fronts of EX against training time
and against the latency proxy), written when the workers are done and by `--report-only`. `best_config(study)` is
the train config of the best trial (by validation loss), for whatever trains the final model from it.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import sys
import threading
import traceback
import warnings
from datetime import UTC, datetime
from pathlib import Path

import optuna
import sqlalchemy
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    check_distribution_compatibility,
)
from optuna.trial import TrialState

from models import presets, train

# ---------------------------------------------------------------- defaults (override by preset / --key=value)
study = "sweep"  # the study's name, also of its report files and directories
storage = ""  # "" = sqlite:///<work_dir>/<study>.db; postgresql+psycopg://... to spread trials over machines
work_dir = "build/sweeps"  # the SQLite file and each trial's run directory, <work_dir>/<study>/trial-<n>
report_dir = "reports/sweeps"
train_preset = "models/configs/lora_top12.py"  # the training preset every trial starts from (from the working dir)
n_trials = 20  # finished (complete or pruned) trials the study ends with, over every run and worker
workers = 2
threads = 0  # torch threads per worker; 0 = cores // workers
eval_limit = 50  # Spider dev questions for EX after each completed trial; 0 = none
eval_new_tokens = 160  # tokens an answer may get (the service's MAX_NEW_TOKENS); fewer bound an untrained model's
pruner = "median"  # median (a trial worse than the median of earlier ones at the same step stops) | none
prune_startup_trials = 4  # completed trials before anything is pruned
prune_warmup_steps = 0  # a trial's steps before it can be pruned
random_trials = 8  # trials sampled at random before TPE models the results
max_failures = 3  # a worker stops after this many failed trials in a row: a broken setup, not bad luck
# search space: [choices] (one value pins it), (low, high) a range (floats log-uniform); [] = the train preset's value
lora_r = []
lora_alpha = []
train_layers = []
lr = []
batch_tokens = []
epochs = []
max_len = []
precision = []  # fp32 | int8 | int4: the frozen base's precision
# ---------------------------------------------------------------------------------------------------------------
CONFIG_KEYS = presets.config_keys(globals())
DEFAULTS = {k: globals()[k] for k in CONFIG_KEYS}
SPACE = ("lora_r", "lora_alpha", "train_layers", "lr", "batch_tokens", "epochs", "max_len", "precision")
PRECISION = {
    "fp32": {"method": "lora"},
    "int8": {"method": "qlora", "qlora_bits": 8},
    "int4": {"method": "qlora", "qlora_bits": 4},
}
PRUNERS = ("median", "none")
PER_TRIAL = ("out_dir", "threads")  # train keys the sweep sets for each trial
HEARTBEAT_S, GRACE_S = 60, 180  # a running trial's heartbeat; stale (its worker gone) after the grace period
# seconds a stopped worker has to mark its trial failed before it is killed: more than SQLite's busy timeout (60 s,
# `open_storage`), for which that write may have to wait
STOP_GRACE_S = 90
MIN_IMPORTANCE_TRIALS = 8
_UNSET = object()  # a train key the sweep preset leaves to the train preset
ACTIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)  # count towards n_trials


class SweepError(ValueError):
    """Settings a sweep cannot run with; the message says which and why."""


# ------------------------------------------------------------------------------------------------ settings


def configure(argv: list[str]) -> dict:
    """The sweep's settings (this module's keys) and `train`: the train keys the preset or overrides fix."""
    train_keys = [k for k in train.CONFIG_KEYS if k not in DEFAULTS]
    namespace = copy.deepcopy(DEFAULTS) | dict.fromkeys(train_keys, _UNSET)
    try:
        values = presets.configure(argv, namespace, CONFIG_KEYS + train_keys)
    except presets.PresetError as exc:
        raise SweepError(str(exc)) from None
    settings = {k: values[k] for k in CONFIG_KEYS}
    settings["train"] = {k: values[k] for k in train_keys if values[k] is not _UNSET}
    check(settings)
    return settings


def check(s: dict) -> None:
    """Every setting a sweep needs, with a message naming the first one that is wrong."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", s["study"]):
        raise SweepError(f"study {s['study']!r}: letters, digits, '_', '.' and '-' only (it names files)")
    for key in ("n_trials", "workers"):
        if not (isinstance(s[key], int) and s[key] >= 1):
            raise SweepError(f"{key} = {s[key]!r}: a whole number, 1 or more")
    if not (isinstance(s["eval_limit"], int) and s["eval_limit"] >= 0):
        raise SweepError(f"eval_limit = {s['eval_limit']!r}: a whole number, 0 (no EX) or more")
    if not (isinstance(s["eval_new_tokens"], int) and s["eval_new_tokens"] >= 1):
        raise SweepError(f"eval_new_tokens = {s['eval_new_tokens']!r}: a whole number, 1 or more")
    if s["pruner"] not in PRUNERS:
        raise SweepError(f"pruner {s['pruner']!r}: choose one of {', '.join(PRUNERS)}")
    if not Path(s["train_preset"]).is_file():
        raise SweepError(f"train_preset: no file {s['train_preset']}")
    fixed = [k for k in PER_TRIAL if k in s["train"]]
    if fixed:
        raise SweepError(f"{fixed[0]} is set by the sweep for each trial (see work_dir and threads)")
    for key in SPACE:
        check_dimension(key, s[key])


def _positive(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 1


def check_dimension(key: str, value) -> None:
    if isinstance(value, tuple):
        ok = len(value) == 2 and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        if not ok or value[0] > value[1] or (any(isinstance(v, float) for v in value) and value[0] <= 0):
            raise SweepError(f"{key} = {value!r}: a range is (low, high), low <= high (and > 0 for floats)")
        if key == "precision":
            raise SweepError(f"precision: a list of choices from {', '.join(PRECISION)}, not a range")
    elif not isinstance(value, list):
        raise SweepError(f"{key} = {value!r}: a list of choices, e.g. [{value!r}], or a (low, high) range")
    elif key == "precision" and any(v not in PRECISION for v in value):
        bad = next(v for v in value if v not in PRECISION)
        raise SweepError(f"unknown precision {bad!r}: choose from {', '.join(PRECISION)}")


def storage_url(s: dict) -> str:
    return s["storage"] or f"sqlite:///{Path(s['work_dir']) / s['study']}.db"


def open_storage(s: dict):
    """The study's RDB storage; SQLite waits for a lock held by another worker instead of failing at once."""
    url = storage_url(s)
    sqlite = url.startswith("sqlite")
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    # isolation_level None: the driver issues no BEGIN of its own, `_begin_immediate` issues every one
    kwargs = {"connect_args": {"timeout": 60, "isolation_level": None}} if sqlite else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
        storage = StopSafeStorage(url, kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    if sqlite:
        sqlalchemy.event.listen(storage.engine, "begin", _begin_immediate)
    return storage


def _begin_immediate(conn) -> None:
    """Every SQLite transaction takes the write lock as it begins. A transaction that reads first and writes later
    must upgrade its lock, and where another connection already waits to commit, SQLite refuses that upgrade at once
    ("database is locked") instead of waiting out the busy timeout: two workers marking their trials failed at the
    same moment, beside their heartbeat threads, lost one trial's state that way (it stayed RUNNING)."""
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_pruner(s: dict):
    if s["pruner"] == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=s["prune_startup_trials"], n_warmup_steps=s["prune_warmup_steps"]
    )


def load_study(s: dict, create: bool = False):
    """The study in its storage. TPE with the constant liar: a running trial counts as a bad one, so parallel
    workers do not all sample the same region. Unseeded: the workers' order is not reproducible anyway."""
    sampler = optuna.samplers.TPESampler(n_startup_trials=s["random_trials"], constant_liar=True)
    kwargs = {"study_name": s["study"], "storage": open_storage(s), "sampler": sampler, "pruner": make_pruner(s)}
    if create:
        return optuna.create_study(direction="minimize", load_if_exists=True, **kwargs)
    try:
        return optuna.load_study(**kwargs)
    except KeyError:
        raise SweepError(f"no study {s['study']!r} in {masked(storage_url(s))}") from None


def masked(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# ------------------------------------------------------------------------------------------------ one trial


def distribution(dim: list | tuple) -> BaseDistribution | None:
    """A search key's distribution for the study; None when it is not searched (unset, or one value pinned)."""
    if isinstance(dim, tuple):
        if all(isinstance(v, int) for v in dim):
            return IntDistribution(*dim)
        return FloatDistribution(*dim, log=True)
    return CategoricalDistribution(dim) if len(dim) > 1 else None


def sample(trial, s: dict) -> dict:
    """The trial's value of every search key that is set (pinned ones included, though the study never sees them)."""
    values = {}
    for key in SPACE:
        d = distribution(s[key])
        if isinstance(d, IntDistribution):
            values[key] = trial.suggest_int(key, d.low, d.high)
        elif isinstance(d, FloatDistribution):
            values[key] = trial.suggest_float(key, d.low, d.high, log=True)
        elif isinstance(d, CategoricalDistribution):
            values[key] = trial.suggest_categorical(key, d.choices)
        elif s[key]:
            values[key] = s[key][0]
    return values


def check_space(study, s: dict) -> None:
    """A resumed study's search space must be the one its trials were sampled from (optuna refuses a parameter
    whose choices or kind changed, trial after trial): said once, before any worker starts."""
    for t in study.get_trials(deepcopy=False):
        for key, old in t.distributions.items():
            new = distribution(s[key]) if key in SPACE else None
            try:
                if new is not None:  # one no longer searched (pinned or unset) optuna leaves alone
                    check_distribution_compatibility(old, new)
            except ValueError as exc:
                raise SweepError(
                    f"{key}: study {s['study']!r} sampled it from {old} in trial {t.number}, not {s[key]!r} "
                    f"({exc}); keep its space or name a new study"
                ) from None


def train_config(s: dict, values: dict, out_dir: Path, n_threads: int) -> dict:
    """The train preset, the sweep's fixed train keys, then the trial's values (precision as its method)."""
    fixed = [f"--{k}={v!r}" for k, v in s["train"].items()]
    cfg = train.configure([s["train_preset"], *fixed])
    sampled = {k: v for k, v in values.items() if k != "precision"}
    per_trial = {"out_dir": str(out_dir), "threads": n_threads}
    return cfg | sampled | PRECISION.get(values.get("precision"), {}) | per_trial


def first_values(s: dict) -> dict:
    """Each search key's first choice (or low end): a config to check the setup with before any worker starts."""
    return {k: s[k][0] for k in SPACE if s[k]}


def check_setup(s: dict) -> None:
    """What would make every trial fail, said once: the train preset and keys, the data, the dev set for EX."""
    from models.data import SPIDER_DIR

    try:
        cfg = train_config(s, first_values(s), Path(s["work_dir"]) / s["study"] / "check", 1)
    except SystemExit as exc:  # train.configure: the train preset's keys
        raise SweepError(str(exc.code)) from None
    missing = [f for f in [*cfg["train_files"], "val.jsonl"] if not (Path(cfg["data_dir"]) / f).exists()]
    if missing:
        raise SweepError(
            f"no {missing[0]} in {cfg['data_dir']}: tokenize the data for this base first "
            f"(BASE_MODEL={cfg['base'] or '<base>'} python -m models.prepare)"
        )
    if s["eval_limit"] and not (SPIDER_DIR / "dev.json").exists():
        raise SweepError(f"eval_limit = {s['eval_limit']}: no Spider dev set at {SPIDER_DIR} (or set eval_limit = 0)")


class Surplus(Exception):
    """A trial started by a race between workers beyond n_trials: it ends at once, failed, and is not reported."""


def is_surplus(trial, n: int) -> bool:
    """Whether `n` earlier trials (by number, the storage's order) are already finished or running."""
    earlier = [t for t in trial.study.get_trials(deepcopy=False, states=ACTIVE) if t.number < trial.number]
    return len(earlier) >= n


def pruning_callback(trial):
    """`models.train.run`'s on_eval: each validation loss reported; a trial the pruner stops ends there."""

    def on_eval(step: int, val_loss: float) -> None:
        trial.report(val_loss, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"val loss {val_loss:.4f} at step {step}")

    return on_eval


def device_name(cfg: dict) -> str:
    import torch

    device = train.resolve_device(cfg["device"])
    return f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "cpu"


def record_training(trial, out: Path, peak_rss: float | None) -> None:
    """What the run's log.json says about it, as the trial's user attributes (also for a pruned or failed run)."""
    log_path = out / "log.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {}
    best = log.get("best_val")
    attrs = {
        "best_val": round(best, 5) if best is not None and math.isfinite(best) else None,
        "steps": log.get("step"),
        "train_s": round(log["wall_s"], 1) if "wall_s" in log else None,
        "tokens_per_s": log.get("tokens_per_s"),
        "trainable_params": log.get("trainable_params"),
        "peak_rss_mb": peak_rss,
        "status": log.get("status"),
    }
    for key, value in attrs.items():
        if value is not None:
            trial.set_user_attr(key, value)


def execution_accuracy(cfg: dict, adapter: Path, s: dict, n_threads: int, out: Path) -> dict:
    """EX of the trial's best weights on `eval_limit` Spider dev questions (`models.evaluate`, the torch engine),
    one question per batch, so the time per question is a single request's."""
    from models import evaluate
    from models.bases import get_base
    from models.generators import TorchGenerator

    items = evaluate.load_items(evaluate.parser().parse_args(["--run", "sweep", "--limit", str(s["eval_limit"])]))[0]
    # the weights the trial trained from (a sweep may start from the served model: its `base_dir`)
    generator = TorchGenerator(adapter, n_threads, get_base(cfg["base"] or None), base_dir=Path(cfg["base_dir"]))
    evaluate.run(items, generator, out / "eval.jsonl", 1, s["eval_new_tokens"])
    summary = evaluate.summarize(out / "eval.jsonl", {})
    (out / "eval.json").write_text(json.dumps(summary, indent=2))
    return summary


def objective(trial, s: dict, n_threads: int) -> float:
    """One trial: train the sampled config (pruned on validation loss), then EX; returns the best validation loss.
    A stop signal interrupts it at once (optuna marks the trial failed)."""
    with stop_signal.mode(raise_now=True):
        return _objective(trial, s, n_threads)


def _objective(trial, s: dict, n_threads: int) -> float:
    from bench.memory import peak_rss_mb, reset_peak_rss

    if is_surplus(trial, s["n_trials"]):
        trial.set_user_attr("surplus", True)
        raise Surplus(f"{s['n_trials']} trials are already finished or running")
    values = sample(trial, s)
    out = Path(s["work_dir"]) / s["study"] / f"trial-{trial.number}"
    cfg = train_config(s, values, out, n_threads)
    trial.set_user_attr("values", values)
    trial.set_user_attr("train_config", cfg)
    trial.set_user_attr("device", device_name(cfg))
    shutil.rmtree(out, ignore_errors=True)  # a new trial's number: anything there is a deleted study's, not to resume
    out.mkdir(parents=True)
    with (out / "train.log").open("a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            reset_peak_rss()
            try:
                # two workers starting trials of one cache: models.train's lock lets one compute it
                result = train.run(cfg, on_eval=pruning_callback(trial))
            finally:
                record_training(trial, out, peak_rss_mb())
            if not math.isfinite(result["best_val"]):  # never one finite validation loss: no best weights either
                raise optuna.TrialPruned("diverged: no finite validation loss")
            if s["eval_limit"]:
                summary = execution_accuracy(cfg, out / "best", s, n_threads, out)
                trial.set_user_attr("ex", summary["ex"])
                trial.set_user_attr("latency_ms", summary["mean_gen_ms_per_question"])
                trial.set_user_attr("eval_n", summary["n"])
        except SystemExit as exc:  # train.py exits with a message on bad data or settings
            trial.set_user_attr("error", f"train: {exc.code}")
            raise RuntimeError(f"train: {exc.code}") from None
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            traceback.print_exc()
            trial.set_user_attr("error", f"{type(exc).__name__}: {str(exc)[:300]} (see {out / 'train.log'})")
            raise
    return result["best_val"]


# ------------------------------------------------------------------------------------------------ workers


def slots_left(study, n: int) -> int:
    """Trials still to start: n less the finished and running ones. A running trial whose heartbeat is stale (its
    worker killed outright) is marked failed first, so that it holds no slot."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return n - len(study.get_trials(deepcopy=False, states=ACTIVE))


def progress_line(t) -> str:
    a = t.user_attrs
    val = a.get("best_val", t.value)
    ex = a.get("ex")
    seconds = t.duration.total_seconds() if t.duration else 0
    line = (
        f"trial {t.number:3d} {t.state.name.lower():8s} val {_fmt(val, '.4f'):<6}  EX {_fmt(ex):>5} %  "
        f"{seconds:5.0f} s  {format_values(a.get('values', {}))}"
    )
    return line + (f"  {a['error']}" if "error" in a else "")


def work(s: dict, n_threads: int) -> int:
    """One worker: trials until the study holds n_trials finished or running ones (or `max_failures` in a row)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a trial's own output is in its train.log
    study = load_study(s)
    failed_in_a_row = 0

    def after(study, t) -> None:
        nonlocal failed_in_a_row
        if t.user_attrs.get("surplus"):
            return
        print(progress_line(t), flush=True)
        failed_in_a_row = failed_in_a_row + 1 if t.state == TrialState.FAIL else 0

    with stop_signal.mode(raise_now=False):  # a stop lands inside a trial's objective, or between trials
        while slots_left(study, s["n_trials"]) > 0:
            stop_signal.check()
            if failed_in_a_row >= s["max_failures"]:
                print(f"worker {os.getpid()}: {failed_in_a_row} trials failed in a row: stopping", flush=True)
                return 1
            study.optimize(
                lambda trial: objective(trial, s, n_threads), n_trials=1, callbacks=[after], catch=(Exception,)
            )
        stop_signal.check()
    return 0


class StopSignal:
    """SIGINT and SIGTERM in a sweep process. The first signal raises KeyboardInterrupt at once only where that is
    safe: inside a trial's objective (optuna then marks the trial failed) and in the sweep waiting for its workers.
    Elsewhere it is noted and raised at the next safe point: raised while optuna created a trial, it left that trial
    RUNNING; raised inside a storage call (`StopSafeStorage`), it could leave a transaction, and the lock on the
    study's SQLite file, open until the process ended. Later signals are ignored (Ctrl-C reached the whole group,
    then the sweep forwarded SIGTERM): one landing while the trial's failure is written would leave it RUNNING too.
    Signals reach the main thread only, so only its calls are deferred (the heartbeat thread's are left alone)."""

    def __init__(self) -> None:
        self.requested = False  # a signal came
        self.raised = False  # ... and KeyboardInterrupt was raised for it
        self.raise_now = True

    def handle(self, signum, frame) -> None:
        self.requested = True
        if self.raise_now:
            self._raise()

    def _raise(self) -> None:
        if self.requested and not self.raised:
            self.raised = True
            raise KeyboardInterrupt

    def check(self) -> None:
        """Between trials: a stop that came stops the worker."""
        if self.requested:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def mode(self, raise_now: bool):
        """Within the block a signal raises at once (`raise_now`) or waits; a noted one is raised on entering an
        immediate block and on returning to one."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        before, self.raise_now = self.raise_now, raise_now
        try:
            if raise_now:
                self._raise()
            yield
        finally:
            self.raise_now = before
        if before:
            self._raise()


stop_signal = StopSignal()


class StopSafeStorage(optuna.storages.RDBStorage):
    """The study's RDB storage, each of whose calls completes before a stop signal is raised (see StopSignal)."""


def _stop_safe(method):
    @functools.wraps(method)
    def call(*args, **kwargs):
        with stop_signal.mode(raise_now=False):
            return method(*args, **kwargs)

    return call


for _name in {n for cls in optuna.storages.RDBStorage.__mro__ for n in vars(cls) if not n.startswith("_")}:
    _method = getattr(optuna.storages.RDBStorage, _name)
    if inspect.isfunction(_method) and not isinstance(inspect.getattr_static(StopSafeStorage, _name), staticmethod):
        setattr(StopSafeStorage, _name, _stop_safe(_method))


def interruptible() -> None:
    """Signals go to `stop_signal`. Python keeps SIGINT ignored when the process started with it ignored, as a
    shell's `cmd &` does: `pkill -INT` on a backgrounded sweep did nothing, so both are installed explicitly."""
    signal.signal(signal.SIGINT, stop_signal.handle)
    signal.signal(signal.SIGTERM, stop_signal.handle)


def _worker_main(s: dict, n_threads: int) -> None:
    interruptible()
    try:
        sys.exit(work(s, n_threads))
    except KeyboardInterrupt:  # Ctrl-C reaches every worker: its trial is marked failed, no traceback
        sys.exit(130)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_workers(s: dict, study) -> int:
    """`workers` spawned processes (a fresh interpreter each: torch threads and memory of their own), or this
    process for one; returns how many ended with an error."""
    n = min(s["workers"], slots_left(study, s["n_trials"]))
    if n <= 0:
        return 0
    n_threads = s["threads"] or max(1, cores() // s["workers"])
    print(f"sweep {s['study']}: {n} worker(s) × {n_threads} thread(s), storage {masked(storage_url(s))}", flush=True)
    if n == 1:
        return int(work(s, n_threads) != 0)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(s, n_threads)) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        # Ctrl-C reaches the whole group, a signal to this process alone (kill PID) none of the workers: each gets
        # SIGTERM now, at once (waiting let an unsignalled worker finish its trial and start the next), marks its
        # running trial failed and exits. One still alive after the grace period is killed; its trial stays RUNNING
        # until its heartbeat is stale.
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=STOP_GRACE_S)
            if p.is_alive():
                p.kill()
                p.join()
        raise
    return sum(p.exitcode != 0 for p in procs)


# ------------------------------------------------------------------------------------------------ the report


def trial_rows(study) -> list[dict]:
    """Every trial but the surplus ones, as the report shows it."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        if a.get("surplus"):
            continue
        rows.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "values": a.get("values", {}),
                "val_loss": a.get("best_val", t.value),
                "ex": a.get("ex"),
                "eval_n": a.get("eval_n"),
                "train_s": a.get("train_s"),
                "latency_ms": a.get("latency_ms"),
                "tokens_per_s": a.get("tokens_per_s"),
                "peak_rss_mb": a.get("peak_rss_mb"),
                "trainable_params": a.get("trainable_params"),
                "steps": a.get("steps"),
                "device": a.get("device"),
                "trial_s": round(t.duration.total_seconds(), 1) if t.duration else None,
                "error": a.get("error"),
            }
        )
    return rows


def pareto_front(rows: list[dict], cost: str, quality: str = "ex") -> list[int]:
    """Numbers of the trials that no other beats on both `quality` (EX: higher is better; val_loss: lower is) and
    `cost` (lower), cheapest first."""
    sign = 1 if quality == "ex" else -1
    points = sorted((r for r in rows if r[quality] is not None and r[cost] is not None), key=lambda r: r[cost])
    q = lambda r: sign * r[quality]  # noqa: E731

    def dominated(r: dict) -> bool:
        return any(q(o) >= q(r) and o[cost] <= r[cost] and (q(o), -o[cost]) != (q(r), -r[cost])
                   for o in points)  # fmt: skip

    return [r["number"] for r in points if not dominated(r)]


def importances(study, eval_limit: int) -> dict:
    """PED-ANOVA importance of each searched parameter (optuna's default evaluator; no scikit-learn) for reaching
    the best trials by validation loss and, when every completed trial has one, by EX: the top 10%, or the top 5
    trials where that is more (the evaluator wants 5 or more); not computed under MIN_IMPORTANCE_TRIALS."""
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        return {"val_loss": f"not computed: {len(complete)} complete trials, fewer than {MIN_IMPORTANCE_TRIALS}"}
    targets = {"val_loss": None}
    if eval_limit and all("ex" in t.user_attrs for t in complete):
        targets["ex"] = lambda t: -t.user_attrs["ex"]  # the evaluator takes lower as better
    evaluator = PedAnovaImportanceEvaluator(target_quantile=max(0.1, 5 / len(complete)))
    result = {}
    for name, target in targets.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "importances will be equal" when the top trials are alike: shown so
            imp = get_param_importances(study, evaluator=evaluator, target=target)
        result[name] = {k: round(v, 3) for k, v in imp.items()}
    return result


def machine(rows: list[dict]) -> dict:
    import torch

    from models.machine import cpu

    return cpu() | {"torch": torch.__version__, "devices": sorted({r["device"] for r in rows if r["device"]})}


def report(study, s: dict) -> dict:
    rows = trial_rows(study)
    # EX when the trials measured it; a study without EX (eval_limit = 0: budgets too short for answers to differ)
    # ranks the trials by validation loss, the objective, instead
    quality = "ex" if any(r["ex"] is not None for r in rows) else "val_loss"
    fronts = {cost: pareto_front(rows, cost, quality) for cost in ("train_s", "latency_ms")}
    complete = [r for r in rows if r["state"] == "complete"]
    with_ex = [r for r in complete if r["ex"] is not None]
    return {
        "study": s["study"],
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(rows),
        "settings": {k: s[k] for k in CONFIG_KEYS if k != "storage"}
        | {"storage": masked(storage_url(s)), "train": s["train"]},
        "counts": {
            state: sum(r["state"] == state for r in rows) for state in ("complete", "pruned", "fail", "running")
        },
        "best_by_val_loss": min(complete, key=lambda r: r["val_loss"], default=None),
        "best_by_ex": max(with_ex, key=lambda r: (r["ex"], -r["val_loss"]), default=None),
        "pareto": fronts,
        "pareto_quality": quality,
        "importance": importances(study, s["eval_limit"]),
        "trials": rows,
    }


def _fmt(v, spec: str = "") -> str:
    return "–" if v is None else format(v, spec)


def format_values(values: dict) -> str:
    return ", ".join(f"{k} {_fmt(v, '.2e') if k == 'lr' else v}" for k, v in values.items())


def describe(row: dict | None) -> str:
    if row is None:
        return "none yet"
    return (
        f"trial {row['number']}: val loss {_fmt(row['val_loss'], '.4f')}, EX {_fmt(row['ex'])}%, "
        f"{_fmt(row['train_s'])} s training ({format_values(row['values'])})"
    )


def markdown(r: dict, s: dict) -> str:
    c, rows, fronts = r["counts"], r["trials"], r["pareto"]
    space = [k for k in SPACE if s[k]]
    n_eval = next((row["eval_n"] for row in rows if row["eval_n"]), s["eval_limit"])
    lines = [
        f"# Sweep `{r['study']}`",
        "",
        f"- **best by validation loss**: {describe(r['best_by_val_loss'])}",
        f"- **best by EX**: {describe(r['best_by_ex'])}",
        f"- {len(rows)} trials: {c['complete']} complete, {c['pruned']} pruned on validation loss "
        f"(pruner: {s['pruner']}), {c['fail']} failed" + (f", {c['running']} running" if c["running"] else ""),
        f"- Pareto front, {'EX' if r.get('pareto_quality', 'ex') == 'ex' else 'validation loss (no trial measured EX)'}"
        f" against training time: trials {fronts['train_s'] or '–'}; against the latency proxy: "
        f"trials {fronts['latency_ms'] or '–'} (marked T and L below; `{r['study']}.png`)",
        f"- device: {', '.join(r['machine']['devices']) or '–'}; CPU {r['machine']['model']}, "
        f"{r['machine']['cores']} cores, "
        + ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in r["machine"]["flags"].items()),
        "",
        "## Trials",
        "",
        "| # | state | " + " | ".join(space) + " | val loss | EX % | train s | latency ms | tok/s | RSS MB | front |",
        "|---:|---|" + "---|" * len(space) + "---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in sorted(rows, key=lambda x: (x["val_loss"] is None, x["val_loss"] or 0)):
        marks = ("T" if row["number"] in fronts["train_s"] else "") + (
            "L" if row["number"] in fronts["latency_ms"] else ""
        )
        vals = [_fmt(row["values"].get(k), ".2e" if k == "lr" else "") for k in space]
        lines.append(
            f"| {row['number']} | {row['state']} | " + " | ".join(vals) + f" | {_fmt(row['val_loss'], '.4f')} | "
            f"{_fmt(row['ex'])} | {_fmt(row['train_s'])} | {_fmt(row['latency_ms'])} | {_fmt(row['tokens_per_s'])} | "
            f"{_fmt(row['peak_rss_mb'])} | {marks} |"
        )
    lines += ["", "## Parameter importance (PED-ANOVA: what reaching the best trials depended on)", ""]
    for target, imp in r["importance"].items():
        text = imp if isinstance(imp, str) else ", ".join(f"{k} {v}" for k, v in imp.items())
        lines.append(f"- for {target.replace('_', ' ')}: {text}")
    budget = {k: s["train"][k] for k in ("max_steps", "max_minutes") if k in s["train"]}
    lines += [
        "",
        "## What the numbers are",
        "",
        "- val loss: the trial's best validation loss (the objective, minimized; what the pruner compares).",
        f"- EX: execution accuracy on {n_eval} Spider dev questions spread evenly, torch fp32 engine, the trial's "
        "best weights merged into the base (a quantized base dequantized), greedy decoding.",
        "- latency ms: the served-latency proxy, the mean time to generate one answer in that evaluation (batch of "
        "1, the trial's threads, torch fp32 on the CPU, also where training ran on a GPU). Every trial's merged "
        "model has the base's shape, so it moves with the answers' length and the machine's load (the other "
        "workers), not with rank or precision.",
        "- train s: the optimizer steps' wall time (`models.train`'s wall_s: no lower-layer caching, no "
        "evaluation); tok/s over those steps; RSS: peak resident memory over the trial's training (VmHWM).",
        "",
        "## Setup",
        "",
        f"- storage {r['settings']['storage']}; train preset `{s['train_preset']}`; fixed train keys "
        f"{s['train'] or '–'}; budget per trial {budget or 'the preset’s epochs'}",
        "- search space: " + ", ".join(f"{k} {s[k]}" for k in space),
        f"- {s['n_trials']} trials, {s['workers']} workers; TPE (constant liar) after {s['random_trials']} random "
        f"trials; pruner {s['pruner']} (after {s['prune_startup_trials']} complete trials, from step "
        f"{s['prune_warmup_steps']})",
        f"- torch {r['machine']['torch']}; written {r['written']}",
    ]
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    """Two panels: EX against training time and against the latency proxy, each front joined and labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quality = r.get("pareto_quality", "ex")
    ylabel = "EX %" if quality == "ex" else "best validation loss (lower is better)"
    rows = [row for row in r["trials"] if row[quality] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, cost, label in ((axes[0], "train_s", "training time (s)"), (axes[1], "latency_ms", "latency proxy (ms)")):
        points = [row for row in rows if row[cost] is not None]
        front = [next(p for p in points if p["number"] == n) for n in r["pareto"][cost]]
        ax.scatter([p[cost] for p in points], [p[quality] for p in points], color="0.6", label="trials")
        ax.plot(
            [p[cost] for p in front],
            [p[quality] for p in front],
            "o-",
            color="C3",
            drawstyle="steps-post",
            label="Pareto front",
        )
        for p in points:
            ax.annotate(str(p["number"]), (p[cost], p[quality]), textcoords="offset points", xytext=(4, 3), fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if not points:
            ax.text(0.5, 0.5, "no trial measured", ha="center", transform=ax.transAxes)
        else:
            ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Sweep {r['study']}: {ylabel.split(' (')[0]} against training time and served latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(study, s: dict) -> Path:
    r = report(study, s)
    out = Path(s["report_dir"])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{s['study']}.json").write_text(json.dumps(r, indent=2))
    (out / f"{s['study']}.md").write_text(markdown(r, s))
    plot(r, out / f"{s['study']}.png")
    return out / f"{s['study']}.md"


def best_config(study) -> dict:
    """The train config of the study's best trial (lowest validation loss), as `models.train.run` takes it: its data
    limits, budget (`max_minutes`, `max_steps`), `out_dir` and `threads` too, for the caller to override.
    ValueError without a complete trial."""
    return dict(study.best_trial.user_attrs["train_config"])


# ------------------------------------------------------------------------------------------------ command line


def main(argv: list[str]) -> int:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    report_only = "--report-only" in argv
    s = configure([a for a in argv if a != "--report-only"])
    if report_only:
        path = write_report(load_study(s), s)
        print(f"report: {path}")
        return 0
    check_setup(s)
    interruptible()
    study = load_study(s, create=True)
    check_space(study, s)
    try:
        errors = run_workers(s, study)
    except KeyboardInterrupt:
        print(f"report: {write_report(study, s)}")
        print("interrupted: the same command resumes the study", file=sys.stderr)
        return 130
    print(f"report: {write_report(study, s)}")
    left = slots_left(study, s["n_trials"])
    if errors and left > 0:
        print(f"{left} of {s['n_trials']} trials not run: see the failed trials' train.log", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except SweepError as exc:
        print(f"sweep: {exc}", file=sys.stderr)
        sys.exit(2)
