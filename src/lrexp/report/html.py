"""A comparison of runs as one self-contained HTML page: the leaderboard, the overlay of their
curves, their paths on one TSSE landscape, and the params that matter. Inline CSS and inline SVG,
no script, nothing fetched: it opens from disk, without a server, and can be mailed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

import numpy as np
import pandas as pd

CSS = """
body { font-family: "DejaVu Sans", Arial, sans-serif; font-size: 14px; margin: 24px auto;
       max-width: 1180px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
.scroll { overflow-x: auto; } .note { color: #555; font-size: 12px; max-width: 900px; }
.bar { display: inline-block; height: 10px; background: #4292c6; vertical-align: middle; }
"""


def params_that_matter(params: Sequence[dict], scores: Sequence[float]) -> list[dict]:
    """For each param whose value differs among the runs: the best score each of its values
    reached, and the spread of those bests (worst best / best best, scores > 0; else their
    difference), largest spread first. A param all of whose values reach the same best matters
    little; the measure is marginal (params varied together are not told apart)."""
    keys = sorted({k for p in params for k in p})
    out = []
    for key in keys:
        values = [str(p.get(key, "—")) for p in params]
        if len(set(values)) < 2:
            continue
        best: dict[str, list[float]] = {}
        for v, s in zip(values, scores, strict=True):
            best.setdefault(v, []).append(s)
        rows = sorted(
            ((v, _best(ss), len(ss)) for v, ss in best.items()),
            key=lambda r: (math.isnan(r[1]), r[1]),
        )
        finite = [b for _, b, _ in rows if math.isfinite(b)]
        if len(finite) < 2:
            spread, ratio = math.nan, False
        elif min(finite) > 0:
            spread, ratio = max(finite) / min(finite), True
        else:
            spread, ratio = max(finite) - min(finite), False
        out.append({"param": key, "spread": spread, "ratio": ratio, "values": rows})
    return sorted(out, key=lambda r: (math.isnan(r["spread"]), -np.nan_to_num(r["spread"])))


def _best(scores: list[float]) -> float:
    finite = [s for s in scores if math.isfinite(s)]
    return min(finite) if finite else math.nan


def _matter_table(matter: list[dict], metric: str) -> str:
    """The params that matter as a table: spread, a bar, each value's best."""
    if not matter:
        return "<p class='note'>The runs share every param.</p>"
    top = max((math.log10(m["spread"]) for m in matter if m["ratio"] and m["spread"] > 1),
              default=1.0) or 1.0  # fmt: skip
    rows = []
    for m in matter:
        spread = m["spread"]
        text = "—" if math.isnan(spread) else f"×{spread:.3g}" if m["ratio"] else f"{spread:.3g}"
        width = 120 * math.log10(spread) / top if m["ratio"] and spread > 1 else 0
        values = "; ".join(
            f"{escape(v)}: {b:.4g} ({n} run{'s' * (n > 1)})" for v, b, n in m["values"][:8]
        ) + (f"; … {len(m['values']) - 8} more" if len(m["values"]) > 8 else "")
        rows.append(
            f"<tr><td>{escape(m['param'])}</td><td>{text}</td>"
            f"<td style='text-align:left'><span class='bar' style='width:{width:.0f}px'></span>"
            f"</td><td style='text-align:left'>{values}</td></tr>"
        )
    return (
        f"<table><tr><th>param</th><th>spread</th><th></th><th>best {escape(metric)} of each "
        "value (runs)</th></tr>" + "".join(rows) + "</table>"
    )


def page(
    title: str,
    frame: pd.DataFrame,
    metric: str,
    *,
    overlay: str | None,
    landscape: str | None,
    matter: list[dict],
) -> str:
    """The HTML document: ``frame`` the leaderboard (best first), ``overlay`` and ``landscape``
    SVG documents (None: left out, and said), ``matter`` from :func:`params_that_matter`."""
    board = frame.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.6g}", border=0)
    missing = "<p class='note'>{} (no run logged what it needs).</p>"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            "<html lang='en'><head><meta charset='utf-8'>",
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
            f"<h1>{escape(title)}</h1>",
            f"<h2>Leaderboard, by {escape(metric)}</h2><div class='scroll'>{board}</div>",
            "<h2>Loss curves</h2>",
            overlay or missing.format("No curves"),
            "<h2>The best paths on one TSSE landscape</h2>",
            landscape or missing.format("No landscape"),
            "<h2>The params that matter</h2>",
            "<p class='note'>For each param that differs among these runs, the best "
            f"{escape(metric)} each of its values reached; spread: the worst of those bests over "
            "the best. A param whose every value reaches the same best matters little here. "
            "Marginal, not causal: params varied together are not told apart.</p>",
            _matter_table(matter, metric),
            "</body></html>",
        ]
    )
