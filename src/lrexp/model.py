"""The model and its maths, pure JAX: ŷ = θ0 + X·θ, TSSE, metrics and the least-squares optimum.

Parameters are one vector θ̃ = [θ0, θ1..θM], so that with X̃ = [1, X] the model is ŷ = X̃θ̃ and
the gradient of TSSE(θ̃) = ‖y − X̃θ̃‖² is 2X̃ᵀ(X̃θ̃ − y).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def predict(theta: jax.Array, X: jax.Array) -> jax.Array:
    """ŷ = θ0 + X·θ for rows X (n, M) and θ̃ (M+1,)."""
    return theta[0] + X @ theta[1:]


def tsse(theta: jax.Array, X: jax.Array, y: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Total sum of squared errors Σ_i m_i (y_i − ŷ_i)², rows weighted by an optional 0/1 mask."""
    if y.ndim != 1:  # a (n, 1) target would broadcast against (n,) into an (n, n) residual
        raise ValueError(f"y must have shape (n,), got {y.shape}")
    r = y - predict(theta, X)
    if mask is not None:
        r = r * mask
    return r @ r


tsse_and_grad = jax.value_and_grad(tsse)


def augment(X: jax.Array) -> jax.Array:
    """X̃ = [1, X]: the design matrix with the bias column."""
    return jnp.concatenate([jnp.ones((X.shape[0], 1), X.dtype), X], axis=1)


def least_squares(X: jax.Array, y: jax.Array) -> jax.Array:
    """θ̃* = argmin ‖y − X̃θ̃‖², by SVD (``lstsq``): stable where XᵀX is ill-conditioned."""
    theta, *_ = jnp.linalg.lstsq(augment(X), y)
    return theta


def condition_number(X: jax.Array) -> jax.Array:
    """cond(X̃) = σ_max / σ_min of the design; the Hessian 2X̃ᵀX̃ has its square."""
    s = jnp.linalg.svd(augment(X), compute_uv=False)
    return s[0] / s[-1]


def metrics(theta: jax.Array, X: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
    """TSSE, MSE, RMSE and R² = 1 − TSSE / Σ(y − ȳ)² of θ̃ on (X, y)."""
    sse = tsse(theta, X, y)
    mse = sse / y.shape[0]
    sst = jnp.sum((y - jnp.mean(y)) ** 2)
    return {"tsse": sse, "mse": mse, "rmse": jnp.sqrt(mse), "r2": 1.0 - sse / sst}
