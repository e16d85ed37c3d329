"""Charts drawn on the server as plain SVG data: no JavaScript chart library, no CDN.

`result_chart` picks a label column and a numeric column from a result and draws it as bars (categories) or a line
(time series: dates, months or years as labels), with both views offered when both make sense; `bucket_chart` draws
the dashboards' per-bucket series over the whole window, every bucket in its place on the time axis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from numbers import Number

# Labels that are points in time: 2025, 2025-03, 2025-03-14, 2025-03-14 10:00, 2025-W11, 2025-Q1.
_TIME_LABEL = re.compile(r"^\d{4}(-(\d{2}|W\d{2}|Q[1-4])(-\d{2})?([ T]\d{2}:\d{2}(:\d{2})?)?)?$")
_TIME_COLUMN = re.compile(r"(year|month|date|day|week|quarter|period|time)", re.I)


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


def _is_time_series(column: str, labels: list) -> bool:
    if len(labels) < 2:
        return False
    if all(isinstance(v, str) and _TIME_LABEL.match(v) for v in labels):
        return True
    return all(isinstance(v, int) and 1900 <= v <= 2100 for v in labels) and bool(_TIME_COLUMN.search(column))


def result_chart(columns: list[str], rows: list[list], max_bars: int = 30, max_points: int = 400) -> dict | None:
    """Bars and/or a line for a result with a label column and a numeric column; `kind` is the one shown first.

    A time series (labels are dates, months or years) opens as a line, in time order; categories open as bars.
    """
    if len(columns) < 2 or not rows or len(rows) > max_points:
        return None
    bars = bar_chart(columns, rows, max_bars=max_points)
    if bars is None:
        return None
    label_idx = columns.index(bars["label"])
    labels = [r[label_idx] for r in rows]
    time_series = _is_time_series(bars["label"], labels)
    chart = {"label": bars["label"], "value": bars["value"], "kind": "line" if time_series else "bar"}
    chart["bars"] = bars["bars"] if len(rows) <= max_bars else None
    if time_series or len(rows) <= max_bars:
        points = sorted(bars["bars"], key=lambda b: str(b.label)) if time_series else bars["bars"]
        values = [b.value for b in points]
        line = line_chart(values, top=max((abs(v) for v in values), default=0) or 1.0)
        line["first"], line["last"] = points[0].label, points[-1].label
        chart["line"] = line
    else:
        chart["line"] = None
    if chart["bars"] is None:
        chart["kind"] = "line"
    return chart


def bucket_chart(series: list[dict], key: str, top: float, width: int = 600, height: int = 140) -> dict:
    """One bar per time bucket of the window (empty buckets drawn as a gap, their slot kept), for the dashboards.

    Each bar carries its bucket's start and value for a tooltip; `ticks` label the axis at its start, middle and end.
    """
    n = max(len(series), 1)
    slot = width / n
    top = top or 1.0
    bars = []
    for i, bucket in enumerate(series):
        value = bucket.get(key)
        h = 0.0 if value is None else max(round((value / top) * (height - 10), 1), 1.0)
        bars.append(
            {
                "x": round(i * slot + slot * 0.15, 1),
                "w": round(slot * 0.7, 1),
                "y": round(height - h, 1),
                "h": h,
                "start": bucket["start"],
                "value": value,
                "requests": bucket.get("requests", 0),
            }
        )
    ticks = [series[i]["start"][5:16].replace("T", " ") for i in (0, n // 2, n - 1)] if series else []
    return {"bars": bars, "width": width, "height": height, "top": round(top, 3), "ticks": ticks}
