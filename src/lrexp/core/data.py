"""Data on the host: generators and a file loader producing a :class:`Dataset`; standardization
and train/test splits. (The per-epoch shuffle of the compiled loop is in :mod:`lrexp.core.shuffle`.)

Data is held on the host in float64 (the generators draw it with JAX in float64) and cast to the
training dtype only when it is handed to the compiled loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lrexp.core.shuffle import epoch_batches  # noqa: F401  (scripts/bench.py takes it from here)


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
    # One-hot encoded text columns: column → its categories, sorted; the first has no feature
    # (the baseline), each other one the feature "column=category".
    categories: dict[str, list[str]] = field(default_factory=dict)
    dropped_rows: int = 0  # rows with a missing cell left out (data.dropna=true)


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


def load_file(
    path: str | Path,
    *,
    target: str,
    features: list[str] | None = None,
    fmt: str | None = None,
    delimiter: str | None = None,
    categorical: str = "error",
    dropna: bool = False,
) -> Dataset:
    """Read a CSV, TSV, Parquet or Feather file (see :func:`lrexp.core.tables.read_table`)."""
    from lrexp.core import tables  # pyarrow: imported only when a file is read

    path = Path(path)
    try:
        t = tables.read_table(
            path, target=target, features=features, fmt=fmt, delimiter=delimiter,
            categorical=categorical, dropna=dropna,
        )  # fmt: skip
    except tables.TableError as e:
        raise DataError(e.key, e.value, e.allowed) from None
    return Dataset(
        X=t.X,
        y=t.y,
        feature_names=t.feature_names,
        target_name=t.target_name,
        name=path.stem,
        source=str(path.resolve()),
        categories=t.categories,
        dropped_rows=t.dropped_rows,
    )


def input_columns(feature_names: tuple[str, ...], categories: dict[str, list[str]]) -> list[str]:
    """The columns new rows give a model of these features: each one-hot group as its column."""
    indicator = {f"{c}={v}": c for c, cats in categories.items() for v in cats[1:]}
    return list(dict.fromkeys([indicator.get(f, f) for f in feature_names] + list(categories)))


def raw_rows(
    X: np.ndarray, feature_names: tuple[str, ...], categories: dict[str, list[str]]
) -> list[list[float | str]]:
    """Rows of ``X`` as the file held them: each one-hot group back to its category's name."""
    columns = input_columns(feature_names, categories)
    index = {f: j for j, f in enumerate(feature_names)}
    out = []
    for row in np.asarray(X, dtype=np.float64):
        raw: dict[str, float | str] = {f: float(row[j]) for f, j in index.items()}
        for c, cats in categories.items():
            hot = [v for v in cats[1:] if raw.get(f"{c}={v}") == 1.0]
            raw[c] = hot[0] if hot else cats[0]
        out.append([raw[c] for c in columns])
    return out


