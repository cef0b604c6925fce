"""What a streamed pass's sums give (:mod:`lrexp.core.stream`): a part's Gram matrix
G = Σ dᵀd of its rows d = [1, z − shift], z = [x, y], holds its moments, the statistics of any
affine map of the rows (standardization), the TSSE of any θ and the least-squares θ*. Pure NumPy.
"""

from __future__ import annotations

import numpy as np


def moments(gram: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population standard deviation of each column z = [x, y] of a part's rows."""
    n = gram[0, 0]
    mean_d = gram[0, 1:] / n
    var = np.maximum(np.diag(gram)[1:] / n - mean_d * mean_d, 0.0)
    return shift + mean_d, np.sqrt(var)


def affine_gram(gram: np.ndarray, shift: np.ndarray, mean: np.ndarray, scale: np.ndarray):
    """The Gram of [1, (z − mean) / scale] from that of [1, z − shift]: T G Tᵀ, with
    [1, (z − mean)/scale] = T [1, z − shift], T = [[1, 0], [(shift − mean)/scale, diag(1/scale)]].
    """
    T = np.zeros_like(gram)
    T[0, 0] = 1.0
    T[1:, 0] = (shift - mean) / scale
    T[1:, 1:] = np.diag(1.0 / scale)
    return T @ gram @ T.T


def scores(theta: np.ndarray, gram: np.ndarray, shift: np.ndarray) -> dict[str, float | None]:
    """TSSE, MSE, RMSE and R² of θ = [b, w] (original units) on a part's rows, from its Gram:
    ŷ − y = aᵀ[1, z − shift] with a = [b + w·c_x − c_y, w, −1], so TSSE = aᵀGa."""
    theta = np.asarray(theta, np.float64)
    a = np.concatenate([[theta[0] + theta[1:] @ shift[:-1] - shift[-1]], theta[1:], [-1.0]])
    n = float(gram[0, 0])
    sse = max(float(a @ gram @ a), 0.0)
    sst = float(gram[-1, -1] - gram[0, -1] ** 2 / n)
    mse = sse / n
    r2 = 1.0 - sse / sst if sst > 0 and np.isfinite(sst) else None
    return {"tsse": sse, "mse": mse, "rmse": float(np.sqrt(mse)), "r2": r2}


def solve(gram: np.ndarray) -> np.ndarray:
    """θ̃* = argmin TSSE from a Gram of [1, x, y]: the normal equations G_xx θ̃ = G_xy, by
    least squares on them (a singular G_xx, collinear columns, gives the minimum-norm θ̃*)."""
    return np.linalg.lstsq(gram[:-1, :-1], gram[:-1, -1], rcond=None)[0]


def eigen_range(gram: np.ndarray) -> tuple[float, float]:
    """The largest and smallest eigenvalue of X̃ᵀX̃ (the design's part of a Gram of [1, x, y])."""
    eig = np.linalg.eigvalsh(gram[:-1, :-1])
    return float(eig[-1]), float(max(eig[0], 0.0))
