"""Figures for a run as SVG text: the loss curve against the optimum, fitted against actual.

SVG is drawn here directly rather than through matplotlib: importing and rendering matplotlib
took about 0.7 s of a 1.5 s run, writing these files takes milliseconds. The MLflow UI's artifact
viewer shows ``.svg`` files as images, like ``.png``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

import numpy as np

BLUE, ORANGE = "#1f77b4", "#ff7f0e"  # matplotlib's tab:blue and tab:orange
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip
MAX_POINTS = 1000  # per polyline: a longer curve is drawn at evenly spaced epochs


def _ticks(lo: float, hi: float, log: bool, whole: bool = False) -> list[float]:
    """Round tick values covering [lo, hi]: decades on a log axis, 1-2-5 steps on a linear one
    (whole numbers only, for epochs, with ``whole``)."""
    if log:
        a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        mult = (1,) if b - a > 2 else (1, 2, 5)
        return [m * 10.0**e for e in range(a, b + 1) for m in mult if lo <= m * 10.0**e <= hi]
    raw = (hi - lo) / 5 or 1.0
    decade = 10 ** math.floor(math.log10(raw))
    step = min((s * decade for s in (1, 2, 5, 10)), key=lambda s: abs(s - raw))
    step = max(step, 1) if whole else step
    return [k * step for k in range(math.ceil(lo / step), math.floor(hi / step) + 1)]


@dataclass
class Panel:
    """One set of axes: lines, dots and horizontal rules, scaled to their data when drawn."""

    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    ylog: bool = False
    items: list[tuple] = field(default_factory=list)
    legend: list[tuple[str, str, str]] = field(default_factory=list)  # (label, colour, kind)
    legend_left: bool = False  # in the top left corner (default: top right)
    epochs: bool = False  # x counts epochs: whole-number ticks

    def line(self, x, y, color: str, *, width=1.5, opacity=1.0, label="", dash="") -> None:
        self.items.append(
            ("line", np.asarray(x, float), np.asarray(y, float), color, width, opacity, dash)
        )
        if label:
            self.legend.append((label, color, "line" if not dash else "dash"))

    def dots(self, x, y, color: str, *, radius=2.5, opacity=0.6, label="") -> None:
        self.items.append(
            ("dots", np.asarray(x, float), np.asarray(y, float), color, radius, opacity, "")
        )
        if label:
            self.legend.append((label, color, "dot"))

    def hline(self, y: float, color="black", *, label="", dash="5,3") -> None:
        self.items.append(("hline", None, np.asarray([y], float), color, 1.0, 1.0, dash))
        if label:
            self.legend.append((label, color, "dash"))

    def _ok(self, v: np.ndarray) -> np.ndarray:
        return np.isfinite(v) & (v > 0) if self.ylog else np.isfinite(v)

    def _limits(self) -> tuple[float, float, float, float]:
        xs = [x[np.isfinite(x)] for kind, x, *_ in self.items if kind != "hline"]
        ys = [y[self._ok(y)] for _, _, y, *_ in self.items]
        x = np.concatenate(xs) if xs else np.zeros(1)
        y = np.concatenate(ys) if ys else np.zeros(1)
        x, y = (x, y) if len(x) else (np.zeros(1), y)
        y = y if len(y) else np.ones(1)
        x0, x1, y0, y1 = float(x.min()), float(x.max()), float(y.min()), float(y.max())
        if x1 <= x0:
            x0, x1 = x0 - 0.5, x1 + 0.5
        if self.ylog:
            y0, y1 = (y0 / 2, y1 * 2) if y1 <= y0 else (y0 / 1.15, y1 * 1.15)
        else:
            pad = (y1 - y0) * 0.05 or max(abs(y0) * 0.05, 0.5)
            y0, y1 = y0 - pad, y1 + pad
        return x0, x1, y0, y1

    def svg(self, left: float, top: float, width: float, height: float) -> list[str]:
        """The panel's SVG elements inside the box (left, top, width, height), axes included."""
        x0, x1, y0, y1 = self._limits()
        fy = math.log10 if self.ylog else float
        ly0, ly1 = fy(y0), fy(y1)

        def px(x):
            return left + (np.asarray(x, float) - x0) / (x1 - x0) * width

        def py(y):
            t = np.log10(y) if self.ylog else np.asarray(y, float)
            return top + height - (t - ly0) / (ly1 - ly0) * height

        out = [
            f'<rect x="{left:.1f}" y="{top:.1f}" width="{width:.1f}" height="{height:.1f}" '
            'fill="white" stroke="#444"/>'
        ]
        for t in _ticks(y0, y1, self.ylog):
            y = float(py(t))
            out.append(
                f'<line x1="{left:.1f}" x2="{left + width:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                'stroke="#ddd"/>'
            )
            out.append(f'<text x="{left - 6:.1f}" y="{y + 4:.1f}" text-anchor="end">{t:.3g}</text>')
        for t in _ticks(x0, x1, False, whole=self.epochs):
            x = float(px(t))
            out.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + height:.1f}" '
                f'y2="{top + height + 5:.1f}" stroke="#444"/>'
            )
            out.append(
                f'<text x="{x:.1f}" y="{top + height + 18:.1f}" text-anchor="middle">{t:.4g}</text>'
            )
        clip = f"clip{id(self)}"
        out.append(
            f'<clipPath id="{clip}"><rect x="{left:.1f}" y="{top:.1f}" width="{width:.1f}" '
            f'height="{height:.1f}"/></clipPath><g clip-path="url(#{clip})">'
        )
        for kind, x, y, color, size, opacity, dash in self.items:
            style = f'stroke-dasharray="{dash}" ' if dash else ""
            if kind == "hline":
                yy = float(py(y[0])) if self._ok(y).all() else None
                if yy is not None:
                    out.append(
                        f'<line x1="{left:.1f}" x2="{left + width:.1f}" y1="{yy:.1f}" '
                        f'y2="{yy:.1f}" stroke="{color}" stroke-width="{size}" {style}/>'
                    )
                continue
            if kind == "line" and len(x) > MAX_POINTS:
                keep = np.unique(np.linspace(0, len(x) - 1, MAX_POINTS).round().astype(int))
                x, y = x[keep], y[keep]
            ok = self._ok(y) & np.isfinite(x)
            sx, sy = px(x), py(np.where(ok, y, 1.0))
            if kind == "dots":
                out += [
                    f'<circle cx="{a:.1f}" cy="{b:.1f}" r="{size}" fill="{color}" '
                    f'fill-opacity="{opacity}"/>'
                    for a, b in zip(sx[ok], sy[ok], strict=True)
                ]
                continue
            for run in np.split(np.arange(len(x)), np.flatnonzero(~ok)):  # gaps at bad values
                run = run[ok[run]]
                if len(run) > 1:
                    xy = zip(sx[run], sy[run], strict=True)
                    pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in xy)
                    out.append(
                        f'<polyline points="{pts}" fill="none" stroke="{color}" '
                        f'stroke-width="{size}" stroke-opacity="{opacity}" {style}/>'
                    )
        out.append("</g>")
        mid = left + width / 2
        out.append(
            f'<text x="{mid:.1f}" y="{top + height + 36:.1f}" '
            f'text-anchor="middle">{escape(self.xlabel)}</text>'
        )
        out.append(
            f'<text transform="translate({left - 52:.1f},{top + height / 2:.1f}) rotate(-90)" '
            f'text-anchor="middle">{escape(self.ylabel)}</text>'
        )
        if self.title:
            out.append(
                f'<text x="{mid:.1f}" y="{top - 8:.1f}" text-anchor="middle">'
                f"{escape(self.title)}</text>"
            )
        for i, (label, color, kind) in enumerate(self.legend):
            # the mark spans [mx, mx + 20]; the label ends (right) or starts (left) beside it
            mx, y = (left + 10 if self.legend_left else left + width - 30), top + 16 + 16 * i
            if kind == "dot":
                mark = f'<circle cx="{mx + 11:.1f}" cy="{y - 4:.1f}" r="3.5" fill="{color}"/>'
            else:
                dash = ' stroke-dasharray="5,3"' if kind == "dash" else ""
                mark = (
                    f'<line x1="{mx:.1f}" x2="{mx + 20:.1f}" y1="{y - 4:.1f}" y2="{y - 4:.1f}" '
                    f'stroke="{color}" stroke-width="2"{dash}/>'
                )
            out.append(mark)
            tx, anchor = (mx + 25, "start") if self.legend_left else (mx - 5, "end")
            out.append(
                f'<text x="{tx:.1f}" y="{y:.1f}" text-anchor="{anchor}">{escape(label)}</text>'
            )
        return out


