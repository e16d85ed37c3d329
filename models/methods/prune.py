"""Structured pruning, then a full fine-tune of the top `train_layers` layers (the recovery): a smaller plain model
that publishes, exports to ONNX and runs in the engine like any other (`prune_layers`, `prune_mlp` in a preset).

    python -m models.train models/configs/tiny_prune.py        # 4 of SmolLM2's 30 layers and 25% of MLP channels

What goes is a plan computed once in `prepare` from the base, the first 32 rows of the run's train.jsonl (token ids;
the calibration rows) and the settings, so the same run always removes the same weights:

- whole decoder layers (`prune_layers`): those of least block influence, BI = 1 - cos(layer input, layer output)
  averaged over the calibration tokens (ShortGPT: Men et al. 2024, arXiv:2403.03853): a layer that barely turns
  the hidden state is the cheapest to skip. Layer 0 is never removed (its BI is the largest by far: it turns the
  embeddings into the residual stream), nor are the top `train_layers` layers, which the recovery trains.
- MLP channels (`prune_mlp`, the same count in every kept layer so that `intermediate_size` stays one number): the
  channels j of least RMS(activation j on the calibration tokens)·‖down_proj column j‖, the typical size of what
  the channel adds to the residual stream: Wanda's |weight|·‖input‖ (Sun et al. 2023, arXiv:2306.11695) summed
  over a channel, as FLAP's "Wanda-sp" applies it (An et al. 2024, arXiv:2312.11983). Activations, not weights
  alone: on SmolLM2 with 25% of channels removed (no recovery; 48 validation rows) the loss went from 2.12 to 2.45
  with this score and to 12.06 with ‖gate row‖·‖up row‖·‖down column‖, which misses the few channels whose small
  weights carry very large activations.
- attention heads: not pruned. Both bases use grouped-query attention (Qwen 14 query heads on 2 key/value heads,
  SmolLM2 9 on 3) and the config holds one head count for every layer, so a uniform removal must take whole
  key/value groups (half of Qwen's attention, a third of SmolLM2's) or the same number of query heads from every
  group; and attention holds a small share of the weights (12% of a Qwen layer, 25% of a SmolLM2 layer), while
  removing query heads leaves the KV cache as large as before. Whole layers shrink weights, compute and KV cache.

The pruned model is an ordinary transformers model: the kept layers renumbered (`self_attn.layer_idx`), the MLP
Linear layers sliced, `num_hidden_layers`, `intermediate_size` and (Qwen) `layer_types` set in its config, so the
export and the engine see a shallower, narrower model of the same architecture. Its frozen lower layers are not
the base's: `cache_tag` keeps their cached outputs apart from the unpruned runs'.

Saved: the trained top layers (as `full`), the plan's kept layers and settings in `adapter_method.json` and the
kept MLP channels of each kept layer in `adapter_plan.safetensors`; `load` prunes a fresh base by the plan and fills
in the trained layers. Published like `full` (trained layers in float16) with the plan beside them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from models.methods.base import MethodError, read_method_file, write_method_file
from models.methods.full import FullTopK

PLAN = "adapter_plan.safetensors"  # adapter_*: the export's stamp and the published size count it
CALIBRATION_ROWS = 32


@dataclass
class Plan:
    """What a pruned model keeps of its base: decoder layers (base indices, ascending) and, for each kept layer, its
    MLP channels (a row of base channel indices, ascending)."""

    layers: list[int]
    channels: torch.Tensor  # (len(layers), kept channels), int64
    base_layers: int
    base_channels: int

    def same_as(self, other: Plan) -> bool:
        return self.layers == other.layers and torch.equal(self.channels, other.channels)


def check_settings(config, cfg: dict) -> tuple[int, float]:
    """`prune_layers` and `prune_mlp` of a run, or MethodError saying what a base of this size allows."""
    n, k = config.num_hidden_layers, min(cfg["train_layers"], config.num_hidden_layers)
    layers, mlp = cfg["prune_layers"], cfg["prune_mlp"]
    removable = max(0, n - 1 - k)
    if not isinstance(layers, int) or not 0 <= layers <= removable:
        raise MethodError(f"prune_layers={layers!r}: this base has {n} decoder layers; with layer 0 and the "
                          f"{k} trained ones kept, 0 to {removable} can be removed")  # fmt: skip
    if not isinstance(mlp, (int, float)) or not 0 <= mlp < 1:
        raise MethodError(f"prune_mlp={mlp!r}: the fraction of MLP channels removed must be in [0, 1)")
    return layers, float(mlp)


def calibration_rows(cfg: dict) -> list[list[int]]:
    """The token ids of the first CALIBRATION_ROWS rows of the run's train.jsonl."""
    data_dir = cfg.get("data_dir")
    if not data_dir:  # as models.train.configure reads an empty data_dir: the registry base's data
        from models.bases import get_base

        data_dir = get_base(cfg.get("base") or None).data_dir
    path = Path(data_dir) / "train.jsonl"
    if not path.exists():
        raise MethodError(f"prune: no {path} to choose what to remove from (python -m models.prepare writes it)")
    with path.open() as f:
        rows = [json.loads(line)["ids"] for line, _ in zip(f, range(CALIBRATION_ROWS), strict=False)]
    if not rows:
        raise MethodError(f"prune: {path} is empty")
    return rows


