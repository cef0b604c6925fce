"""Data: generators and a CSV loader producing a :class:`Dataset`; standardization, splits, batches.

Data is held on the host in float64 (the generators draw it with JAX in float64) and cast to the
training dtype only when it is handed to the compiled loop.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class DataError(ValueError):
    """Unusable data: names the ``data.*`` key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r}: {allowed}")


@dataclass(frozen=True)
class Dataset:
    """Rows ``X`` (n, M) and targets ``y`` (n,) in float64, with names and provenance."""

    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    target_name: str
    name: str
    source: str
    true_theta: np.ndarray | None = None  # [bias, w_1..w_M] when the generator is known


def make_linear(
    key: jax.Array,
    *,
    n: int,
    bias: float,
    weights: list[float],
    noise: float,
    collinearity: float = 0.0,
) -> Dataset:
    """Draw y = bias + X·w + noise·ε; features share one latent factor with the given correlation.

    With ``collinearity = c`` each feature is ``√c·z + √(1−c)·e_j`` for a shared ``z`` and
    independent ``e_j`` (all standard normal), so every pair of features has correlation ``c``.
    """
    m = len(weights)
    k_shared, k_own, k_noise = jax.random.split(key, 3)
    z = jax.random.normal(k_shared, (n, 1), dtype=jnp.float64)
    e = jax.random.normal(k_own, (n, m), dtype=jnp.float64)
    X = math.sqrt(collinearity) * z + math.sqrt(1.0 - collinearity) * e
    w = jnp.asarray(weights, dtype=jnp.float64)
    y = bias + X @ w + noise * jax.random.normal(k_noise, (n,), dtype=jnp.float64)
    kind = "linear" if collinearity == 0 else "collinear"
    return Dataset(
        X=np.asarray(X),
        y=np.asarray(y),
        feature_names=tuple(f"x{j + 1}" for j in range(m)),
        target_name="y",
        name=kind,
        source=f"lrexp:{kind}(n={n}, noise={noise}, collinearity={collinearity})",
        true_theta=np.asarray([bias, *weights], dtype=np.float64),
    )


def load_csv(path: str | Path, *, target: str, features: list[str] | None = None) -> Dataset:
    """Read numeric columns from a CSV file with a header row; report any bad cell by place."""
    path = Path(path)
    rows, lines = [], []  # non-blank rows, and the file line each one ends on
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append(row)
                lines.append(reader.line_num)
    if not rows:
        raise DataError("data.path", str(path), "is empty: needs a header row and data rows")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header):
        raise DataError("data.path", str(path), f"has duplicate column names: {header}")
    if target not in header:
        raise DataError("data.target", target, f"must be a column of {path.name}: {header}")
    names = [h for h in header if h != target] if features is None else list(features)
    missing = [f for f in names if f not in header]
    if missing:
        raise DataError(
            "data.features", features, f"{missing} not among the columns of {path.name}: {header}"
        )
    if not names:
        raise DataError("data.features", features, f"{path.name} has no column besides the target")
    if len(rows) < 2:
        raise DataError("data.path", str(path), "has a header row but no data rows")
    cols = [header.index(c) for c in [*names, target]]
    values = np.empty((len(rows) - 1, len(cols)), dtype=np.float64)
    for i, (row, line) in enumerate(zip(rows[1:], lines[1:], strict=True)):
        if len(row) != len(header):
            raise DataError(
                "data.path",
                str(path),
                f"line {line} has {len(row)} fields, the header has {len(header)}",
            )
        for j, c in enumerate(cols):
            cell = row[c].strip()
            try:
                v = float(cell)
            except ValueError:
                v = math.nan
            if not math.isfinite(v):
                raise DataError(
                    "data.path",
                    str(path),
                    f"column {header[c]!r}, line {line}: "
                    f"{cell!r} is not a finite number (missing values are not allowed)",
                )
            values[i, j] = v
    return Dataset(
        X=values[:, :-1],
        y=values[:, -1],
        feature_names=tuple(names),
        target_name=target,
        name=path.stem,
        source=str(path.resolve()),
    )


