"""Data larger than memory: one streaming pass over Parquet record batches into float64 sums.

The pass reads the selected columns batch by batch and keeps, per part of the split, the Gram
matrix G = Σ dᵀd of the rows d = [1, z − c], z = [x, y] (one matrix holds n, Σx, Σy, XᵀX, Xᵀy
and yᵀy); ``c`` is the first batch's column means, a shift that keeps the sums accurate for data
far from zero. Memory is O(M²) plus one batch. Full-batch training needs nothing else: TSSE is the
quadratic c − 2θ̃ᵀb + θ̃ᵀGθ̃ of these sums, and standardization is an affine map of them
(:func:`lrexp.core.gram.affine_gram`).

The split is a rule per row, so that one pass can apply it: row r (its index in the files' order,
files sorted by name) draws u = splitmix64(r + seed·φ) / 2⁶⁴ ∈ [0, 1). With a held-out test set it
is a test row when u < test_fraction; with k folds it belongs to fold ⌊u·k⌋. Each row is held out
with probability test_fraction, independently: the test set's size varies around round(n·f) (the
in-memory split holds out exactly that many, chosen by a permutation), and the two pick different
rows. Pure NumPy and pyarrow: nothing here imports JAX, prints or logs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lrexp.core.table_files import TableError, _bad, stream_columns

BATCH_ROWS = 1 << 16  # rows per record batch: 11 float64 columns → 5.5 MiB
SAMPLE_ROWS = 1000  # the first rows, kept for the model's input example and the plots
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
# How the pass reads: a file's row groups in turn, pulled as the batches are taken, and no
# pre-buffering. On a 0.9 GB file (row groups of 1e6 rows) here, with a consumer as slow as the
# sums, pyarrow.dataset's scanner held 0.6–1.3 GiB (pre-buffered, and decoding ahead); this 0.3.
READ = {"pre_buffer": False, "memory_map": False}


class Sums(NamedTuple):
    """Float64 sums of a pass: per part p, G[p] = Σ dᵀd over its rows, d = [1, z − shift]."""

    shift: np.ndarray  # (M+1,) subtracted from every row z = [x, y] before summing
    gram: np.ndarray  # (parts, M+2, M+2)
    low: np.ndarray  # (M+1,) each column's smallest value
    high: np.ndarray  # (M+1,) and its largest

    @property
    def n(self) -> np.ndarray:
        """Rows per part."""
        return self.gram[:, 0, 0]


def empty(shift: np.ndarray, parts: int) -> Sums:
    """Sums of no rows, with the given shift (take the first batch's column means)."""
    k = len(shift) + 1
    return Sums(
        np.asarray(shift, np.float64),
        np.zeros((parts, k, k)),
        np.full(len(shift), np.inf),
        np.full(len(shift), -np.inf),
    )


def accumulate(sums: Sums, Z: np.ndarray, part: np.ndarray) -> Sums:
    """Add the rows ``Z`` (b, M+1) = [x, y], each in part ``part[i]``, to ``sums``; pure.

    One product of the augmented rows for all of them, one for each part but the first (whose
    Gram is the rest's difference): a held-out 20 % costs 0.2 of a product more. Column-major
    ``Z`` (as :func:`batches` gives it) is read along its columns, several times faster here."""
    b, k = Z.shape[0], Z.shape[1] + 1
    D = np.empty((b, k), order="F")
    D[:, 0] = 1.0
    np.subtract(Z, sums.shift, out=D[:, 1:])
    total = D.T @ D
    rows_of = (D.T.take(np.flatnonzero(part == p), axis=1) for p in range(1, sums.gram.shape[0]))
    grams = [None] + [R @ R.T for R in rows_of]  # R: a part's rows, feature-major
    grams[0] = total - sum(grams[1:], np.zeros((k, k)))
    low = np.minimum(sums.low, Z.min(axis=0, initial=np.inf))
    high = np.maximum(sums.high, Z.max(axis=0, initial=-np.inf))
    return sums._replace(gram=sums.gram + np.stack(grams), low=low, high=high)


def merge(a: Sums, b: Sums) -> Sums:
    """The sums of two disjoint sets of rows (``b`` re-centred on ``a``'s shift)."""
    delta = b.shift - a.shift  # d_a = d_b + delta: G_a = T G_b Tᵀ, T = [[1, 0], [delta, I]]
    T = np.eye(len(delta) + 1)
    T[1:, 0] = delta
    return Sums(
        a.shift, a.gram + T @ b.gram @ T.T, np.minimum(a.low, b.low), np.maximum(a.high, b.high)
    )


def assign(rows: np.ndarray, seed: int, *, test_fraction: float, folds: int | None) -> np.ndarray:
    """Each row's part: 1 (test) or 0 (train) for a held-out split, its fold for ``folds``."""
    x = rows.astype(np.uint64)  # splitmix64 of row + seed·φ, in place: a few passes, no copies
    x += np.uint64(seed & 0xFFFFFFFF) * _GOLDEN
    for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        x ^= x >> np.uint64(shift)
        x *= np.uint64(factor)
    x ^= x >> np.uint64(31)
    x >>= np.uint64(11)  # 53 bits: exact in float64
    u = x.astype(np.float64)
    u *= 1.0 / float(1 << 53)
    if folds is None:
        return (u < test_fraction).view(np.int8)
    return np.minimum((u * folds).astype(np.int64), folds - 1).astype(np.int8)


def split_grams(sums: Sums, i: int, folds: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Split ``i``'s (train, test) Grams: parts 0 and 1, or every fold but ``i`` and fold ``i``."""
    if folds is None:
        return sums.gram[0], sums.gram[1]
    return sums.gram.sum(axis=0) - sums.gram[i], sums.gram[i]


# --- the files and the pass ----------------------------------------------------------------------
def parquet_files(path: Path) -> list[Path]:
    """A Parquet file, or the Parquet files of a directory (and below), sorted by path."""
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.suffix in (".parquet", ".pq") and p.is_file())
    if not files:
        raise _bad(path, "is a directory without .parquet files")
    return files


class Source(NamedTuple):
    """The files of a streamed data set and the columns read from them, the target last."""

    files: list[Path]
    columns: list[str]
    rows: int  # from the files' metadata
    bytes: int  # on disk

    @property
    def features(self) -> list[str]:
        return self.columns[:-1]


def open_source(path: Path, *, target: str, features: list[str] | None) -> Source:
    """Check the files' schema (numeric columns) and count their rows from the metadata."""
    files = parquet_files(path)
    try:  # the footers only: a file's schema and row count
        footers = [pq.ParquetFile(f, **READ).metadata for f in files]
        schema = footers[0].schema.to_arrow_schema()
        columns = stream_columns(files[0], schema, target, features)
        rows = sum(m.num_rows for m in footers)
    except (pa.ArrowException, OSError) as exc:
        raise _bad(path, f"is not Parquet, or is damaged ({type(exc).__name__})") from None
    for f, m in zip(files, footers, strict=True):
        if not set(columns) <= set(m.schema.names):
            missing = sorted(set(columns) - set(m.schema.names))
            raise _bad(f, f"lacks the column(s) {missing} that {files[0].name} has")
    for name in columns:
        kind = schema.field(name).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                or pa.types.is_boolean(kind)):  # fmt: skip
            raise TableError(
                "data.features" if name != target else "data.target",
                name,
                f"column {name!r} is {kind}: streamed data takes numeric columns only",
            )
    return Source(files, columns, rows, sum(f.stat().st_size for f in files))


