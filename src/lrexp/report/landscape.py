"""The TSSE landscape as SVG: filled contours on a plane through θ*, the optimizer's paths over it.

TSSE is quadratic in θ, so its contours on a plane are ellipses: each level is one exact
``<ellipse>``, filled, largest first (no grid, no contour tracing). Levels are log-spaced in
TSSE − TSSE* (:func:`lrexp.core.landscape.levels`), so the rings of the valley stay apart.
NumPy only: the tracking process draws a sweep's landscape from its children's JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from xml.sax.saxutils import escape

import numpy as np

from lrexp.core.landscape import Plane, extent, levels
from lrexp.report.svg import PALETTE, _mark, _ticks

# Filled bands from the rim (light) to the floor of the valley (dark): matplotlib's "Blues",
# stretched over the levels that are drawn; the coloured paths over them keep a white halo.
BLUES = ("#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5")
MIN_RADIUS = 2.0  # px: a level whose ellipse is narrower is not drawn (nor any below it)
STAR = "#d62728"  # θ*
MAX_RADIUS = 1e5  # px: a flat direction (collinear features) draws as a long band


class _Frame:
    """The panel's box on the page and the plane's box it shows: maps u to pixels."""

    def __init__(self, left, top, width, height, box):
        self.left, self.top, self.width, self.height = left, top, width, height
        self.x0, self.x1, self.y0, self.y1 = box
        self.sx = width / (self.x1 - self.x0)
        self.sy = height / (self.y1 - self.y0)

    def px(self, u: np.ndarray) -> np.ndarray:
        """Pixels of points u (..., 2), clipped far outside the page (a diverged path's)."""
        u = np.asarray(u, float)
        with np.errstate(over="ignore", invalid="ignore"):
            xy = np.stack(
            [self.left + (u[..., 0] - self.x0) * self.sx,
                 self.top + self.height - (u[..., 1] - self.y0) * self.sy], axis=-1,
            )  # fmt: skip
        return np.clip(xy, -1e6, 1e6)


def _equal(box: tuple[float, float, float, float], aspect: float) -> tuple:
    """``box`` widened along one axis so that a unit spans as many pixels on both."""
    x0, x1, y0, y1 = box
    w, h = x1 - x0, y1 - y0
    if w / h < aspect:
        pad = (h * aspect - w) / 2
        return x0 - pad, x1 + pad, y0, y1
    pad = (w / aspect - h) / 2
    return x0, x1, y0 - pad, y1 + pad


def _band(i: int, count: int) -> str:
    """The colour of band ``i`` of ``count``: Blues, light to dark."""
    t = i / max(count - 1, 1) * (len(BLUES) - 1)
    a, b = BLUES[int(t)], BLUES[min(int(t) + 1, len(BLUES) - 1)]
    mix = [round(int(a[k : k + 2], 16) * (1 - t % 1) + int(b[k : k + 2], 16) * (t % 1))
           for k in (1, 3, 5)]  # fmt: skip
    return "#" + "".join(f"{v:02x}" for v in mix)


def _ellipses(p: Plane, f: _Frame, levels: np.ndarray) -> list[str]:
    """Each level's ellipse (u − c)ᵀQ(u − c) = e in pixels, filled, outermost first; those under
    MIN_RADIUS px across are left out."""
    S = np.diag([1 / f.sx, -1 / f.sy])  # pixel offset → u offset
    with np.errstate(over="ignore", invalid="ignore"):  # a box as wide as a diverged path
        Qp = S @ p.quad @ S
    if not np.isfinite(Qp).all():
        return []
    mu, vec = np.linalg.eigh(Qp)
    angle = math.degrees(math.atan2(vec[1, 0], vec[0, 0]))
    cx, cy = f.px(p.centre)
    radii = [
        [min(math.sqrt(e / m), MAX_RADIUS) if m > 0 else MAX_RADIUS for m in mu] for e in levels
    ]
    radii = [r for r in radii if min(r) >= MIN_RADIUS]
    return [
        f'<ellipse cx="{cx:.1f}" cy="{cy:.1f}" rx="{r[0]:.1f}" ry="{r[1]:.1f}" '
        f'transform="rotate({angle:.2f} {cx:.1f} {cy:.1f})" fill="{_band(i, len(radii))}" '
        'stroke="#3b5f8a" stroke-width="0.6" stroke-opacity="0.6"/>'
        for i, r in enumerate(radii)
    ]


def _path(f: _Frame, path: np.ndarray, color: str, dots: bool) -> list[str]:
    """A path as a line over a white halo, a dot at each epoch (when few)."""
    ok = np.isfinite(path).all(axis=1)
    pts = f.px(path[ok])
    if not len(pts):
        return []
    line = " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
    out = [
        f'<polyline points="{line}" fill="none" stroke="white" stroke-width="4.5" '
        'stroke-opacity="0.8" stroke-linejoin="round"/>',
        f'<polyline class="path" points="{line}" fill="none" stroke="{color}" '
        'stroke-width="1.8" stroke-linejoin="round"/>',
    ]
    if dots:
        out += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="1.8" fill="{color}"/>' for a, b in pts]
    return out


def _ends(f: _Frame, path: np.ndarray, color: str) -> list[str]:
    """The path's start ○ and end ■."""
    pts = f.px(path[np.isfinite(path).all(axis=1)])
    if not len(pts):
        return []
    (sx, sy), (ex, ey) = pts[0], pts[-1]
    out = []
    out.append(
        f'<circle class="start" cx="{sx:.1f}" cy="{sy:.1f}" r="5" fill="white" '
        f'stroke="{color}" stroke-width="2"/>'
    )
    out.append(
        f'<rect class="end" x="{ex - 4:.1f}" y="{ey - 4:.1f}" width="8" height="8" '
        f'fill="{color}" stroke="white" stroke-width="1"/>'
    )
    return out


def _star(x: float, y: float, r: float = 8.0) -> str:
    pts = " ".join(
        f"{x + (r if k % 2 == 0 else r * 0.45) * math.sin(k * math.pi / 5):.1f},"
        f"{y - (r if k % 2 == 0 else r * 0.45) * math.cos(k * math.pi / 5):.1f}"
        for k in range(10)
    )
    return f'<polygon class="theta-star" points="{pts}" fill="{STAR}" stroke="white"/>'


def _axes(f: _Frame, labels: Sequence[str]) -> list[str]:
    """Ticks and labels on the panel's left and bottom edges."""
    out, bottom = [], f.top + f.height
    for t in _ticks(f.x0, f.x1, False):
        x = f.left + (t - f.x0) * f.sx
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom:.1f}" y2="{bottom + 5:.1f}" '
                   'stroke="#444"/>')  # fmt: skip
        out.append(f'<text x="{x:.1f}" y="{bottom + 18:.1f}" text-anchor="middle">{t:.4g}</text>')
    for t in _ticks(f.y0, f.y1, False):
        y = bottom - (t - f.y0) * f.sy
        out.append(f'<line x1="{f.left - 5:.1f}" x2="{f.left:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                   'stroke="#444"/>')  # fmt: skip
        out.append(f'<text x="{f.left - 8:.1f}" y="{y + 4:.1f}" text-anchor="end">{t:.4g}</text>')
    mid = f.left + f.width / 2
    out.append(f'<text x="{mid:.1f}" y="{bottom + 38:.1f}" text-anchor="middle">'
               f"{escape(labels[0])}</text>")  # fmt: skip
    out.append(
        f'<text transform="translate({f.left - 58:.1f},{f.top + f.height / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{escape(labels[1])}</text>'
    )
    return out


def _colorbar(x: float, top: float, height: float, lv: np.ndarray, shown: int) -> list[str]:
    """The bands' key: TSSE − TSSE* at each level, top (highest) to bottom."""
    if not shown:
        return []
    out = [f'<text x="{x - 4:.1f}" y="{top - 10:.1f}">TSSE − TSSE*</text>']
    h = height / max(shown, 1)
    for i in range(shown):
        y = top + i * h
        out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="14" height="{h:.1f}" '
                   f'fill="{_band(i, shown)}" stroke="#3b5f8a" stroke-width="0.6"/>')  # fmt: skip
        out.append(f'<text x="{x + 18:.1f}" y="{y + 4:.1f}">{lv[i]:.2g}</text>')
    return out


