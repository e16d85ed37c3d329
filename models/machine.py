"""The machine a measurement ran on, for every report that prints a number: CPU model, cores, the instruction-set
flags that decide which matmul kernels run (AVX2, AVX-512, VNNI, BF16, AMX: CPUs here differ in them), and the torch
device when torch is loaded. Reports record these instead of assuming them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16")


def cpu() -> dict:
    """The CPU's model name, core count and which of the flags that matter for CPU matmuls it has."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    field = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}
    flags = set(field.get("flags", "").split())
    return {"model": field.get("model name", "?"), "cores": os.cpu_count(), "flags": {f: f in flags for f in CPU_FLAGS}}


def flags_text(info: dict | None = None) -> str:
    """`AVX2, AVX512F, no AVX512_VNNI, …`: the flags line a report prints."""
    flags = (info or cpu())["flags"]
    return ", ".join(f.upper() if has else f"no {f.upper()}" for f, has in flags.items())


def load_average() -> str:
    """The 1-minute load average ("?" where the system has none): whether other jobs shared the cores while a speed
    was measured."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def busy(*loads: str, cores: int | None = None) -> bool:
    """Any of these load averages above the core count: other jobs were running beside the measurement."""
    cores = cores or os.cpu_count() or 1
    return any(load != "?" and float(load) > cores for load in loads)


def torch_device() -> str:
    """The device training would pick (`models.train`'s device = "auto"), if torch is already imported."""
    torch = sys.modules.get("torch")
    if torch is None:
        return "unknown (torch not loaded)"
    return f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
