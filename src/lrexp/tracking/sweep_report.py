"""The self-contained HTML report of ``python -m lrexp.compare --html``: runs read back from the
store (leaderboard, overlay of their curves, their paths on one landscape, the params that
matter), drawn by :mod:`lrexp.report.html`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lrexp.report import html, plots
from lrexp.tracking.landscapes import sweep_landscape
from lrexp.tracking.sweep_summary import MAX_OVERLAY, overlay_curves


def html_report(
    uri: str, runs: list[dict], frame: pd.DataFrame, metric: str, scores: list[float], title: str
) -> str:
    """The HTML page of ``runs`` (best first; ``frame`` their leaderboard, ``scores`` their
    ``metric``): the leaderboard, the overlay of their MSE curves, the best paths on one
    landscape, and the params that matter."""
    names = [r["name"] for r in runs]
    labels = [n if names.count(n) == 1 else f"{n} ({r['run_id'][:8]})" for n, r in
              zip(names, runs, strict=True)][:MAX_OVERLAY]  # fmt: skip
    curves = overlay_curves(uri, [(lb, r["run_id"]) for lb, r in zip(labels, runs, strict=False)])
    named = dict(zip(labels, scores, strict=False))
    overlay = plots.overlay(curves, title, scores=named, total=len(runs)) if curves else None
    land = sweep_landscape(uri, runs, scores)
    matter = html.params_that_matter([r["params"] for r in runs], scores)
    return html.page(title, frame, metric, overlay=overlay, landscape=land, matter=matter)


def write_html(
    uri: str, runs: list[dict], frame: pd.DataFrame, metric: str, scores: list[float], path: Path
) -> str:
    """Write :func:`html_report` to ``path``; return the line that says so."""
    title = f"lrexp compare: {len(runs)} runs"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html_report(uri, runs, frame, metric, scores, title), encoding="utf-8")
    return f"HTML report (leaderboard, overlay, landscape, params that matter): {path}"
