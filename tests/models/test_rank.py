"""Adapter-rank estimation (`models.rank`): the effective ranks on matrices whose rank is known, the rounding, the
proposal from constructed updates, the verdict's criterion; then, on the tiny preset, an estimate and its check end
to end, and LoRA with a rank pattern (`models.methods.lora`) through training, publishing, loading and the export."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests_support import two_layer_base

from models import rank, train
from models.base import load_tokenizer
from models.bases import SMOLLM2
from models.data import write_sample
from models.methods import MethodError
from models.methods.lora import rank_pattern

TINY = Path("models/configs/tiny.py")
IDS = torch.tensor([[1, 504, 3365, 418, 1730, 30, 2, 9, 35, 3500, 11, 17, 400, 28, 7, 4412]])


def _svdvals(m: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(m.double())


def _low_rank(rows: int, cols: int, sigmas: list[float], seed: int = 0) -> torch.Tensor:
    """A rows × cols matrix with exactly these singular values (orthonormal factors from a QR)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(rows, len(sigmas), generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(cols, len(sigmas), generator=g, dtype=torch.float64))[0]
    return u @ torch.diag(torch.tensor(sigmas, dtype=torch.float64)) @ v.T


# ---------------------------------------------------------------------------------------------- no model needed


def test_a_rank_3_matrix_plus_tiny_noise_has_energy_rank_3():
    m = _low_rank(96, 64, [10.0, 5.0, 2.0]) + 1e-4 * torch.randn(96, 64, generator=torch.Generator().manual_seed(1))
    s = _svdvals(m)
    assert rank.energy_rank(s, 0.99) == 3
    assert rank.energy_rank(s, 0.5) == 1  # 100 of 129.0: the top value alone holds 78%
    assert rank.energy_rank(s, 0.9) == 2  # 125 of 129.0 = 96.9%
    assert 2.0 < rank.entropy_rank(s) < 3.0  # σ/Σσ = (.59, .29, .12) and a negligible tail


def test_the_identity_has_full_effective_rank_and_zero_has_none():
    s = _svdvals(torch.eye(8))
    assert rank.energy_rank(s, 0.99) == 8 and rank.energy_rank(s, 1.0) == 8  # rounding must not leave one out
    assert rank.energy_rank(s, 0.5) == 4
    assert rank.entropy_rank(s) == pytest.approx(8.0)
    assert rank.energy_rank(_svdvals(torch.zeros(4, 4)), 0.9) == 0 and rank.entropy_rank(torch.zeros(4)) == 0.0


def test_ranks_round_to_the_nearest_power_of_two_within_bounds():
    cases = {0: 2, 1: 2, 2: 2, 3: 4, 5: 4, 6: 8, 12: 16, 16: 16, 24.5: 32, 38: 32, 47.5: 64, 100: 64, 5000: 64}
    assert {r: rank.round_rank(r) for r in cases} == cases
    assert rank.round_rank(3, lo=1, hi=2) == 2 and rank.round_rank(300, hi=256) == 256


def test_the_proposal_is_the_rounded_median_over_layers_of_each_module_types_update():
    base, trained = {}, {}
    for layer, (rq, rd) in enumerate([(3, 20), (3, 14), (5, 18)]):
        q, d = f"model.layers.{layer}.self_attn.q_proj.weight", f"model.layers.{layer}.mlp.down_proj.weight"
        base[q], base[d] = torch.randn(48, 48), torch.randn(48, 96)
        trained[q] = base[q] + _low_rank(48, 48, [1.0] * rq, seed=layer).float()
        trained[d] = base[d] + _low_rank(48, 96, [1.0] * rd, seed=10 + layer).float()
    trained["model.layers.0.input_layernorm.weight"] = torch.ones(48)  # not 2-D: no rank
    trained["model.layers.0.self_attn.v_proj.weight"] = torch.randn(16, 48)  # not a target here
    spectra = rank.update_spectra(trained, base, ["q_proj", "down_proj"], energy=0.999)
    assert list(spectra) == ["q_proj", "down_proj"]  # in target order, whatever the dict's
    assert [x["energy_rank"] for x in spectra["q_proj"]] == [3, 3, 5] and [x["layer"] for x in spectra["q_proj"]] == [
        0,
        1,
        2,
    ]
    assert spectra["down_proj"][0]["entropy_rank"] == pytest.approx(20, abs=0.1)
    proposal, medians = rank.propose(spectra)
    assert medians == {"q_proj": 3.0, "down_proj": 18.0} and proposal == {"q_proj": 4, "down_proj": 16}


def _run(label: str, loss: float, params: int) -> dict:
    return {"label": label, "best_val": loss, "trainable_params": params}