def figure(panels: Sequence[Panel], title: str = "", *, panel_width=560, height=360) -> str:
    """Panels side by side as one SVG document, with an overall title."""
    left, right, top, bottom = 70, 20, 48 if title else 30, 50
    width = len(panels) * (left + panel_width + right)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{top + height + bottom}" viewBox="0 0 {width} {top + height + bottom}" '
        'font-family="DejaVu Sans, Arial, sans-serif" font-size="11">',
        f'<rect width="{width}" height="{top + height + bottom}" fill="white"/>',
    ]
    if title:
        parts.append(
            f'<text x="{width / 2:.1f}" y="18" text-anchor="middle" '
            f'font-size="12">{escape(title)}</text>'
        )
    for i, panel in enumerate(panels):
        parts += panel.svg(i * (left + panel_width + right) + left, top, panel_width, height)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def loss_curve(curves: dict[str, np.ndarray], optimal_mse: float, folds: int, title: str) -> str:
    """Train and test MSE per epoch on a log scale, the least-squares optimum marked."""
    p = Panel(xlabel="epoch", ylabel="MSE", ylog=True, epochs=True)
    for i in range(1, folds + 1) if folds > 1 else ():
        for key, color in (("train_mse", BLUE), ("test_mse", ORANGE)):
            c = curves[f"fold_{i}/{key}"]
            p.line(np.arange(len(c)), c, color, width=0.8, opacity=0.25)
    mean = " (mean over folds)" if folds > 1 else ""
    for key, color, name in (("train_mse", BLUE, "train"), ("test_mse", ORANGE, "test")):
        c = curves[key]
        p.line(np.arange(len(c)), c, color, width=2, label=f"{name} MSE{mean}")
    p.hline(optimal_mse, label=f"least-squares optimum (train) {optimal_mse:.4g}")
    return figure([p], title)