def landscape(
    p: Plane,
    paths: Sequence[tuple[str, np.ndarray]],
    title: str,
    *,
    notes: Sequence[str] = (),
) -> str:
    """TSSE over the plane ``p`` with ``paths`` (label, (T, 2) points in the plane's
    coordinates) over it, θ* marked, a legend of the paths and markers, and a key of the bands;
    ``notes``: lines under the legend (what the plane is, whose path)."""
    W, H, left, top, pw, ph = 820, 0, 80, 40, 560, 440
    box = extent(p, [q for _, q in paths])
    if p.kind == "eigen":  # both axes in θ̃'s units: equal scales, so the valley's shape is true
        box = _equal(box, pw / ph)
    f = _Frame(left, top, pw, ph, box)
    lv = levels(p, box, count=10)
    rings = _ellipses(p, f, lv)
    legend = [(label, PALETTE[i % len(PALETTE)], "line") for i, (label, _) in enumerate(paths)]
    rows = len(legend) + 3 + len(notes)
    H = top + ph + 56 + 16 * rows
    clip = "landscape-clip"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" font-family="DejaVu Sans, Arial, sans-serif" font-size="11">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{left + pw / 2:.1f}" y="18" text-anchor="middle" font-size="12">'
        f"{escape(title)}</text>",
    ]
    out += [
        f'<clipPath id="{clip}"><rect x="{left}" y="{top}" width="{pw}" height="{ph}"/></clipPath>',
        f'<g clip-path="url(#{clip})">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="white"/>',
        *rings,
    ]
    for i, (_, q) in enumerate(paths):
        out += _path(f, q, PALETTE[i % len(PALETTE)], dots=len(q) <= 80)
    out.append(_star(*f.px(p.centre)))
    for i, (_, q) in enumerate(paths):
        out += _ends(f, q, PALETTE[i % len(PALETTE)])
    out.append("</g>")
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" '
               'stroke="#444"/>')  # fmt: skip
    out += _axes(f, p.labels)
    out += _colorbar(left + pw + 24, top + 8, ph - 16, lv, len(rings))
    out += _legend(legend, left, top + ph + 56, p.tsse_star, notes)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _legend(entries, x: float, y: float, tsse_star: float, extra: Sequence[str]) -> list[str]:
    """One row per path, then the markers' meaning, then any extra text rows."""
    out = []
    for i, (label, color, kind) in enumerate(entries):
        out.append(_mark(x, y + 16 * i, color, kind))
        out.append(f'<text x="{x + 26:.1f}" y="{y + 16 * i:.1f}">{escape(label)}</text>')
    y += 16 * len(entries)
    out.append(f'<circle cx="{x + 6:.1f}" cy="{y - 4:.1f}" r="4.5" fill="white" stroke="#333" '
               'stroke-width="1.5"/>')  # fmt: skip
    out.append(f'<text x="{x + 16:.1f}" y="{y:.1f}">start</text>')
    out.append(f'<rect x="{x + 60:.1f}" y="{y - 8:.1f}" width="8" height="8" fill="#333"/>')
    out.append(f'<text x="{x + 74:.1f}" y="{y:.1f}">end</text>')
    out.append(_star(x + 118, y - 4, 6.5))
    out.append(
        f'<text x="{x + 130:.1f}" y="{y:.1f}">θ* (least squares), TSSE* = {tsse_star:.5g}</text>'
    )
    y += 16
    out.append(f'<text x="{x:.1f}" y="{y:.1f}" fill="#555">filled contours: TSSE on the train '
               "rows, levels √10 apart (log-spaced)</text>")  # fmt: skip
    for i, line in enumerate(extra, start=1):
        out.append(f'<text x="{x:.1f}" y="{y + 16 * i:.1f}" fill="#555">{escape(line)}</text>')
    return out


def plane_notes(p: Plane, what: str) -> list[str]:
    """Lines saying what the plane is and whose path is drawn."""
    m = len(p.theta_star) - 1
    if p.kind == "bias-weight":
        plane = "the bias and the weight themselves"
    elif p.kind == "weights":
        plane = "the two weights themselves, the bias at its best for each"
    else:
        return [
            f"plane: through θ* along the steepest and the flattest of {m} eigen-directions of "
            "X̃ᵀX̃ (X̃: the design",
            "  the optimizer sees, centred), the bias at its best; the path's other components "
            "are not drawn",
            f"path: {what}",
        ]
    return [f"plane: {plane}", f"path: {what}"]