class Standardizer(NamedTuple):
    """Per-feature affine map x̃ = (x − mean) / scale, fitted on training rows only."""

    mean: np.ndarray
    scale: np.ndarray

    @staticmethod
    def fit(X: np.ndarray, names: tuple[str, ...], *, enabled: bool = True) -> Standardizer:
        """Fit on ``X``; the identity map when disabled. A constant column cannot be scaled."""
        if not enabled:
            return Standardizer(np.zeros(X.shape[1]), np.ones(X.shape[1]))
        scale = X.std(axis=0)
        constant = [n for n, s in zip(names, scale, strict=True) if not s > 0]
        if constant:
            raise DataError(
                "data.features",
                list(names),
                f"column(s) {constant} are constant in "
                "the training rows and cannot be standardized: drop them",
            )
        return Standardizer(X.mean(axis=0), scale)

    def apply(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.scale

    def to_original(self, theta: np.ndarray) -> np.ndarray:
        """Map θ̃ = [b̃, w̃] (any leading axes) to original units: w = w̃/s, b = b̃ − Σ w·mean."""
        theta = np.asarray(theta, dtype=np.float64)
        w = theta[..., 1:] / self.scale
        b = theta[..., 0] - w @ self.mean
        return np.concatenate([b[..., None], w], axis=-1)

    def to_standardized(self, theta: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_original`."""
        theta = np.asarray(theta, dtype=np.float64)
        w = theta[..., 1:] * self.scale
        b = theta[..., 0] + theta[..., 1:] @ self.mean
        return np.concatenate([b[..., None], w], axis=-1)


def holdout_size(n: int, test_fraction: float) -> int:
    """Rows held out by a single split: round(n·fraction), at least one, leaving at least one."""
    return min(max(1, round(n * test_fraction)), n - 1)


def split_indices(key: jax.Array, n: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle the rows once and hold out the first ``holdout_size`` of them."""
    perm = np.asarray(jax.random.permutation(key, n))
    k = holdout_size(n, test_fraction)
    return np.sort(perm[k:]), np.sort(perm[:k])


def fold_indices(key: jax.Array, n: int, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffle once and cut into ``folds`` near-equal parts; each part in turn is the test set."""
    parts = np.array_split(np.asarray(jax.random.permutation(key, n)), folds)
    return [
        (np.sort(np.concatenate(parts[:i] + parts[i + 1 :])), np.sort(p))
        for i, p in enumerate(parts)
    ]


def min_train_rows(n: int, test_fraction: float, folds: int | None) -> int:
    """The fewest training rows any split of ``n`` rows will have."""
    if folds is None:
        return n - holdout_size(n, test_fraction)
    return n - math.ceil(n / folds)


# --- the per-epoch shuffle ---------------------------------------------------------------------
# No permutation is materialized: position p of an epoch's order is row π(p), where π is a keyed
# pseudo-random bijection of [0, n) computed on the fly, so a step derives its batch's rows in
# O(batch) and the loop only needs (epoch, batch) to know where it is.
#
# π is a Feistel network over the mixed-radix domain [0, a·b), a·b ≥ n, a and b ≈ √n: with
# x = L·b + R (L < a, R < b), a round maps x to R·a + (L + F_k(R)) mod a, a bijection whatever
# F_k is; the next round swaps the roles of a and b. Values landing in [n, a·b) (a fraction below
# 1/b) are mapped again until they fall in [0, n) ("cycle walking"), which keeps π a bijection.
SHUFFLE_ROUNDS = 4  # Luby–Rackoff: four rounds of a pseudo-random F give a pseudo-random π


def shuffle_key(key: jax.Array) -> jax.Array:
    """The round keys of one epoch's order, drawn from ``key`` (e.g. ``fold_in(key, epoch)``)."""
    return jax.random.bits(key, (SHUFFLE_ROUNDS,), jnp.uint32)


def _radices(n: int) -> tuple[int, int]:
    """a, b with a·b ≥ n and a·b − n < a ≈ √n: the Feistel domain barely exceeds [0, n).

    Both are at least 16: a few rounds over tiny digits leave the order measurably non-uniform
    (rows of n = 10 favoured some positions), and walking out of a 256-value domain costs little
    at such sizes. Row indices are int32, so n < 2³¹ and both radices are below 2¹⁶.
    """
    a = max(16, math.isqrt(n - 1) + 1)
    return a, max(16, -(-n // a))


def _hash(x: jax.Array) -> jax.Array:
    """A bijective 32-bit mixer ("lowbias32", C. Wellons): every input bit flips half the bits."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _below(h: jax.Array, a: int) -> jax.Array:
    """⌊h·a / 2³²⌋ ∈ [0, a) for uint32 h and a < 2¹⁶: h scaled into [0, a) without a division
    (Lemire's reduction), in 32-bit halves so that it needs no uint64."""
    return ((h >> 16) * a + (((h & 0xFFFF) * a) >> 16)) >> 16


def _feistel(x: jax.Array, round_keys: jax.Array, a: int, b: int) -> jax.Array:
    """One pass of the keyed bijection of [0, a·b) (uint32 in, uint32 out)."""
    left, right = x // b, x % b  # the rounds carry the two digits apart: no division in them
    for r in range(SHUFFLE_ROUNDS):
        mixed = left + _below(_hash(right ^ round_keys[r]), a)  # < 2a: one subtraction reduces it
        left, right = right, jnp.where(mixed >= a, mixed - a, mixed)
        a, b = b, a
    return left * b + right


def shuffled_rows(round_keys: jax.Array, n: int, positions: jax.Array) -> jax.Array:
    """The rows at ``positions`` (each in [0, n)) of the epoch order keyed by ``round_keys``."""
    a, b = _radices(n)
    x = positions.astype(jnp.uint32)
    if a * b == n:
        return _feistel(x, round_keys, a, b).astype(jnp.int32)

    def walk(carry):  # map the positions, then again any value that fell in [n, a·b)
        x, first = carry
        return jnp.where(first | (x >= n), _feistel(x, round_keys, a, b), x), False

    # one copy of the network in the program (it compiles faster): a do-while loop
    x, _ = jax.lax.while_loop(lambda c: c[1] | jnp.any(c[0] >= n), walk, (x, True))
    return x.astype(jnp.int32)


def batch_rows(
    round_keys: jax.Array, n: int, batch_size: int, batch: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Row indices of mini-batch ``batch`` of an epoch, with a 0/1 mask for padding.

    The epoch's last batch is padded with row 0 at weight 0, so that every batch has the same
    shape and the epoch still sees every row exactly once.
    """
    positions = batch * batch_size + jnp.arange(batch_size, dtype=jnp.int32)
    mask = positions < n
    rows = shuffled_rows(round_keys, n, jnp.where(mask, positions, 0))
    return jnp.where(mask, rows, 0), mask


def batch_blocks(
    round_keys: jax.Array, n_blocks: int, blocks_per_batch: int, batch: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Block indices of mini-batch ``batch`` of an epoch over blocks of rows, and their 0/1 mask:
    :func:`batch_rows` with blocks for rows (the epoch visits every block once)."""
    return batch_rows(round_keys, n_blocks, blocks_per_batch, batch)


def epoch_batches(key: jax.Array, n: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """All of one epoch's mini-batches as (batches, batch_size) row indices, and their mask."""
    n_batches = -(-n // batch_size)
    idx, mask = batch_rows(shuffle_key(key), n, n_batches * batch_size, jnp.zeros((), jnp.int32))
    return idx.reshape(n_batches, batch_size), mask.reshape(n_batches, batch_size)
