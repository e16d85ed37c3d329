"""Hyper-parameter sweeps (`models.sweep`) on the tiny test sweep (models/configs/sweep_tiny.py: the tiny preset,
3 steps a trial): workers share one study and stop at n_trials, a rerun resumes, a bad trial is pruned, EX is
measured on the trial's weights (int8 base included), PostgreSQL holds a study as SQLite does, and bad settings
are refused with a message. Also the int8 block quantization that `precision = "int8"` trains on."""

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psycopg
import pytest
import torch
from optuna.trial import TrialState

from models import sweep
from models.base import load_tokenizer
from models.bases import SMOLLM2
from models.data import write_sample
from models.methods.qlora import dequantize_int8, quantize_int8

ROOT = Path(__file__).resolve().parents[2]
SWEEP_TINY = "models/configs/sweep_tiny.py"
WHOLE = ("--limit_train=16", "--limit_val=8")  # the whole sample of the tests' data: one cache for these tests
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_sample(tmp_path_factory.mktemp("data"), load_tokenizer(SMOLLM2.model_dir), {"train": 16, "val": 8})


def _args(tmp: Path, data: Path, *extra: str) -> list[str]:
    return [SWEEP_TINY, f"--work_dir={tmp / 'work'}", f"--report_dir={tmp / 'reports'}", f"--data_dir={data}", *extra]