@torch.no_grad()
def calibrate(model, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Over every token of `rows` (each row run alone: no padding to leave out), per decoder layer: its block
    influence, 1 - the mean cosine similarity of its input and output hidden states, (layers,); and the RMS of each
    MLP channel's activation (the input of down_proj), (layers, channels)."""
    inner = model.model
    n, width = len(inner.layers), model.config.intermediate_size
    cos_sum, act_sq = torch.zeros(n, dtype=torch.float64), torch.zeros(n, width, dtype=torch.float64)
    last = {}

    def embedded(_module, _args, out):
        last["h"] = out

    def layer_out(i: int):
        def hook(_module, _args, out):
            out = out[0] if isinstance(out, tuple) else out
            cos_sum[i] += F.cosine_similarity(last["h"], out, dim=-1).double().sum()
            last["h"] = out

        return hook

    def mlp_act(i: int):
        def hook(_module, args):
            act_sq[i] += args[0].double().pow(2).sum(dim=(0, 1))

        return hook

    handles = [inner.embed_tokens.register_forward_hook(embedded)]
    for i, layer in enumerate(inner.layers):
        handles += [
            layer.register_forward_hook(layer_out(i)),
            layer.mlp.down_proj.register_forward_pre_hook(mlp_act(i)),
        ]
    try:
        for ids in rows:
            inner(input_ids=torch.tensor([ids]), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    tokens = sum(len(ids) for ids in rows)
    return (1 - cos_sum / tokens).float(), (act_sq / tokens).sqrt().float()


def channel_scores(mlp, act_rms: torch.Tensor) -> torch.Tensor:
    """Per MLP channel j: RMS of its activation times ‖down_proj column j‖."""
    return act_rms * mlp.down_proj.weight.detach().norm(dim=0)


def layers_to_keep(influence: torch.Tensor, remove: int, train_layers: int) -> list[int]:
    """All layers but the `remove` of least influence among those neither first nor in the top `train_layers`
    (ties: the lower layer goes first)."""
    n = len(influence)
    candidates = sorted(range(1, n - min(train_layers, n)), key=lambda i: (float(influence[i]), i))
    gone = set(candidates[:remove])
    return [i for i in range(n) if i not in gone]


def channels_to_keep(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """The `keep` channels of highest score, ascending (ties: the lower index stays)."""
    order = torch.argsort(scores, descending=True, stable=True)
    return order[:keep].sort().values


def make_plan(model, cfg: dict) -> Plan:
    """What to remove from the base `model` for the run's settings (see the module docstring)."""
    remove_layers, remove_mlp = check_settings(model.config, cfg)
    n, width = model.config.num_hidden_layers, model.config.intermediate_size
    if not (remove_layers or remove_mlp):
        return Plan(list(range(n)), torch.arange(width).repeat(n, 1), n, width)
    influence, act_rms = calibrate(model, calibration_rows(cfg))
    layers = layers_to_keep(influence, remove_layers, cfg["train_layers"])
    keep = width - int(remove_mlp * width)
    channels = torch.stack(
        [channels_to_keep(channel_scores(model.model.layers[i].mlp, act_rms[i]), keep) for i in layers]
    )
    return Plan(layers, channels, n, width)


def sliced(linear: torch.nn.Linear, index: torch.Tensor, dim: int) -> torch.nn.Linear:
    """A new Linear with only the output (dim 0) or input (dim 1) features in `index`."""
    weight = linear.weight.detach().index_select(dim, index)
    out = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None, dtype=weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        if linear.bias is not None:
            out.bias.copy_(linear.bias if dim == 1 else linear.bias[index])
    return out


def apply_plan(model, plan: Plan):
    """The base `model` cut down to the plan, in place (the plan kept on it as `prune_plan`); MethodError when the
    plan was made for a base of another size."""
    config = model.config
    size = (config.num_hidden_layers, config.intermediate_size)
    if size != (plan.base_layers, plan.base_channels):
        raise MethodError(f"the pruning plan is for a base of {plan.base_layers} layers and {plan.base_channels} MLP "
                          f"channels, this one has {size[0]} and {size[1]}")  # fmt: skip
    kept = torch.nn.ModuleList(model.model.layers[i] for i in plan.layers)
    for idx, (layer, channels) in enumerate(zip(kept, plan.channels, strict=True)):
        layer.self_attn.layer_idx = idx  # the KV cache is indexed by it
        mlp = layer.mlp
        mlp.gate_proj, mlp.up_proj = sliced(mlp.gate_proj, channels, 0), sliced(mlp.up_proj, channels, 0)
        mlp.down_proj = sliced(mlp.down_proj, channels, 1)
        mlp.intermediate_size = len(channels)
    model.model.layers = kept
    config.num_hidden_layers, config.intermediate_size = len(kept), plan.channels.shape[1]
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in plan.layers]
    model.prune_plan = plan
    return model


def write_plan(path: Path, plan: Plan, **settings) -> None:
    from safetensors.torch import save_file

    save_file({"channels": plan.channels.to(torch.int32).contiguous()}, str(path / PLAN), metadata={"format": "pt"})
    kept = {"layers": plan.layers, "base_layers": plan.base_layers, "base_channels": plan.base_channels}
    write_method_file(path, Prune.name, **settings, **kept)


def read_plan(path: Path) -> Plan:
    from safetensors.torch import load_file

    settings = read_method_file(path)
    if not (path / PLAN).exists() or "layers" not in settings:
        raise MethodError(f"{path}: no pruning plan ({PLAN} and the kept layers in adapter_method.json)")
    channels = load_file(str(path / PLAN))["channels"].long()
    return Plan(settings["layers"], channels, settings["base_layers"], settings["base_channels"])


class Prune(FullTopK):
    name = "prune"

    def prepare(self, model, cfg: dict):
        return super().prepare(apply_plan(model, make_plan(model, cfg)), cfg)

    def cache_tag(self, cfg: dict) -> str:
        """The settings (with the split in the cache's name and the base in its folder, they fix the plan); none
        when nothing is removed: the frozen layers are then the base's."""
        if not (cfg["prune_layers"] or cfg["prune_mlp"]):
            return ""
        return f"_prune{cfg['prune_layers']}_{cfg['prune_mlp']:g}"

    def save(self, model, path: Path, cfg: dict) -> None:
        super().save(model, path, cfg)
        settings = {k: cfg[k] for k in ("train_layers", "prune_layers", "prune_mlp")}
        write_plan(path, model.prune_plan, **settings)

    def init_from(self, model, path: Path) -> None:
        if not read_plan(path).same_as(model.prune_plan):
            raise MethodError(f"{path} was pruned otherwise than this run (another base, data or settings)")
        super().init_from(model, path)

    def load(self, model, path: Path):
        model = super().prepare(apply_plan(model, read_plan(path)), read_method_file(path))
        super().init_from(model, path)
        return model.eval()

    def publish(self, src: Path, dest: Path, base_name: str) -> None:
        super().publish(src, dest, base_name)
        shutil.copy(src / PLAN, dest / PLAN)
