"""BitNet b1.58 (Ma et al., 2024, arXiv:2402.17764) as quantization-aware fine-tuning of the top layers.

Every linear module of the trained layers computes with ternary weights and 8-bit activations, as the paper's
BitLinear does:
- weights: γ = mean |W| over the whole matrix (the paper's absmean, one scale per tensor), W̃ = RoundClip(W / γ,
  −1, 1) ∈ {−1, 0, +1}, used as W̃·γ;
- activations: absmax per token to 8 bits (the paper's [−Q_b, Q_b] per token; here the symmetric ±127);
- the rounding is skipped by the gradient (straight-through estimator): the float ("latent") weights are what the
  optimizer updates, starting from our base's weights instead of from scratch.
The paper trains from scratch with its own LayerNorm before every quantized input; we fine-tune a trained model and
add none, since a new norm would change what the model computes at step 0. Embeddings, the head and the lower
(cached) layers stay in float, as the paper keeps embeddings and head in high precision.

Saved by a run: the latent float weights of the trained layers (like `full`: training can continue from them).
Published: the ternary weights packed 2 bits each (`pack`), one float32 γ per matrix, the layers' norms as they are;
loading that form sets latent weights whose absmean rounding gives back exactly those ternary weights and γ.
Merged: `TernaryLinear`, the weights fixed at W̃·γ and the per-token activation rounding kept in the graph, so the
ONNX export computes what training's forward computed. The export's weight-only int8 (MatMulNBits, symmetric, blocks
of 32) then stores them at 8 bits, not 2, and not quite exactly: it maps a block's −γ to −128 and so +γ to 127/128·γ
(every positive weight 0.8% low; its int4 and int2 give 7/8·γ and γ/2; measured on onnxruntime 1.32 with an
identity input). Serving the packed form exactly would mean writing the 2-bit MatMulNBits initializers ourselves
(codes W̃ + 2, scale γ, zero point 2): onnxruntime 1.32 runs 2-bit MatMulNBits on the CPU (its own quantizer's
output did here); not done yet.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.adapter_io import FORMAT_KEY
from models.methods.base import WEIGHTS, MethodError, layer_of, read_method_file, top_layers, write_method_file
from models.methods.full import FullTopK

TERNARY_2BIT = "ternary-2bit-v1"
GAMMA_SUFFIX = ".gamma"
EPS = 1e-5  # keeps a zero matrix or a zero token from dividing by zero


def ternary(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(W̃ ∈ {−1, 0, +1}, γ): absmean scaling, round, clip."""
    gamma = w.abs().mean().clamp(min=EPS)
    return (w / gamma).round().clamp(-1, 1), gamma


def int8_per_token(x: torch.Tensor) -> torch.Tensor:
    """x rounded to 255 levels per token (the last axis), scaled back: absmax to ±127."""
    scale = 127 / x.abs().amax(dim=-1, keepdim=True).clamp(min=EPS)
    return (x * scale).round().clamp(-127, 127) / scale


def straight_through(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """q in the forward pass, the identity for the gradient."""
    return x + (q - x).detach()


class BitLinear(nn.Linear):
    """Training form: latent float weights, ternarized on every forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, gamma = ternary(self.weight)
        w = straight_through(self.weight, t * gamma)
        return F.linear(straight_through(x, int8_per_token(x)), w, self.bias)


class TernaryLinear(nn.Linear):
    """Merged form: the weight is W̃·γ itself; activations still rounded per token."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(int8_per_token(x), self.weight, self.bias)


def _swap(model, name: str, cls: type[nn.Linear], weight: torch.Tensor | None = None) -> None:
    """Replace the linear module `name` by `cls` holding the same parameters (or `weight`), nothing copied."""
    old = model.get_submodule(name)
    with torch.device("meta"):  # no allocation or init for the weights about to be replaced
        new = cls(old.in_features, old.out_features, bias=old.bias is not None)
    new.weight = old.weight if weight is None else nn.Parameter(weight, requires_grad=False)
    new.bias = old.bias
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)


