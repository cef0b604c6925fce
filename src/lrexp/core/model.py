"""The model and its maths, pure JAX: ŷ = θ0 + X·θ, TSSE, metrics and the least-squares optimum.

Parameters are one vector θ̃ = [θ0, θ1..θM], so that with X̃ = [1, X] the model is ŷ = X̃θ̃ and
the gradient of TSSE(θ̃) = ‖y − X̃θ̃‖² is 2X̃ᵀ(X̃θ̃ − y).
"""

from __future__ import annotations

from typing import NamedTuple

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


@jax.custom_vjp
def tsse_blocks(theta: jax.Array, Z: jax.Array) -> jax.Array:
    """TSSE Σ_i (y_i − ŷ_i)² of rows held in blocks, feature-major within each block:
    Z (blocks, M+2, rows) holds a row of ones, the features, then the target. Rows of all zeros
    (padding, ones included) add nothing.

    With z_i = [1, x_i, y_i] and c = [θ̃, −1], r = cᵀz_i = ŷ_i − y_i: both products run along a
    block's contiguous rows; the gradient 2 Σ_i r_i z̃_i is one more product (a custom VJP:
    autodiff's ran twice as long here).
    """
    return _block_residuals(theta, Z)[0]


def _block_residuals(theta, Z):
    coef = jnp.concatenate([theta, -jnp.ones(1, theta.dtype)])  # the target's is −1
    r = jnp.einsum("f,kfr->kr", coef, Z)
    return jnp.sum(r * r), r


def _tsse_blocks_fwd(theta, Z):
    value, r = _block_residuals(theta, Z)
    return value, (Z, r)


def _tsse_blocks_bwd(saved, g):
    Z, r = saved
    return 2 * g * jnp.einsum("kfr,kr->f", Z, r)[:-1], None  # the data is no parameter


tsse_blocks.defvjp(_tsse_blocks_fwd, _tsse_blocks_bwd)


def block_moments(Z: jax.Array) -> jax.Array:
    """Each block's moments Z̃ᵀ[Z̃, y] (blocks, M+1, M+2) in Z's dtype, from blocks laid out as
    for :func:`tsse_blocks` (Z̃: the ones and the features): a batch of blocks has the TSSE
    gradient 2 (Σ_k S_k) [θ̃, −1] (:func:`tsse_grad_moments`), whatever its number of rows.

    A sum of outer products over a block's rows: XLA ran it 2× faster here than as a batched
    matrix product (one small product per block).
    """
    S = jnp.zeros((Z.shape[0], Z.shape[1] - 1, Z.shape[1]), Z.dtype)
    for r in range(Z.shape[2]):  # unrolled: one fused loop over the blocks
        z = Z[:, :, r]
        S = S + z[:, :-1, None] * z[:, None, :]
    return S


def tsse_grad_moments(theta: jax.Array, S: jax.Array) -> jax.Array:
    """The TSSE gradient 2X̃ᵀ(X̃θ̃ − y) = 2 S [θ̃, −1] of rows with moments S = X̃ᵀ[X̃, y]."""
    coef = jnp.concatenate([theta, -jnp.ones(1, theta.dtype)])
    return 2 * S @ coef


def augment(X: jax.Array) -> jax.Array:
    """X̃ = [1, X]: the design matrix with the bias column."""
    return jnp.concatenate([jnp.ones((X.shape[0], 1), X.dtype), X], axis=1)


def least_squares(X: jax.Array, y: jax.Array) -> jax.Array:
    """θ̃* = argmin ‖y − X̃θ̃‖², by SVD (``lstsq``): stable where XᵀX is ill-conditioned."""
    theta, *_ = jnp.linalg.lstsq(augment(X), y)
    return theta


def condition_number(X: jax.Array) -> jax.Array:
    """cond(X̃) = σ_max / σ_min of the design; the Hessian 2X̃ᵀX̃ has its square.

    From R of X̃ = QR, (M+1)×(M+1) with X̃'s singular values: an SVD of the n-row design itself
    asks LAPACK for n² floats of workspace (terabytes at 1e6 rows).
    """
    s = jnp.linalg.svd(jnp.linalg.qr(augment(X), mode="r"), compute_uv=False)
    return s[0] / s[-1]