def test_the_verdict_asks_within_noise_of_the_best_with_no_cheaper_run_as_good():
    half, prop, double = _run("half", 1.30, 100), _run("proposal", 1.20, 200), _run("double", 1.19, 400)
    assert rank.verdict([half, prop, double], "proposal", tol=0.02)[0] == "right"  # double's gain is noise
    assert rank.verdict([half, prop, double], "proposal", tol=0.005)[0] == "too low"  # not within noise any more
    cheap, tiny = _run("half", 1.205, 100), _run("uniform 1", 1.5, 25)
    assert rank.verdict([tiny, cheap, prop, double], "proposal", tol=0.02)[0] == "too high"  # as good, half the params
    worse = _run("proposal", 1.40, 200)
    result, why = rank.verdict([half, worse, _run("double", 1.5, 400)], "proposal", tol=0.02)
    assert result == "too high" and "half" in why  # cheaper and better
    assert rank.verdict([half, prop, double], "proposal", tol=0.2)[0] == "inconclusive"


def test_the_check_trains_each_set_of_ranks_once():
    got = rank.variants({"q_proj": 8, "down_proj": 8}, [4, 16, 8])
    labels = [label for label, _ in got]
    assert labels == ["proposal = uniform 8", "proposal ÷ 2 = uniform 4", "proposal × 2 = uniform 16"]
    assert got[1][1] == {"q_proj": 4, "down_proj": 4}
    assert [rank.slug(x) for x in labels] == ["proposal", "proposal-half", "proposal-double"]
    # rank 1 halves to rank 1 (LoRA's least): the proposal's own run
    assert rank.variants({"q_proj": 1}, []) == [
        ("proposal = proposal ÷ 2", {"q_proj": 1}),
        ("proposal × 2", {"q_proj": 2}),
    ]


def test_a_rank_pattern_must_be_positive_integer_ranks_under_regular_expressions():
    assert rank_pattern({}) == {} and rank_pattern({"lora_rank_pattern": {"q_proj": 8}}) == {"q_proj": 8}
    for bad, message in [
        ({"q_proj": 0}, "positive integers"),
        ({"q_proj": 2.5}, "positive integers"),
        ({"q_proj(": 4}, "not a regular expression"),
        ("q_proj", "a dict"),
    ]:
        with pytest.raises(MethodError, match=message):
            rank_pattern({"lora_rank_pattern": bad})


