"""The data exploration report written by `models.prepare`: reports/data.md and PNG plots.

Examples per database, prompt/target token lengths, and SQL features (joins, GROUP BY, nesting, set operations,
ORDER BY/LIMIT) by Spider hardness, for train / val / dev.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from models.data import Pair, read_jsonl  # noqa: E402
from models.hardness import LEVELS, hardness, sql_features  # noqa: E402


def _lengths(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    rows = list(read_jsonl(data_dir / f"{split}.jsonl"))
    return np.array([r["start"] for r in rows]), np.array([len(r["ids"]) - r["start"] for r in rows])


def write_data_report(splits: dict[str, list[Pair]], data_dir: Path, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Data report (written by `python -m models.prepare`)",
        "",
        "Spider 1.0 (Yu et al., 2018; CC BY-SA 4.0). Train = train_spider + train_others minus a hold-out of ~5% "
        "of databases (validation, for early stopping); dev = the examples whose database exists "
        "(wta_1 is absent: 62 dev examples cannot run).",
        "",
        "Token lengths are of the encoded examples: train/val drop those over the length cap (512 tokens), so "
        "`tokenized` can be below `examples`; the demo-database synthetic pairs are in build/data/meta.json.",
        "",
        "| split | examples | tokenized | databases | prompt tokens p50 / p90 | SQL tokens p50 / p90 |",
        "|---|---:|---:|---:|---|---|",
    ]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for split, pairs in splits.items():
        p_len, t_len = _lengths(data_dir, split)
        lines.append(
            f"| {split} | {len(pairs)} | {len(p_len)} | {len({p.db_id for p in pairs})} | "
            f"{np.percentile(p_len, 50):.0f} / {np.percentile(p_len, 90):.0f} | "
            f"{np.percentile(t_len, 50):.0f} / {np.percentile(t_len, 90):.0f} |"
        )
        axes[0].hist(p_len, bins=50, alpha=0.5, label=split, density=True)
        axes[1].hist(t_len, bins=50, alpha=0.5, label=split, density=True)
    axes[0].set_title("prompt tokens (schema + question)")
    axes[1].set_title("SQL target tokens")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "data_token_lengths.png", dpi=90)
    plt.close(fig)

    per_db = Counter(p.db_id for p in splits["train"])
    fig, ax = plt.subplots(figsize=(11, 3.5))
    ax.bar(range(len(per_db)), sorted(per_db.values(), reverse=True))
    ax.set_title(f"train examples per database ({len(per_db)} databases)")
    fig.tight_layout()
    fig.savefig(out_dir / "data_examples_per_db.png", dpi=90)
    plt.close(fig)
    lines += [
        "",
        "![token lengths](data_token_lengths.png)",
        "",
        "![examples per database](data_examples_per_db.png)",
        "",
        f"Most examples on one train database: {per_db.most_common(1)[0]}; fewest: {min(per_db.values())}.",
        "",
    ]

    for split, pairs in splits.items():
        feats: dict[str, Counter] = defaultdict(Counter)
        levels = Counter()
        for p in pairs:
            lvl = hardness(p.sql)
            levels[lvl] += 1
            for k, v in sql_features(p.sql).items():
                feats[lvl][k] += 1 if v else 0
        keys = sorted({k for c in feats.values() for k in c})
        lines += [
            f"## {split}: SQL features by hardness (examples using each)",
            "",
            "| hardness | n | " + " | ".join(keys) + " |",
            "|---|---:|" + "---:|" * len(keys),
        ]
        for lvl in LEVELS:
            if levels[lvl]:
                lines.append(f"| {lvl} | {levels[lvl]} | " + " | ".join(str(feats[lvl][k]) for k in keys) + " |")
        lines.append("")
    path = out_dir / "data.md"
    path.write_text("\n".join(lines))
    print(f"wrote {path}")
    return path