def fitted_vs_actual(
    y_train: np.ndarray,
    fit_train: np.ndarray,
    y_test: np.ndarray,
    fit_test: np.ndarray,
    target: str,
) -> str:
    """Predicted against actual target values, with the identity line, and residuals."""
    fit = Panel(xlabel=f"actual {target}", ylabel=f"fitted {target}", legend_left=True)
    fit.dots(y_train, fit_train, BLUE, label="train")
    fit.dots(y_test, fit_test, ORANGE, radius=3, opacity=0.8, label="test")
    lo = float(min(y_train.min(), y_test.min()))
    hi = float(max(y_train.max(), y_test.max()))
    fit.line([lo, hi], [lo, hi], "black", width=1, label="y = ŷ")
    res = Panel(xlabel=f"fitted {target}", ylabel="residual")
    res.dots(fit_train, y_train - fit_train, BLUE, label="train")
    res.dots(fit_test, y_test - fit_test, ORANGE, radius=3, opacity=0.8, label="test")
    res.hline(0.0, dash="")
    return figure([fit, res], panel_width=420)


Curve = tuple[np.ndarray, np.ndarray]  # (epochs, values)


def overlay(curves: dict[str, tuple[Curve, Curve]], title: str) -> str:
    """Train and test MSE per epoch of several runs, one colour per run, on a log scale.

    ``curves`` maps a run's name to its (epochs, values) of train and of test MSE.
    """
    train = Panel(title="train MSE", xlabel="epoch", ylabel="MSE", ylog=True, epochs=True)
    test = Panel(title="test MSE", xlabel="epoch", ylabel="MSE", ylog=True, epochs=True)
    for i, (name, ((x_tr, tr), (x_te, te))) in enumerate(curves.items()):
        color = PALETTE[i % len(PALETTE)]
        train.line(x_tr, tr, color, width=1)
        test.line(x_te, te, color, width=1, label=name if len(curves) <= 12 else "")
    return figure([train, test], title, panel_width=480)