def metrics(theta: jax.Array, X: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
    """TSSE, MSE, RMSE and R² = 1 − TSSE / Σ(y − ȳ)² of θ̃ on (X, y)."""
    sse = tsse(theta, X, y)
    mse = sse / y.shape[0]
    sst = jnp.sum((y - jnp.mean(y)) ** 2)
    return {"tsse": sse, "mse": mse, "rmse": jnp.sqrt(mse), "r2": 1.0 - sse / sst}


# --- the training data: rows, feature-major columns or sufficient statistics ----------------------
class Rows(NamedTuple):
    """The data as rows: X (n, M) and y (n,)."""

    X: jax.Array
    y: jax.Array


class Columns(NamedTuple):
    """The data feature-major, Xᵀ (M, n) and y (n,): full-batch passes over the rows stream it.

    Both products of a step, X̃θ̃ and X̃ᵀr, then read contiguous rows of Xᵀ. On row-major X the
    gradient's rᵀX ran at a third of the bandwidth on this CPU: a value and gradient read X about
    3.5 times over, feature-major about 2.
    """

    XT: jax.Array
    y: jax.Array


def columns(X: jax.Array, y: jax.Array) -> Columns:
    """The rows (…, n, M) as :class:`Columns`, one transposed copy of X; call it outside ``jit``
    (inside, XLA may fold the transpose into the products, undoing the layout)."""
    return Columns(jnp.swapaxes(jnp.asarray(X), -1, -2), jnp.asarray(y))


@jax.custom_vjp
def tsse_columns(theta: jax.Array, XT: jax.Array, y: jax.Array) -> jax.Array:
    """TSSE ‖r‖², r = X̃θ̃ − y, from feature-major Xᵀ (M, n); its gradient 2X̃ᵀr is one product.

    (A custom VJP: autodiff computed the same product but ran 10% slower, scaling r first.)
    """
    return _residual_sq(theta, XT, y)[0]


def _residual_sq(theta, XT, y):
    if y.ndim != 1:  # as in tsse: a (n, 1) target would broadcast into an (n, n) residual
        raise ValueError(f"y must have shape (n,), got {y.shape}")
    r = theta[0] + theta[1:] @ XT - y
    return r @ r, r


def _tsse_columns_fwd(theta, XT, y):
    value, r = _residual_sq(theta, XT, y)
    return value, (theta, XT, r)


def _tsse_columns_bwd(residuals, ct):
    theta, XT, r = residuals
    grad = 2.0 * ct * jnp.concatenate([jnp.sum(r)[None], XT @ r])
    return grad.astype(theta.dtype), None, None


tsse_columns.defvjp(_tsse_columns_fwd, _tsse_columns_bwd)


class Stats(NamedTuple):
    """Sufficient statistics of (X, y) for TSSE: G = X̃ᵀX̃, b = X̃ᵀy, c = yᵀy, and n."""

    gram: jax.Array
    xty: jax.Array
    yty: jax.Array
    n: jax.Array


def sufficient_stats(X: jax.Array, y: jax.Array) -> Stats:
    """One pass over the rows, in float64: ZᵀZ for Z = [1, X, y] holds every statistic at once.

    (One matrix product of the augmented rows ran 3.5× faster on this CPU than XᵀX, Xᵀy and the
    sums computed separately: XLA's transposed products are slow here.)
    """
    n, m = X.shape
    Z = jnp.concatenate(
        [
            jnp.ones((n, 1), jnp.float64),
            jnp.asarray(X, jnp.float64),
            jnp.asarray(y, jnp.float64)[:, None],
        ],
        axis=1,
    )
    G = Z.T @ Z
    return Stats(gram=G[: m + 1, : m + 1], xty=G[: m + 1, m + 1], yty=G[m + 1, m + 1], n=G[0, 0])


class Shards(NamedTuple):
    """Rows on many devices (:mod:`lrexp.core.devices`): ``main`` an equal share per device,
    ``rest`` the few left over; TSSE and n are the sums over both."""

    main: Columns
    rest: Columns


def tsse_stats(theta: jax.Array, s: Stats) -> jax.Array:
    """TSSE(θ̃) = c − 2θ̃ᵀb + θ̃ᵀGθ̃, in float64; its gradient is 2(Gθ̃ − b)."""
    t = theta.astype(jnp.float64)
    return s.yty - 2.0 * t @ s.xty + t @ (s.gram @ t)


def loss(theta: jax.Array, data: Rows | Columns | Stats | Shards) -> jax.Array:
    """TSSE of θ̃ on ``data``, in θ̃'s dtype (statistics are exact in float64, then cast)."""
    if isinstance(data, Shards):
        return loss(theta, data.main) + loss(theta, data.rest)
    if isinstance(data, Rows):
        value = tsse(theta, data.X, data.y)
    elif isinstance(data, Columns):
        value = tsse_columns(theta, data.XT, data.y)
    else:
        value = tsse_stats(theta, data)
    return value.astype(theta.dtype)


def n_rows(data: Rows | Columns | Stats | Shards) -> jax.Array | int:
    if isinstance(data, Shards):
        return n_rows(data.main) + n_rows(data.rest)
    return data.n if isinstance(data, Stats) else data.y.shape[-1]