def _sweep(tmp: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    """The command line, as `make sweep` runs it (workers are spawned processes)."""
    cmd = [sys.executable, "-m", "models.sweep", *_args(tmp, data, *extra)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _study(tmp: Path, name: str = "sweep_tiny") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp / 'work' / name}.db")


def _running(tmp: Path) -> int:
    """Trials running now, read from the study's file read-only: loading it through optuna would create its tables,
    racing the sweep that is creating them; 0 until they exist."""
    db = tmp / "work" / "sweep_tiny.db"
    if not db.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
            return conn.execute("SELECT count(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0]
    except sqlite3.OperationalError:  # no such table yet
        return 0


def _trials(study: optuna.Study, *states: TrialState) -> list:
    """The study's trials in these states, the surplus ones (a race between workers) left out."""
    return [t for t in study.get_trials(states=states) if not t.user_attrs.get("surplus")]


# ---------------------------------------------------------------------------------------------- no model needed


def test_int8_blocks_round_trip_within_half_a_step():
    w = torch.randn(96, 64)
    codes, absmax = quantize_int8(w, 64)
    assert codes.dtype == torch.int8 and codes.numel() == w.numel() and absmax.numel() == w.numel() // 64
    assert codes.abs().max() == 127  # each block's largest weight is ±127
    back = dequantize_int8(codes, absmax, w.shape)
    assert ((back - w).abs().reshape(-1, 64) <= absmax[:, None] / 254 + 1e-6).all()
    with pytest.raises(ValueError, match="do not tile"):
        quantize_int8(torch.zeros(3, 7), 64)


def test_pareto_front_keeps_the_trials_nothing_beats_on_both_axes():
    rows = [
        {"number": 0, "ex": 40.0, "train_s": 100},
        {"number": 1, "ex": 50.0, "train_s": 300},
        {"number": 2, "ex": 45.0, "train_s": 400},  # beaten by 1: less EX, more time
        {"number": 3, "ex": 40.0, "train_s": 150},  # beaten by 0: same EX, more time
        {"number": 4, "ex": None, "train_s": 50},  # pruned: no EX
    ]
    assert sweep.pareto_front(rows, "train_s") == [0, 1]


def test_a_trial_beyond_n_trials_counted_by_number_is_surplus():
    study = optuna.create_study()  # in memory
    first, second, third = study.ask(), study.ask(), study.ask()  # three workers raced for two slots
    assert not sweep.is_surplus(first, 2) and not sweep.is_surplus(second, 2) and sweep.is_surplus(third, 2)
    study.tell(first, state=TrialState.FAIL)  # a failed trial frees its slot
    assert not sweep.is_surplus(third, 2)


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_worker_even_when_its_shell_ignored_sigint(signame):
    """A sweep started with `&` inherits SIGINT ignored; its workers must still stop (and mark their trial failed)."""
    code = (
        "import os, signal, sys, time\n"
        "from models import sweep\n"
        "sweep.interruptible()\n"
        "try:\n"
        f"    os.kill(os.getpid(), signal.{signame}); time.sleep(30)\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(130)\n"
    )
    ignored = subprocess.run(  # as a backgrounded shell command starts: SIGINT ignored
        [sys.executable, "-c", code],
        cwd=ROOT,
        timeout=60,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert ignored.returncode == 130


class _SignalWhileCreating(optuna.samplers.RandomSampler):
    """A stop that lands while optuna creates the trial: after its row is RUNNING, before the objective runs."""

    def before_trial(self, study, trial):
        signal.raise_signal(signal.SIGTERM)


def test_a_stop_while_optuna_creates_a_trial_fails_that_trial_instead_of_leaving_it_running(monkeypatch):
    stop = sweep.StopSignal()
    monkeypatch.setattr(sweep, "stop_signal", stop)
    previous = signal.signal(signal.SIGTERM, stop.handle)
    ran = []
    monkeypatch.setattr(sweep, "_objective", lambda trial, s, n_threads: ran.append(trial.number) or 1.0)
    try:
        study = optuna.create_study(sampler=_SignalWhileCreating())  # in memory
        with pytest.raises(KeyboardInterrupt), stop.mode(raise_now=False):  # as a worker runs its trials
            study.optimize(lambda trial: sweep.objective(trial, {}, 1), n_trials=1, catch=(Exception,))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert ran == [] and [t.state for t in study.trials] == [TrialState.FAIL]


def test_a_stop_during_a_storage_write_is_raised_once_the_write_has_committed(tmp_path, monkeypatch):
    """Raised mid-write, KeyboardInterrupt could leave the transaction, and the SQLite file's lock, open."""
    import sqlalchemy as sa

    stop = sweep.StopSignal()
    monkeypatch.setattr(sweep, "stop_signal", stop)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = sweep.StopSafeStorage(url)
    trial = optuna.create_study(study_name="s", storage=storage).ask()
    fired = []

    def signal_mid_write(*args):
        if not fired:
            fired.append(True)
            signal.raise_signal(signal.SIGTERM)

    sa.event.listen(storage.engine, "before_cursor_execute", signal_mid_write)
    previous = signal.signal(signal.SIGTERM, stop.handle)
    try:
        with pytest.raises(KeyboardInterrupt), stop.mode(raise_now=True):  # as inside a trial's objective
            trial.set_user_attr("written", True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    again = optuna.load_study(study_name="s", storage=url)
    assert fired and again.trials[0].user_attrs == {"written": True}
    again.tell(again.trials[0].number, state=TrialState.FAIL)  # nothing holds the file's lock


def test_a_sqlite_storage_transaction_holds_the_write_lock_from_its_begin(tmp_path):
    """A transaction that read first and wrote later had to upgrade its lock, which SQLite refuses at once where
    another writer waits (two stopped workers: a trial left RUNNING). Every transaction now takes the write lock as
    it begins: another writer waits for it (here, with no patience, is refused) until it ends."""
    storage = sweep.open_storage({"storage": "", "work_dir": str(tmp_path), "study": "locks"})
    other = sqlite3.connect(tmp_path / "locks.db", timeout=0, isolation_level=None)
    with storage.engine.connect() as conn, conn.begin():
        conn.exec_driver_sql("SELECT COUNT(*) FROM trials").fetchall()  # only a read so far
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")  # released at the end of the transaction
    other.execute("ROLLBACK")
    study = optuna.create_study(study_name="locks", storage=storage)
    study.tell(study.ask(), 1.0)  # optuna's own sessions commit as before
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]


@pytest.mark.parametrize(
    "override, message",
    [
        ("--bogus=1", "unknown config key: bogus"),
        ("--precision=['fp16']", "unknown precision 'fp16'"),
        ("--lr=(3e-3, 1e-4)", "a range is \\(low, high\\)"),
        ("--lora_r=8", "a list of choices"),
        ("--out_dir=x", "out_dir is set by the sweep"),
        ("--train_preset=models/configs/nope.py", "no file models/configs/nope.py"),
        ("--pruner=hyperband", "pruner 'hyperband'"),
    ],
)
def test_bad_settings_are_refused_with_a_message(override, message):
    with pytest.raises(sweep.SweepError, match=message):
        sweep.configure([SWEEP_TINY, override])


def test_the_command_line_says_what_is_wrong_and_exits_2(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "models.sweep", SWEEP_TINY, "--precision=['fp32', 'int3']"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "unknown precision 'int3'" in r.stderr and "Traceback" not in r.stderr
    s = sweep.configure(_args(tmp_path, tmp_path))
    with pytest.raises(sweep.SweepError, match="no study 'sweep_tiny'"):
        sweep.main(_args(tmp_path, tmp_path, "--report-only"))
    with pytest.raises(sweep.SweepError, match="no train.jsonl"):
        sweep.check_setup(s)


# ---------------------------------------------------------------------------------------------- the real model


@pytest.mark.slow
def test_two_workers_share_the_study_and_a_rerun_adds_only_what_is_missing(tmp_path, data_dir):
    r = _sweep(tmp_path, data_dir, "--workers=2", "--n_trials=3")
    assert r.returncode == 0, r.stderr[-2000:]
    study = _study(tmp_path)
    finished = _trials(study, *FINISHED)
    assert len(finished) == 3 and not _trials(study, TrialState.FAIL, TrialState.RUNNING)
    assert len([line for line in r.stdout.splitlines() if line.startswith("trial ")]) == 3  # one line per trial
    first, second = sorted(finished, key=lambda t: t.number)[:2]
    assert first.datetime_start < second.datetime_complete and second.datetime_start < first.datetime_complete

    assert list((data_dir / "cache").glob("train_*_12_6.f32"))  # limit_train = 12, limit_val = 6: one shared cache

    for t in finished:  # what every trial keeps, pruned or not
        a = t.user_attrs
        assert a["device"] == "cpu" and a["train_s"] > 0 and a["peak_rss_mb"] > 100 and a["trainable_params"] > 0
        assert set(a["values"]) == {"lora_r", "lr", "precision"}
        assert a["train_config"]["method"] == {"fp32": "lora"}.get(a["values"]["precision"], "qlora")
        assert a["train_config"]["data_dir"] == str(data_dir) and a["train_config"]["limit_train"] == 12

    report = json.loads((tmp_path / "reports" / "sweep_tiny.json").read_text())
    assert report["counts"]["complete"] + report["counts"]["pruned"] == 3 and len(report["trials"]) == 3
    assert report["machine"]["devices"] == ["cpu"] and "avx2" in report["machine"]["flags"]
    md = (tmp_path / "reports" / "sweep_tiny.md").read_text()
    assert md.startswith("# Sweep `sweep_tiny`") and "best by validation loss" in md.splitlines()[2]
    assert (tmp_path / "reports" / "sweep_tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    best = sweep.best_config(study)  # the best trial's values, with the sweep's fixed keys
    assert best["lora_r"] == study.best_trial.params["lora_r"] and best["max_steps"] == 3
    assert best["data_dir"] == str(data_dir) and best["train_files"] == ["train.jsonl"]

    r = _sweep(tmp_path, data_dir, "--workers=2", "--n_trials=4")
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(_trials(_study(tmp_path), *FINISHED)) == 4
    n_rows = len(_study(tmp_path).trials)
    r = _sweep(tmp_path, data_dir, "--workers=2", "--n_trials=4")  # nothing left to do: no trial starts
    assert r.returncode == 0 and "trial " not in r.stdout and len(_study(tmp_path).trials) == n_rows


@pytest.mark.slow
def test_a_trial_worse_than_the_median_is_pruned_and_a_complete_one_gets_its_ex(tmp_path, data_dir):
    # a sound learning rate on an int8 base, evaluated on 2 dev questions (answers cut at 8 tokens: seconds); the
    # whole sample: its lower-layer cache (in data_dir) serves the PostgreSQL test too
    good = [
        *WHOLE,
        "--workers=1",
        "--lr=[3e-3]",
        "--precision=['int8']",
        "--eval_limit=2",
        "--eval_new_tokens=8",
    ]
    r = _sweep(tmp_path, data_dir, "--n_trials=1", *good)
    assert r.returncode == 0, r.stderr[-2000:]
    (first,) = _study(tmp_path).trials
    assert first.state == TrialState.COMPLETE and first.user_attrs["eval_n"] == 2
    assert 0 <= first.user_attrs["ex"] <= 100 and first.user_attrs["latency_ms"] > 0
    saved = json.loads((tmp_path / "work" / "sweep_tiny" / "trial-0" / "best" / "adapter_method.json").read_text())
    assert saved == {"base_weights": "int8", "bits": 8, "block": 64, "method": "qlora"}

    # then a learning rate that wrecks the adapter: worse than trial 0 at the first report (step 2 of 3)
    r = _sweep(tmp_path, data_dir, *WHOLE, "--n_trials=2", "--workers=1", "--lr=[5.0]")
    assert r.returncode == 0, r.stderr[-2000:]
    bad = _study(tmp_path).trials[1]
    assert bad.state == TrialState.PRUNED and list(bad.intermediate_values) == [2]
    assert bad.user_attrs["steps"] == 2 and "ex" not in bad.user_attrs  # stopped before step 3, not evaluated
    report = json.loads((tmp_path / "reports" / "sweep_tiny.json").read_text())
    assert report["counts"]["pruned"] == 1 and report["best_by_val_loss"]["number"] == 0


@pytest.mark.slow
@pytest.mark.postgres
def test_a_postgresql_storage_holds_the_study(tmp_path, data_dir, postgres_server):
    s = postgres_server
    with psycopg.connect(f"host={s['host']} port={s['port']} user={s['user']} dbname=postgres", autocommit=True) as c:
        c.execute("CREATE DATABASE sweep_test")  # its own database: optuna's tables stay out of the app's
    url = f"postgresql+psycopg://{s['user']}@{s['host']}:{s['port']}/sweep_test"
    r = _sweep(tmp_path, data_dir, f"--storage={url}", *WHOLE, "--workers=1", "--n_trials=1")
    assert r.returncode == 0, r.stderr[-2000:]
    study = optuna.load_study(study_name="sweep_tiny", storage=url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    assert not (tmp_path / "work" / "sweep_tiny.db").exists()  # nothing went to SQLite
    (tmp_path / "reports" / "sweep_tiny.json").unlink()
    r = _sweep(tmp_path, data_dir, f"--storage={url}", "--report-only")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "reports" / "sweep_tiny.json").read_text())
    assert report["settings"]["storage"] == url and report["counts"]["complete"] == 1


@pytest.mark.slow
def test_a_worker_stops_after_failures_in_a_row_and_says_why(tmp_path, data_dir):
    r = _sweep(tmp_path, data_dir, "--max_len=[8]", "--max_failures=2", "--workers=1")  # no example is that short
    assert r.returncode == 1 and "trials not run" in r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("trial ")]
    assert len(lines) == 2 and all(" fail " in line and "no training examples" in line for line in lines)
    assert [t.state for t in _study(tmp_path).trials] == [TrialState.FAIL, TrialState.FAIL]


@pytest.mark.slow
def test_sigterm_to_the_sweep_alone_stops_its_workers_and_fails_their_trials(tmp_path, data_dir):
    """`kill PID` of the sweep (not its group): the workers, which got no signal, are stopped by it, mark their
    running trials failed, and the command exits 130 with its report; a rerun resumes."""
    # trials that cannot end on their own (no early stop): on a slow machine they did, before the signal reached them
    endless = ("--workers=2", "--max_steps=100000", "--patience=100000")
    cmd = [sys.executable, "-m", "models.sweep", *_args(tmp_path, data_dir, *endless)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while _running(tmp_path) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "the same command resumes the study" in err, err[-2000:]
    study = _study(tmp_path)
    assert not _trials(study, TrialState.RUNNING) and len(_trials(study, TrialState.FAIL)) == 2, err[-3000:]
    assert (tmp_path / "reports" / "sweep_tiny.md").exists()
