"""Stage 3, publish: copy a run's best weights into models/adapters/<name>, committed, where export merges them from.

    python -m models.publish models/runs/qwen_packed_top8      # → models/adapters/<the run's base's adapter>
    python -m models.publish models/runs/lora_top12 --dest models/adapters/querywise-sql

Each method stores its own compact form (`models.methods`: LoRA factors row-wise int8, a quarter of float32's bytes;
full layers float16; BitNet's ternary weights 2 bits each), with the run's training config and log beside them, so
the committed adapter says how it was made.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from models.bases import BaseModelError, get_base
from models.methods import MethodError, is_saved, method_of


def publish(run_dir: Path, dest: Path | None = None) -> Path:
    best = run_dir / "best"
    if not is_saved(best):
        sys.exit(f"no best weights in {run_dir} (expected {best}/adapter_config.json or adapter_method.json)")
    cfg = json.loads((best / "train_config.json").read_text())["config"]
    try:  # runs from before the registry trained SmolLM2 and name no base
        spec = get_base(cfg.get("base") or "smollm2-135m")
        method = method_of(best)
    except (BaseModelError, MethodError) as exc:
        sys.exit(str(exc))
    dest = dest or spec.adapter_dir  # the committed adapter slot of the base the run trained
    method.publish(best, dest, spec.name)
    shutil.copy(best / "train_config.json", dest / "train_config.json")
    if (run_dir / "log.json").exists():
        log = json.loads((run_dir / "log.json").read_text())
        (dest / "train_log.json").write_text(json.dumps(log, indent=2))
    size = sum(f.stat().st_size for f in dest.glob("adapter_*"))
    print(f"published {best} → {dest} ({method.name}, {size / 1e6:.1f} MB)")
    return dest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--dest", type=Path, default=None, help="default: the committed adapter slot of the run's base")
    a = p.parse_args()
    publish(a.run_dir, a.dest)


if __name__ == "__main__":
    main()
