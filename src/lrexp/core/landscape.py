"""The TSSE landscape on a plane through θ*, and the optimizer's path projected onto it.

TSSE is quadratic in θ, so on any plane θ = θ* + B̃·(u − c) (u the plane's two coordinates, c θ*'s)
it is exactly TSSE(u) = TSSE* + (u − c)ᵀ Q (u − c), Q = σ_y² B̃ᵀ ÃᵀÃ B̃, Ã = [1, X̃] the design the
optimizer sees. The plane, by the number of features M:

- M = 1: the bias and the weight themselves, u = (b, θ1);
- M = 2: the two weights, u = (θ1, θ2), the bias at its best for each (b = ȳ − x̄·w: the bias
  absorbs the mean, so Q is the centred X_cᵀX_c);
- M ≥ 3: the steepest and the flattest eigen-directions v1, vM of X̃_cᵀX̃_c (X̃ centred), u = the
  standardized weights' offsets from θ* along them, the bias again at its best: Q = σ_y²·diag(λ1,
  λM). The plane then holds the valley's floor and its steepest wall: its elongation is the
  conditioning λ1/λM the optimizer fights, and a path lags visibly along the floor (the two leading
  directions are often about equally curved, and show a round bowl).

A path is projected by reading the plane's coordinates of each θ (for M ≥ 3, v_kᵀ(w̃ − w̃*): what
lies off the plane is not drawn). NumPy only, on the host, after training: the tracking layer
redraws a sweep's landscape from the JSON (:func:`to_json`) without JAX.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lrexp.core.data import Standardizer

MAX_PATH = 400  # points of a path kept: every epoch up to HEAD, then evenly spaced to the end
HEAD = 200


@dataclass(frozen=True)
class Plane:
    """A 2-D slice through θ*: TSSE(u) = tsse_star + (u − centre)ᵀ quad (u − centre)."""

    kind: str  # "bias-weight" (M = 1), "weights" (M = 2) or "eigen" (M ≥ 3)
    labels: tuple[str, str]  # what the coordinates are, for the axes
    centre: np.ndarray  # (2,) θ* on the plane
    quad: np.ndarray  # (2, 2) Q, in the target's units squared per unit of u²
    tsse_star: float  # TSSE at θ* on the training rows
    theta_star: np.ndarray  # (M + 1,) θ* in original units [b, w]
    basis: np.ndarray  # (2, M + 1): θ = θ* + Σ_k (u_k − centre_k)·basis_k, original units
    reader: np.ndarray  # (2, M + 1): u = centre + reader·(θ − θ*), original units
    eigenvalues: tuple[float, float] | None = None  # λ1, λM of X̃_cᵀX̃_c (kind "eigen")

    def tsse(self, u: np.ndarray) -> np.ndarray:
        """TSSE at points u (..., 2) of the plane."""
        with np.errstate(over="ignore", invalid="ignore"):  # a diverged path's points: inf
            d = np.asarray(u, np.float64) - self.centre
            return self.tsse_star + np.einsum("...i,ij,...j->...", d, self.quad, d)

    def project(self, thetas: np.ndarray) -> np.ndarray:
        """The plane's coordinates (T, 2) of θs (T, M + 1) in original units."""
        with np.errstate(over="ignore", invalid="ignore"):  # a diverged θ: inf, NaN
            d = np.asarray(thetas, np.float64).reshape(-1, len(self.theta_star)) - self.theta_star
            return self.centre + d @ self.reader.T

    def lift(self, u: np.ndarray) -> np.ndarray:
        """θ (..., M + 1) in original units at points u (..., 2) of the plane."""
        return self.theta_star + (np.asarray(u, np.float64) - self.centre) @ self.basis


def plane(
    X: np.ndarray,
    y: np.ndarray,
    st: Standardizer,
    theta_star: np.ndarray,
    names: list[str],
    *,
    tsse_star: float | None = None,
) -> Plane:
    """The plane through ``theta_star`` (original units) for the training rows (X, y) as the
    file holds them, ``st`` the scaling the optimizer saw; ``names`` θ's [bias, w1, …];
    ``tsse_star`` the TSSE at θ*, where the caller has it (else one more pass over the rows)."""
    Xc = st.apply(np.asarray(X, np.float64))  # X̃, what the loop saw: one copy, centred in place
    mean = Xc.mean(axis=0)
    Xc -= mean
    G = Xc.T @ Xc  # X̃_cᵀX̃_c
    n, m, s2 = len(Xc), Xc.shape[1], float(st.y_scale) ** 2
    if tsse_star is None:
        star_t = st.to_standardized(theta_star)
        r = st.apply_target(y) - star_t[0] - mean @ star_t[1:] - Xc @ star_t[1:]
        tsse_star = s2 * float(r @ r)
    # L: the linear part of θ = to_original(θ̃); its inverse maps a step in θ to one in θ̃
    L = (st.to_original(np.eye(m + 1)) - st.to_original(np.zeros(m + 1))).T
    eig = None
    if m == 1:
        kind, labels = "bias-weight", (names[0], names[1])
        Bt = np.linalg.inv(L)  # u = θ itself
        H = np.array([[n, n * mean[0]], [n * mean[0], G[0, 0] + n * mean[0] ** 2]])  # ÃᵀÃ
        quad = s2 * (Bt.T @ H @ Bt)
    else:
        if m == 2:
            kind, labels = "weights", (names[1], names[2])
            W = np.linalg.inv(L[1:, 1:])  # Δw̃ per unit of w
        else:
            lam, vec = np.linalg.eigh(G)  # ascending
            W, eig = vec[:, [-1, 0]], (float(lam[-1]), float(lam[0]))
            kind = "eigen"
            labels = (f"steepest direction of X̃ᵀX̃ (λ={eig[0]:.3g})",
                      f"flattest direction (λ={eig[1]:.3g})")  # fmt: skip
        Bt = np.vstack([-mean @ W, W])  # the bias at its best: b̃ = −x̃̄·w̃ for each step
        quad = s2 * (W.T @ G @ W)
    reader = _reader(Bt, L, m)
    centre = reader @ np.asarray(theta_star, np.float64) if kind != "eigen" else np.zeros(2)
    return Plane(
        kind, labels, centre, 0.5 * (quad + quad.T), float(tsse_star),
        np.asarray(theta_star, np.float64), (L @ Bt).T, reader, eig,
    )  # fmt: skip