@pytest.mark.parametrize(
    "argv, message",
    [
        (["models/configs/nope.py"], "cannot read preset"),
        ([str(TINY), "--energy", "1.5"], "--energy must be in"),
        ([str(TINY), "--ranks", "4,x"], "comma-separated integers"),
        ([str(TINY), "--steps", "0"], "at least 1"),
        ([str(TINY), "--out", "../x"], "a file name"),
        ([str(TINY), "--no_such_key=1"], "unknown config key: no_such_key"),
        ([str(TINY), "stray"], "unrecognized arguments: stray"),
    ],
)
def test_bad_input_is_a_message_and_a_non_zero_exit(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        rank.main(argv)
    said = str(exc.value.code) + capsys.readouterr().err
    assert exc.value.code != 0 and message in said


# ---------------------------------------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_sample(tmp_path_factory.mktemp("data"), load_tokenizer(SMOLLM2.model_dir), {"train": 16, "val": 8})


@pytest.mark.slow
def test_an_estimate_and_its_check_on_the_tiny_preset_write_a_report(tmp_path, data_dir, capsys):
    # small micro-batches and a low threshold (small ranks): every run in seconds
    common = [f"--data_dir={data_dir}", "--batch_tokens=512", "--report-dir", str(tmp_path / "reports"),
              "--work-dir", str(tmp_path / "w")]  # fmt: skip
    md = rank.main([str(TINY), "--steps", "2", "--energy", "0.5", "--check", "--check-steps", "2", "--ranks", "4,8",
                    "--seeds", "0", *common])  # fmt: skip
    report = json.loads(md.with_suffix(".json").read_text())
    proposal = report["estimate"]["proposal"]
    assert set(proposal) == set(report["settings"]["target_modules"])
    assert all(r in (2, 4, 8, 16, 32, 64) for r in proposal.values())
    for t, layers in report["estimate"]["spectra"].items():
        assert [x["layer"] for x in layers] == [28, 29] and all(
            1 <= x["energy_rank"] <= min(x["shape"]) for x in layers
        )
        assert rank.round_rank(report["estimate"]["median_energy_rank"][t]) == proposal[t]
    check = report["check"]
    assert check["runs"][0]["ranks"] == proposal and check["runs"][0]["label"].startswith("proposal")
    params = {json.dumps(r["ranks"], sort_keys=True): r["trainable_params"] for r in check["runs"]}
    assert len(params) == len(check["runs"])  # each set of ranks trained once
    by_label = {part: r for r in check["runs"] for part in r["label"].split(" = ")}
    assert by_label["uniform 8"]["trainable_params"] == 2 * by_label["uniform 4"]["trainable_params"]
    assert all(r["steps"] == 2 and r["s_per_step"] > 0 for r in check["runs"])
    assert check["tol"] == report["settings"]["min_tol"]  # no other seeds: the floor
    assert check["verdict"] in ("right", "too high", "too low", "inconclusive")
    text = md.read_text()
    assert text.splitlines()[2].startswith(f"**Verdict: {check['verdict']}.**") and " cores (AVX2" in text
    # another threshold reuses the full fine-tune (same config) and, higher, proposes no smaller ranks
    capsys.readouterr()
    again = rank.main([str(TINY), "--steps", "2", "--energy", "0.9", "--out", "tiny-09", *common])
    assert "reusing the finished run" in capsys.readouterr().out
    higher = json.loads(again.with_suffix(".json").read_text())["estimate"]["proposal"]
    assert all(higher[t] >= proposal[t] for t in proposal) and "Not checked" in again.read_text()


def _lora_ranks(model) -> dict:
    """module name suffix (layer.type) → the rank of its LoRA factors."""
    return {".".join(name.split(".")[-5:-3]): p.shape[0] for name, p in model.named_parameters() if "lora_A" in name}


@pytest.mark.slow
def test_a_lora_with_a_rank_pattern_trains_publishes_and_loads_back_with_its_ranks(tmp_path, data_dir):
    from models.base import load_model
    from models.methods import method_of
    from models.publish import publish

    pattern = {"q_proj": 2, "down_proj": 8}
    cfg = train.configure([str(TINY), f"--out_dir={tmp_path / 'run'}", f"--data_dir={data_dir}", "--max_steps=2",
                           f"--lora_rank_pattern={pattern}"])  # fmt: skip
    log = train.run(cfg)
    saved = json.loads((tmp_path / "run" / "best" / "adapter_config.json").read_text())
    assert saved["r"] == 4 and saved["rank_pattern"] == pattern
    assert saved["alpha_pattern"] == {"q_proj": 4, "down_proj": 16}  # alpha/r = 8/4 for every module
    dest = publish(tmp_path / "run", tmp_path / "published")
    method = method_of(dest)
    loaded = method.load(load_model(SMOLLM2.model_dir), dest)
    ranks = _lora_ranks(loaded)
    assert ranks["self_attn.q_proj"] == 2 and ranks["mlp.down_proj"] == 8 and ranks["self_attn.v_proj"] == 4
    # q 2·(576+576) + k 4·(576+192) + v 4·(576+192) + o 4·(576+576) + gate/up 4·(576+1536) each + down 8·(1536+576)
    per_layer = 2 * 1152 + 4 * 768 * 2 + 4 * 1152 + 4 * 2112 * 2 + 8 * 2112
    assert log["trainable_params"] == 2 * per_layer
    with torch.no_grad():
        run_best = method.load(load_model(SMOLLM2.model_dir), tmp_path / "run" / "best")(input_ids=IDS).logits
        published = loaded(input_ids=IDS).logits
        merged = method.merge(loaded)(input_ids=IDS).logits
    assert (published - run_best).abs().max() < 0.05  # row-wise int8 of factors of ranks 2, 4 and 8
    assert (merged - published).abs().max() < 1e-3


@pytest.mark.slow
def test_a_merged_pattern_adapter_exports_to_onnx(tmp_path, monkeypatch):
    import onnxruntime as ort

    from models import export
    from models.methods import get_method

    cfg = dict(train.DEFAULTS) | {"train_layers": 2, "lora_r": 4, "lora_alpha": 8, "lora_rank_pattern": {"o_proj": 16}}
    lora = get_method("lora")
    model = lora.prepare(two_layer_base()[0], cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in (p for p in model.parameters() if p.requires_grad):
            p.add_(torch.randn(p.shape, generator=g) * 0.05)  # B starts at zero: make the update count
    assert _lora_ranks(model)["self_attn.o_proj"] == 16 and _lora_ranks(model)["self_attn.q_proj"] == 4
    lora.save(model, tmp_path / "saved", cfg)
    expected = lora.merge(lora.load(two_layer_base()[0], tmp_path / "saved"))(input_ids=IDS).logits[0, -1]
    monkeypatch.setattr(export, "load_base", lambda spec: two_layer_base())
    export.build(SMOLLM2, tmp_path / "saved", out_dir=tmp_path / "onnx", force=True, keep=True)
    session = ort.InferenceSession(str(tmp_path / "onnx" / "fp32" / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = IDS.numpy()
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(ids.shape[1])[None]}
    past = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32) for i in session.get_inputs()
            if i.name.startswith("past")}  # fmt: skip
    logits = session.run(["logits"], feed | past)[0][0, -1]
    assert np.abs(logits - expected.detach().numpy()).max() < 1e-2
