"""Stage 3, publish: copy a run's best adapter into models/adapters/<name>, committed, where export merges it from.

    python -m models.publish models/runs/qwen_packed_top8      # → models/adapters/<the run's base's adapter>
    python -m models.publish models/runs/lora_top12 --dest models/adapters/querywise-sql

The LoRA weights are stored as row-wise int8 (`models.adapter_io`: a quarter of float32's bytes; the merge restores
them to float), with the run's training config and log beside them, so the committed adapter says how it was made.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from models.adapter_io import save_rowwise_int8
from models.bases import BaseModelError, get_base


def publish(run_dir: Path, dest: Path | None = None) -> Path:
    from safetensors.torch import load_file

    best = run_dir / "best"
    if not (best / "adapter_model.safetensors").exists():
        sys.exit(f"no best adapter in {run_dir} (expected {best}/adapter_model.safetensors)")
    cfg = json.loads((best / "train_config.json").read_text())["config"]
    try:  # runs from before the registry trained SmolLM2 and name no base
        spec = get_base(cfg.get("base") or "smollm2-135m")
    except BaseModelError as exc:
        sys.exit(str(exc))
    base_name = spec.name
    dest = dest or spec.adapter_dir  # the committed adapter slot of the base the run trained
    dest.mkdir(parents=True, exist_ok=True)
    save_rowwise_int8(load_file(best / "adapter_model.safetensors"), dest / "adapter_model.safetensors")
    adapter_cfg = json.loads((best / "adapter_config.json").read_text())
    # the base by its registry name, not the training machine's path (peft is handed the base model explicitly)
    adapter_cfg["base_model_name_or_path"] = base_name
    (dest / "adapter_config.json").write_text(json.dumps(adapter_cfg, indent=2))
    shutil.copy(best / "train_config.json", dest / "train_config.json")
    if (run_dir / "log.json").exists():
        log = json.loads((run_dir / "log.json").read_text())
        (dest / "train_log.json").write_text(json.dumps(log, indent=2))
    size = (dest / "adapter_model.safetensors").stat().st_size
    print(f"published {best} → {dest} ({size / 1e6:.1f} MB, row-wise int8)")
    return dest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--dest", type=Path, default=None, help="default: the committed adapter slot of the run's base")
    a = p.parse_args()
    publish(a.run_dir, a.dest)


if __name__ == "__main__":
    main()