def _reader(Bt: np.ndarray, L: np.ndarray, m: int) -> np.ndarray:
    """The rows that read u's offset from θ's (original units): through θ̃ = L⁻¹θ, the left
    inverse of the plane's basis in θ̃ (for M ≥ 2 on the weights alone: the bias is profiled)."""
    Linv = np.linalg.inv(L)
    if m == 1:
        return np.linalg.inv(Bt) @ Linv
    W = Bt[1:]
    return np.linalg.solve(W.T @ W, W.T) @ Linv[1:]


def thin(path: np.ndarray) -> np.ndarray:
    """At most MAX_PATH rows of a path: every row up to HEAD (where it moves most), then evenly
    spaced rows to the last."""
    if len(path) <= MAX_PATH:
        return path
    tail = np.linspace(HEAD, len(path) - 1, MAX_PATH - HEAD).round().astype(int)
    return path[np.unique(np.concatenate([np.arange(HEAD), tail]))]


def extent(p: Plane, paths: list[np.ndarray]) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) holding θ*, every finite point of ``paths`` and the contour through the
    paths' starts (capped at 4× the paths' own span), padded by a tenth."""
    pts = np.vstack([p.centre[None], *[q[np.isfinite(q).all(axis=1)] for q in paths]])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    starts = [q[0] for q in paths if len(q) and np.isfinite(q[0]).all()]
    if starts:
        e = max(float(p.tsse(s) - p.tsse_star) for s in starts)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.linalg.pinv(p.quad)
            half = np.sqrt(np.maximum(e * np.diag(inv), 0.0))
        span = np.maximum(hi - lo, 1e-12)
        half = np.minimum(half, 2 * span)
        lo, hi = np.minimum(lo, p.centre - half), np.maximum(hi, p.centre + half)
    size = hi - lo
    size = np.where(size > 0, size, np.maximum(np.abs(p.centre), 1.0))
    lo, hi = lo - 0.1 * size, hi + 0.1 * size
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def grid(p: Plane, box: tuple[float, float, float, float], n: int = 41) -> tuple:
    """TSSE on an n × n grid over ``box``: (xs, ys, Z) with Z[i, j] at (xs[j], ys[i])."""
    xs, ys = np.linspace(box[0], box[1], n), np.linspace(box[2], box[3], n)
    U = np.stack(np.meshgrid(xs, ys), axis=-1)
    return xs, ys, p.tsse(U)


def levels(p: Plane, box: tuple[float, float, float, float], count: int = 13) -> np.ndarray:
    """Log-spaced contour levels of TSSE − TSSE*: from the box's highest (a corner: the excess
    is convex) down by √10 a level, so each ring of the valley reads."""
    corners = np.array([[box[a], box[2 + b]] for a in (0, 1) for b in (0, 1)])
    top = float(np.max(p.tsse(corners)) - p.tsse_star)
    if not (math.isfinite(top) and top > 0):
        return np.zeros(0)
    return top * 10.0 ** (-0.5 * np.arange(count))


def to_json(p: Plane, path: np.ndarray, *, what: str) -> dict:
    """What a sweep needs to redraw a run's landscape: the plane, its quadratic, the path."""
    return {
        "kind": p.kind,
        "labels": list(p.labels),
        "centre": p.centre.tolist(),
        "quad": p.quad.tolist(),
        "tsse_star": p.tsse_star,
        "theta_star": p.theta_star.tolist(),
        "basis": p.basis.tolist(),
        "reader": p.reader.tolist(),
        "eigenvalues": None if p.eigenvalues is None else list(p.eigenvalues),
        "path": [[_finite(a), _finite(b)] for a, b in thin(path)],
        "path_of": what,  # which fit's path: the only one, fold 1, or the sequential chain
    }


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def from_json(doc: dict) -> tuple[Plane, np.ndarray]:
    """The plane and the path of :func:`to_json`'s document (None → NaN)."""
    eig = doc.get("eigenvalues")
    p = Plane(
        doc["kind"], tuple(doc["labels"]), np.asarray(doc["centre"], float),
        np.asarray(doc["quad"], float), float(doc["tsse_star"]),
        np.asarray(doc["theta_star"], float), np.asarray(doc["basis"], float),
        np.asarray(doc["reader"], float), None if eig is None else tuple(eig),
    )  # fmt: skip
    path = np.array([[np.nan if v is None else v for v in row] for row in doc["path"]], float)
    return p, path.reshape(-1, 2)


def same_plane(a: Plane, b: Plane, rtol: float = 1e-6) -> bool:
    """Whether two runs' landscapes are the same (same data, split and scaling)."""
    return (
        a.kind == b.kind
        and a.theta_star.shape == b.theta_star.shape
        and all(
            np.allclose(x, y, rtol=rtol, atol=rtol * (np.abs(x).max() + 1e-300))
            for x, y in ((a.theta_star, b.theta_star), (a.quad, b.quad), (a.basis, b.basis))
        )
    )