def batches(source: Source, batch_rows: int = BATCH_ROWS) -> Iterator[np.ndarray]:
    """The selected columns as float64 (b, M+1) column-major blocks, in the files' order; a null
    is NaN. One file at a time, read by row group as the batches are taken (:data:`READ`)."""
    for path in source.files:
        with pq.ParquetFile(path, **READ) as f:
            # one thread: the columns decoded in parallel took 20 % more memory, no less time
            rows = f.iter_batches(batch_size=batch_rows, columns=source.columns, use_threads=False)
            for batch in rows:
                if batch.num_rows:
                    Z = np.empty((batch.num_rows, len(source.columns)), order="F")
                    for j, column in enumerate(batch.columns):
                        Z[:, j] = column.to_numpy(zero_copy_only=False)
                    yield Z


class Pass(NamedTuple):
    """What one pass over the files leaves: the sums, the first rows and the rows dropped."""

    sums: Sums
    sample: np.ndarray  # (≤ SAMPLE_ROWS, M+1): the first rows kept
    sample_part: np.ndarray  # their parts
    dropped: int  # rows with a missing value, left out (dropna)


def stream_pass(
    source: Source,
    *,
    seed: int,
    test_fraction: float,
    folds: int | None,
    dropna: bool,
    on_batch: Callable[[int, int, float], None] | None = None,
    batch_rows: int = BATCH_ROWS,
) -> Pass:
    """One pass over ``source``: the sums of every part, with the split rule of :func:`assign`.

    ``on_batch(rows_read, bytes_read, seconds)`` is called after each batch (for progress)."""
    parts = 2 if folds is None else folds
    sums, sample, sample_part, dropped, row0 = None, [], [], 0, 0
    start = time.perf_counter()
    for Z in batches(source, batch_rows):
        rows = np.arange(row0, row0 + len(Z))
        part = assign(rows, seed, test_fraction=test_fraction, folds=folds)
        row0 += len(Z)
        if sums is None:
            sums = empty(np.nan_to_num(np.nanmean(Z, axis=0)), parts)
        added = accumulate(sums, Z, part)
        if not np.isfinite(added.gram).all():  # a missing or infinite value (or an overflow)
            bad = ~np.isfinite(Z).all(axis=1)
            if not dropna or not bad.any() or not np.isnan(Z[bad]).any(axis=1).all():
                raise _missing(source, Z, bad, row0 - len(Z), dropna)
            Z, part, dropped = Z[~bad], part[~bad], dropped + int(bad.sum())
            added = accumulate(sums, Z, part)
        sums = added
        if (keep := SAMPLE_ROWS - sum(len(s) for s in sample)) > 0:  # copies: Z goes
            sample, sample_part = [*sample, Z[:keep].copy()], [*sample_part, part[:keep].copy()]
        if on_batch is not None:
            on_batch(row0, row0 * len(source.columns) * 8, time.perf_counter() - start)
    if sums is None or not sums.n.sum():
        raise _bad(source.files[0], "has no rows to train on")
    return Pass(sums, np.concatenate(sample), np.concatenate(sample_part), dropped)


def _missing(source: Source, Z: np.ndarray, bad: np.ndarray, row0: int, dropna: bool) -> TableError:
    """The error for the first row with a missing or infinite value."""
    if not bad.any():
        return _bad(source.files[0], "has values whose squares overflow float64")
    i = int(np.argmax(bad))
    j = int(np.argmax(~np.isfinite(Z[i])))
    column, value = source.columns[j], Z[i, j]
    allowed = "set data.dropna=true to drop such rows" if np.isnan(value) and not dropna else ""
    what = "a missing value" if np.isnan(value) else f"{value}"
    return _bad(
        source.files[0] if len(source.files) == 1 else source.files[0].parent,
        f"row {row0 + i + 1} has {what} in column {column!r}{': ' + allowed if allowed else ''}",
    )
