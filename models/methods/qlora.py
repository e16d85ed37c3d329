"""QLoRA (Dettmers et al., 2023, arXiv:2305.14314) on the CPU: `lora` over frozen base weights held in 4 bits
(or 8: `qlora_bits`).

The frozen linear weights under the LoRA modules (the trained top layers only: the lower layers run once, to fill
the cache of `models.train`) are stored as NF4, the paper's 4-bit NormalFloat: 16 values at quantiles of a normal
distribution, one float32 absmax per block of `qlora_block` (64, the paper's) weights: 4.5 bits per weight against
float32's 32. The paper's double quantization of the absmax values (0.37 bits per weight less) is left out. With
`qlora_bits = 8` they are symmetric int8 instead, in the same blocks with the same absmax (round(127·w/absmax)):
8.5 bits per weight, the middle step a sweep compares between float32 and NF4.

The weights are dequantized on the fly, in the forward pass and again in the backward pass (`_DequantMatMul` keeps
the codes for the backward, not a float copy), so the float matrices exist one at a time. On a CPU without a
4-bit matmul that is extra work on every step: slower than `lora`, never faster (reports/methods/tiny.md). The
memory saved is the top layers' share of the model: the loaded base's other layers, embeddings and head stay in
float32 in the training process.

Saved: `lora`'s adapter unchanged, plus adapter_method.json naming the format and its bits. Loading quantizes the
base again (deterministic), so the merge — dequantized weights plus the LoRA update — is what training's forward
used.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from models.methods.base import read_method_file, write_method_file
from models.methods.lora import LoRA


@functools.cache
def nf4_codebook() -> torch.Tensor:
    """The 16 NF4 values in [−1, 1]: normal quantiles, 8 positive and 7 negative plus an exact zero, normalized
    (the paper's construction, offset ½(1 − 1/30 + 1 − 1/32); it lists the resulting values in its appendix)."""
    offset = 0.5 * ((1 - 1 / 30) + (1 - 1 / 32))
    positive = torch.special.ndtri(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])
    negative = -torch.special.ndtri(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])
    values = torch.cat([positive, negative, torch.zeros(1, dtype=torch.float64)]).sort().values
    return (values / values.abs().max()).float()


def quantize_nf4(w: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes: two 4-bit indices per uint8, absmax: one float32 per block of `block` weights, in row-major order)."""
    if w.numel() % block:
        raise ValueError(f"NF4 blocks of {block} do not tile a {tuple(w.shape)} weight")
    blocks = w.detach().float().reshape(-1, block)
    absmax = blocks.abs().amax(dim=1).clamp(min=1e-12)
    book = nf4_codebook()
    idx = torch.bucketize(blocks / absmax[:, None], (book[1:] + book[:-1]) / 2).to(torch.uint8).reshape(-1, 2)
    return idx[:, 0] | idx[:, 1] << 4, absmax


def dequantize_nf4(codes: torch.Tensor, absmax: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    idx = torch.stack([codes & 15, codes >> 4], dim=1).reshape(absmax.shape[0], -1).long()
    return (nf4_codebook().to(codes.device)[idx] * absmax[:, None]).reshape(shape)  # codes on a GPU too


def quantize_int8(w: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes: one int8 per weight, round(127·w/absmax), absmax: one float32 per block of `block` weights)."""
    if w.numel() % block:
        raise ValueError(f"int8 blocks of {block} do not tile a {tuple(w.shape)} weight")
    blocks = w.detach().float().reshape(-1, block)
    absmax = blocks.abs().amax(dim=1).clamp(min=1e-12)
    return (blocks / absmax[:, None] * 127).round().to(torch.int8).reshape(-1), absmax


def dequantize_int8(codes: torch.Tensor, absmax: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return (codes.reshape(absmax.shape[0], -1).float() * (absmax[:, None] / 127)).reshape(shape)


class Format(NamedTuple):
    name: str  # as adapter_method.json names it
    quantize: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
    dequantize: Callable[[torch.Tensor, torch.Tensor, torch.Size], torch.Tensor]


FORMATS = {4: Format("nf4", quantize_nf4, dequantize_nf4), 8: Format("int8", quantize_int8, dequantize_int8)}


class _DequantMatMul(torch.autograd.Function):
    """x · Wᵀ with W dequantized here and again for the gradient of x (W itself gets none: it is frozen)."""

    @staticmethod
    def forward(ctx, x, codes, absmax, shape, bits):
        ctx.save_for_backward(codes, absmax)
        ctx.shape, ctx.bits = shape, bits
        return x @ FORMATS[bits].dequantize(codes, absmax, shape).t()

    @staticmethod
    def backward(ctx, grad):
        # under bf16 autocast the forward's matmul ran in bf16 and so does its gradient: the weight follows it
        # (autograd casts the result to x's own dtype)
        codes, absmax = ctx.saved_tensors
        w = FORMATS[ctx.bits].dequantize(codes, absmax, ctx.shape).to(grad.dtype)
        return grad @ w, None, None, None, None


class QuantLinear(nn.Module):
    """A frozen linear module whose weight is held as block-quantized codes (NF4 or int8) and absmax values."""

    def __init__(self, linear: nn.Linear, block: int, bits: int = 4):
        super().__init__()
        self.in_features, self.out_features, self.shape = linear.in_features, linear.out_features, linear.weight.shape
        self.bits = bits
        codes, absmax = FORMATS[bits].quantize(linear.weight, block)
        self.register_buffer("codes", codes)
        self.register_buffer("absmax", absmax)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def dequantized(self) -> torch.Tensor:
        return FORMATS[self.bits].dequantize(self.codes, self.absmax, self.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _DequantMatMul.apply(x, self.codes, self.absmax, self.shape, self.bits)
        return y if self.bias is None else y + self.bias


def _lora_layers(model) -> list:
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


class QLoRA(LoRA):
    name = "qlora"

    def prepare(self, model, cfg: dict):
        bits = cfg["qlora_bits"]
        if bits not in FORMATS:
            raise ValueError(f"qlora_bits = {bits!r}: choose 4 (NF4) or 8 (int8)")
        model = super().prepare(model, cfg)
        self._quantize(model, cfg["qlora_block"], bits)
        return model

    @staticmethod
    def _quantize(model, block: int, bits: int) -> None:
        for layer in _lora_layers(model):
            if type(layer.base_layer) is nn.Linear:
                layer.base_layer = QuantLinear(layer.base_layer, block, bits)

    def save(self, model, path: Path, cfg: dict) -> None:
        super().save(model, path, cfg)
        bits = cfg["qlora_bits"]
        write_method_file(path, self.name, base_weights=FORMATS[bits].name, bits=bits, block=cfg["qlora_block"])

    def load(self, model, path: Path):
        model = super().load(model, path)
        saved = read_method_file(path)
        self._quantize(model, saved["block"], saved.get("bits", 4))  # directories saved before int8: NF4
        return model

    def merge(self, model):
        for layer in _lora_layers(model):
            if isinstance(layer.base_layer, QuantLinear):
                quant = layer.base_layer
                plain = nn.Linear(quant.in_features, quant.out_features, bias=quant.bias is not None, device="meta")
                plain.weight = nn.Parameter(quant.dequantized(), requires_grad=False)
                plain.bias = quant.bias
                layer.base_layer = plain
        return super().merge(model)

    def publish(self, src: Path, dest: Path, base_name: str) -> None:
        super().publish(src, dest, base_name)
        write_method_file(dest, self.name, **read_method_file(src))
