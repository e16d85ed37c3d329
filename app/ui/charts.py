"""Charts drawn on the server as plain SVG data: no JavaScript chart library, no CDN.

`bar_chart` picks a label column and a numeric column from a result; `line_chart` turns a time series into
polyline points for the dashboards.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Number


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    pct: float


def _is_num(v) -> bool:
    return isinstance(v, Number) and not isinstance(v, bool)


def bar_chart(columns: list[str], rows: list[list], max_bars: int = 30) -> dict | None:
    """A bar chart when the result has a label column and a numeric column, else None."""
    if len(columns) < 2 or not rows or len(rows) > max_bars:
        return None
    num_idx = [
        i
        for i in range(len(columns))
        if all(_is_num(r[i]) or r[i] is None for r in rows) and any(_is_num(r[i]) for r in rows)
    ]
    if not num_idx:
        return None
    label_idx = next((i for i in range(len(columns)) if i not in num_idx), None)
    if label_idx is None:
        label_idx = 0
        num_idx = [i for i in num_idx if i != 0]
        if not num_idx:
            return None
    v = num_idx[-1] if num_idx[-1] != label_idx else num_idx[0]
    values = [float(r[v] or 0) for r in rows]
    top = max((abs(x) for x in values), default=0) or 1.0
    bars = [Bar(str(r[label_idx]), x, round(100 * abs(x) / top, 1)) for r, x in zip(rows, values, strict=True)]
    return {"label": columns[label_idx], "value": columns[v], "bars": bars}


def line_chart(values: list[float | None], width: int = 600, height: int = 140, top: float | None = None) -> dict:
    """Polyline segments and point markers (SVG coordinates) for a series; gaps (None) break the line."""
    known = [x for x in values if x is not None]
    top = top or (max(known) if known else 1.0) or 1.0
    n = max(len(values) - 1, 1)
    segments, cur, points = [], [], []
    for i, x in enumerate(values):
        if x is None:
            if cur:
                segments.append(" ".join(cur))
            cur = []
            continue
        px, py = round(i * width / n, 1), round(height - (x / top) * (height - 10), 1)
        cur.append(f"{px},{py}")
        points.append((px, py))
    if cur:
        segments.append(" ".join(cur))
    return {"segments": segments, "points": points, "top": round(top, 3), "width": width, "height": height}