def _moments(v: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population standard deviation along ``axis``; where they overflow (data as large
    as 1e200, whose squares or sums pass float64's range), computed on the values scaled by their
    largest magnitude instead."""
    v = np.asarray(v, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        mean, std = v.mean(axis=axis), v.std(axis=axis)
        if np.all(np.isfinite(mean)) and np.all(np.isfinite(std)):
            return mean, std
        big = np.max(np.abs(v), axis=axis)
        safe = np.where((big > 0) & np.isfinite(big), big, 1.0)
        mean = safe * np.mean(v / safe, axis=axis)
        d = v - mean
        big = np.max(np.abs(d), axis=axis)
        safe = np.where((big > 0) & np.isfinite(big), big, 1.0)
        return mean, np.where(big > 0, safe * np.std(d / safe, axis=axis), 0.0)


class Standardizer(NamedTuple):
    """Affine maps fitted on training rows only: per feature x̃ = (x − mean) / scale, and for the
    target ỹ = (y − y_mean) / y_scale (the identity, 0 and 1, unless :meth:`with_target` set it).

    θ̃ = [b̃, w̃] fitted on (x̃, ỹ) maps to the data's original units as
    w = y_scale · w̃ / scale, b = y_mean + y_scale · b̃ − w · mean (:meth:`to_original`).
    """

    mean: np.ndarray
    scale: np.ndarray
    y_mean: float = 0.0
    y_scale: float = 1.0

    @staticmethod
    def fit(X: np.ndarray, names: tuple[str, ...], *, enabled: bool = True) -> Standardizer:
        """Fit on ``X``; the identity map when disabled. A constant column cannot be scaled."""
        if not enabled:
            return Standardizer(np.zeros(X.shape[1]), np.ones(X.shape[1]))
        mean, scale = _moments(X)
        constant = [n for n, s in zip(names, scale, strict=True) if not s > 0]
        if constant:
            raise DataError(
                "data.features",
                list(names),
                f"column(s) {constant} are constant in "
                "the training rows and cannot be standardized: drop them",
            )
        return Standardizer(mean, scale)

    def with_target(
        self, y: np.ndarray, *, key: str, value: object, enabled: bool = True
    ) -> Standardizer:
        """Also standardize the target, with the mean and scale of the training targets ``y``.

        A constant target (σ = 0) has nothing to fit: a :class:`DataError` naming ``key``."""
        if not enabled:
            return self
        mean, scale = _moments(y)
        if not (math.isfinite(mean) and math.isfinite(scale)):
            raise DataError(key, value, f"the target's statistics overflow float64 ({mean:g})")
        if not scale > 0:
            raise DataError(
                key,
                value,
                f"the target is constant in the training rows (all {mean:g} in float64, σ = 0): "
                "there is nothing to fit",
            )
        return self._replace(y_mean=np.float64(mean), y_scale=np.float64(scale))

    def apply(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.scale

    def apply_target(self, y: np.ndarray) -> np.ndarray:
        """ỹ = (y − y_mean) / y_scale."""
        return (np.asarray(y, dtype=np.float64) - self.y_mean) / self.y_scale

    def to_original(self, theta: np.ndarray) -> np.ndarray:
        """Map θ̃ = [b̃, w̃] (any leading axes) to original units:
        w = y_scale · w̃ / s, b = y_mean + y_scale · b̃ − Σ w · mean."""
        theta = np.asarray(theta, dtype=np.float64)
        w = self.y_scale * theta[..., 1:] / self.scale
        b = self.y_mean + self.y_scale * theta[..., 0] - w @ self.mean
        return np.concatenate([b[..., None], w], axis=-1)

    def to_standardized(self, theta: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_original`."""
        theta = np.asarray(theta, dtype=np.float64)
        w = theta[..., 1:] * self.scale / self.y_scale
        b = (theta[..., 0] + theta[..., 1:] @ self.mean - self.y_mean) / self.y_scale
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


def stream_file(path: str | Path, *, target: str, features: list[str] | None, **split):
    """Open a Parquet file or directory for a streamed pass (:mod:`lrexp.core.stream`); with
    ``split`` (seed, test_fraction, folds, dropna, on_batch) also run the pass.
    Returns (source, pass or None); a bad file is a :class:`DataError`."""
    from lrexp.core import stream, tables  # pyarrow: imported only when a file is read

    try:
        source = stream.open_source(Path(path), target=target, features=features)
        return source, stream.stream_pass(source, **split) if split else None
    except tables.TableError as e:
        raise DataError(e.key, e.value, e.allowed) from None


def standardizer_from(
    mean: np.ndarray, std: np.ndarray, names: tuple[str, ...], *, features: bool, target: bool,
    key: str, value: object,
) -> Standardizer:  # fmt: skip
    """A :class:`Standardizer` from the columns' moments [x, y] (a streamed pass's), refusing a
    constant column or target as :meth:`Standardizer.fit` and :meth:`~Standardizer.with_target`."""
    m = len(names)
    if features and (constant := [n for n, s in zip(names, std[:m], strict=True) if not s > 0]):
        raise DataError(
            "data.features", list(names), f"column(s) {constant} are constant in the training "
            "rows and cannot be standardized: drop them",
        )  # fmt: skip
    if target and not std[m] > 0:
        raise DataError(key, value, f"the target is constant in the training rows (all "
                        f"{mean[m]:g} in float64, σ = 0): there is nothing to fit")  # fmt: skip
    st = Standardizer(mean[:m], std[:m]) if features else Standardizer(np.zeros(m), np.ones(m))
    return st._replace(y_mean=np.float64(mean[m]), y_scale=np.float64(std[m])) if target else st