def pack(t: torch.Tensor) -> torch.Tensor:
    """Ternary values (last axis a multiple of 4) as uint8, four 2-bit codes (value + 1) per byte."""
    if t.shape[-1] % 4:
        raise ValueError(f"pack needs a last axis divisible by 4, got {tuple(t.shape)}")
    codes = (t + 1).to(torch.uint8).reshape(*t.shape[:-1], -1, 4)
    return codes[..., 0] | codes[..., 1] << 2 | codes[..., 2] << 4 | codes[..., 3] << 6


def unpack(packed: torch.Tensor) -> torch.Tensor:
    """`pack` undone: float32 values in {−1, 0, +1}, the last axis four times as long."""
    codes = torch.stack([(packed >> s) & 3 for s in (0, 2, 4, 6)], dim=-1)
    return codes.reshape(*packed.shape[:-1], -1).float() - 1


def packed(weights: dict) -> dict:
    """The published form of a run's trained tensors: every matrix (the BitLinear weights: the trained layers
    hold no other) as 2-bit ternary codes and its γ, the vectors (norms, biases) as they are."""
    out = {}
    for name, w in weights.items():
        if w.ndim == 2:
            t, gamma = ternary(w.float())
            out[name], out[name + GAMMA_SUFFIX] = pack(t), gamma.reshape(1)
        else:
            out[name] = w.float()
    return out


def latent_for(t: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Latent weights whose `ternary` is (t, gamma) again: t·γ / mean|t| has absmean γ and rounds back to t (a
    nonzero entry is ±1/mean|t|, at least 1 in magnitude, so it clips to ±1)."""
    return t * (gamma / t.abs().mean().clamp(min=EPS))


class BitNet(FullTopK):
    """`full` on the top layers, every linear module there a `BitLinear`."""

    name = "bitnet"

    def prepare(self, model, cfg: dict):
        layers = top_layers(model, cfg["train_layers"])
        for name, module in list(model.named_modules()):
            if type(module) is nn.Linear and layer_of(name) in layers:
                _swap(model, name, BitLinear)
        return super().prepare(model, cfg)

    def save(self, model, path: Path, cfg: dict) -> None:
        super().save(model, path, cfg)
        write_method_file(path, self.name, train_layers=cfg["train_layers"], weights="latent float32")

    def init_from(self, model, path: Path) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file

        if not (path / WEIGHTS).exists():
            raise MethodError(f"no {WEIGHTS} in {path}")
        with safe_open(str(path / WEIGHTS), "pt") as f:
            is_packed = (f.metadata() or {}).get(FORMAT_KEY) == TERNARY_2BIT
        if not is_packed:
            return super().init_from(model, path)
        raw = load_file(str(path / WEIGHTS))
        weights = {}
        for k, v in raw.items():
            if k.endswith(GAMMA_SUFFIX):
                continue
            gamma = raw.get(k + GAMMA_SUFFIX)
            weights[k] = v.float() if gamma is None else latent_for(unpack(v), gamma)
        self._fill(model, weights, path)

    def merge(self, model):
        for name, module in list(model.named_modules()):
            if isinstance(module, BitLinear):
                with torch.no_grad():
                    t, gamma = ternary(module.weight)
                _swap(model, name, TernaryLinear, t * gamma)
        return super().merge(model)

    def publish(self, src: Path, dest: Path, base_name: str) -> None:
        from safetensors.torch import save_file

        from models.adapter_io import load_weights

        dest.mkdir(parents=True, exist_ok=True)
        save_file(packed(load_weights(src / WEIGHTS)), str(dest / WEIGHTS),
                  metadata={"format": "pt", FORMAT_KEY: TERNARY_2BIT})  # fmt: skip
        settings = read_method_file(src) | {"base": base_name, "weights": "ternary, 2 bits each, γ per matrix"}
        write_method_file(dest, self.name, **settings)
