"""The overlay of several runs' curves as PNG, drawn with matplotlib (imported only when called:
it takes half a second). The SVG twin is :func:`lrexp.report.plots.overlay`."""

from __future__ import annotations

import math
from pathlib import Path

from lrexp.report.svg import GREY, PALETTE


def overlay(curves: dict, scores: dict, title: str, highlight: int, path: Path) -> None:
    """The overlay drawn with matplotlib (imported only here: it takes half a second); the
    legend below the panels, off the curves."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5.5), layout="constrained")
    train, test = fig.subplots(1, 2, sharey=True)
    items = list(curves.items())
    for _, ((x_tr, tr), (x_te, te)) in items[highlight:]:
        train.plot(x_tr, tr, lw=0.7, color=GREY, alpha=0.6)
        test.plot(x_te, te, lw=0.7, color=GREY, alpha=0.6)
    for i, (name, ((x_tr, tr), (x_te, te))) in enumerate(items[:highlight]):
        color, score = PALETTE[i % len(PALETTE)], scores.get(name, math.nan)
        label = f"{i + 1}. {name}" + (f"  (test MSE {score:.4g})" if math.isfinite(score) else "")
        train.plot(x_tr, tr, lw=1.8, color=color, label=label, zorder=3)
        test.plot(x_te, te, lw=1.8, color=color, zorder=3)
    if len(items) > highlight:
        train.plot([], [], lw=0.7, color=GREY, label=f"{len(items) - highlight} other runs")
    for ax, which in ((train, "train"), (test, "test")):
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(f"{which} MSE")
        ax.grid(True, which="both", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, format="png", dpi=120)
