"""Numerical checks made before training: the stable learning rate and the conditioning.

TSSE is a sum, so its curvature grows with the rows in a batch: the Hessian of a batch of b rows
is about 2·(b/n)·X̃ᵀX̃. Plain gradient descent is stable for lr < 2/L with L = 2·λmax of that
Hessian's half, i.e. lr < n / (b·λmax(X̃ᵀX̃)); heavy-ball momentum β stretches it by (1 + β)
(each optimizer's registry entry gives its factor: :attr:`optim.Optimizer.stable_factor`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from lrexp.core import model, optim

THETA_ERROR_WARN = 0.01  # warn when cond(X̃ᵀX̃)·eps(dtype), θ's relative error, passes 1%


class Diagnostics(NamedTuple):
    stable_lr: float  # largest stable lr of plain gradient descent at this batch size
    hessian_condition: float  # λmax / λmin of X̃ᵀX̃ (the square of cond(X̃))
    warnings: tuple[str, ...]


class Spectrum(NamedTuple):
    """What the checks need of the standardized design X̃: its rows and X̃ᵀX̃'s extremes."""

    n: int
    lam_max: float
    lam_min: float


def spectrum(X_std: np.ndarray) -> Spectrum:
    """Measure the rows of X̃ and the extreme eigenvalues of X̃ᵀX̃."""
    gram = np.asarray(model.sufficient_stats(jnp.asarray(X_std), jnp.zeros(len(X_std))).gram)
    eig = np.linalg.eigvalsh(gram)
    return Spectrum(len(X_std), float(eig[-1]), float(max(eig[0], 0.0)))


def check(
    X_std: np.ndarray | Spectrum,
    *,
    batch_size: int | None,
    optimizer: str,
    knobs: Mapping[str, float],
    dtype: str,
) -> Diagnostics:
    """Bound the learning rate and judge the conditioning of the standardized design X̃ (or of
    its :func:`spectrum`, for runs that share it); ``knobs`` are the optimizer's float knobs,
    ``lr`` included.
    """
    n, lam_max, lam_min = X_std if isinstance(X_std, Spectrum) else spectrum(X_std)
    stable_lr = n / ((batch_size or n) * lam_max)
    condition = lam_max / lam_min if lam_min > 0 else float("inf")
    warnings = []
    entry = optim.OPTIMIZERS[optimizer]
    if entry.stable_factor is not None:
        lr, factor = knobs["lr"], entry.stable_factor(knobs)
        bound = stable_lr * factor
        if lr > bound:
            warnings.append(
                f"optimizer.lr={lr:g} exceeds the largest stable learning rate for this data and "
                f"batch size ({bound:.3g}{' with momentum' if factor != 1 else ''}; TSSE is a "
                "sum, so it shrinks as batches grow): expect divergence"
            )
    error = condition * float(np.finfo(dtype).eps)  # θ's relative error, roughly
    if error > THETA_ERROR_WARN:
        advice = " Use train.dtype=float64." if dtype != "float64" else ""
        warnings.append(
            f"the features are nearly collinear: cond(X̃ᵀX̃) = {condition:.3g}, so in {dtype} "
            f"θ is determined only to about {min(error, 1.0):.0%}; judge the run by its loss."
            f"{advice}"
        )
    return Diagnostics(stable_lr, condition, tuple(warnings))
