"""Tables: read CSV, TSV, Parquet or Feather files into float64 NumPy arrays with pyarrow.

Booleans read as 0/1; a missing cell is empty, a pyarrow null spelling (NA, null, ...) or NaN;
text is compared without surrounding blanks. Errors are one line and quote nothing of the file
but column names and the one offending cell.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lrexp.core.table_files import (  # noqa: F401  (re-exported)
    FORMATS,
    Place,
    TableError,
    _bad,
    _cap,
    _format,
    _names,
    _read_arrow,
    _read_csv,
    _select,
    _used,
    format_of,
)

CATEGORICAL = ("error", "onehot")


_NUMERIC = (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal, pa.types.is_boolean)


_F64 = pa.float64()


Columns = dict[str, pa.ChunkedArray]


@dataclass(frozen=True)
class Table:
    """Rows ``X`` (n, M) and targets ``y`` (n,) in float64, with the encoding that made them."""

    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]  # a one-hot column is named "column=category"
    target_name: str
    categories: dict[str, list[str]]  # sorted; the first is the baseline and has no column
    dropped_rows: int


def read_table(
    path: str | Path,
    *,
    target: str,
    features: list[str] | None = None,
    fmt: str | None = None,
    delimiter: str | None = None,
    categorical: str = "error",
    dropna: bool = False,
) -> Table:
    """Read the target and the feature columns (all others by default) as float64 arrays."""
    path = Path(path)
    if categorical not in CATEGORICAL:
        raise TableError("data.categorical", categorical, "must be 'error' or 'onehot'")
    kind = _format(path, fmt)
    if not path.is_file():
        raise _bad(path, "is not a file")
    if kind in ("csv", "tsv"):
        delimiter = delimiter or ("\t" if kind == "tsv" else None)
        table, place = _read_csv(path, delimiter, target, features)
    elif delimiter is not None:
        raise TableError("data.delimiter", delimiter, f"applies to csv and tsv files, not {kind}")
    else:
        table, place = _read_arrow(path, kind, target, features)
    if table.num_rows == 0:
        raise _bad(path, "has column names but no data rows")
    numbers, texts = _split(table, target, categorical, place)
    feats = table.column_names[:-1]
    nums = [c for c in feats if c in numbers]
    X, finite = _matrix([numbers[c] for c in nums], table.num_rows)
    y = np.array(pc.cast(numbers[target], _F64, safe=False).to_numpy())  # a copy: writable
    keep = None
    if not (finite and np.isfinite(y).all()) or any(t.null_count for t in texts.values()):
        values = dict(zip(nums, X.T, strict=True)) | {target: y}
        keep = _missing(path, values, texts, place, dropna)
    if keep is not None:
        X, y = X[keep], y[keep]
        texts = {c: t.filter(pa.array(keep)) for c, t in texts.items()}
    names, categories = tuple(feats), {}
    if texts:
        X, names, categories = _onehot(X, feats, texts)
    dropped = 0 if keep is None else int(keep.size - keep.sum())
    return Table(X, y, names, target, categories, dropped)


def _split(table: pa.Table, target: str, categorical: str, place: Place) -> tuple[Columns, Columns]:
    """Sort the columns into numbers and (one-hot) text, or refuse a column that is not numeric."""
    numbers, texts = {}, {}
    for name in table.column_names:
        column, bad = _as_number(table.column(name))
        if column is not None:
            numbers[name] = column
        elif name == target:
            msg = f"must be numeric: {place(name, bad)} is not a number"
            raise TableError("data.target", target, msg)
        elif categorical == "error":
            msg = f"fix it, or set data.categorical=onehot to one-hot encode column {name!r}"
            raise TableError(
                "data.categorical", categorical, f"{place(name, bad)} is not a number: {msg}"
            )
        else:
            texts[name] = _clean(table.column(name))
    return numbers, texts


def encode_onehot(
    columns: Mapping[str, Any],
    feature_names: Sequence[str],
    categories: Mapping[str, Sequence[str]],
) -> np.ndarray:
    """Build new rows' float64 matrix from raw columns as :func:`read_table` encoded its file."""
    indicator = {f"{c}={v}": (c, v) for c, cats in categories.items() for v in cats[1:]}
    texts: dict[str, np.ndarray] = {}
    out = []
    for name in feature_names:
        column, value = indicator.get(name, (name, None))
        if column not in columns:
            raise TableError("data.features", column, "is missing from the new rows")
        if value is None:
            out.append(np.asarray(columns[column], dtype=np.float64))
            continue
        if column not in texts:
            texts[column] = np.array([str(v).strip() for v in columns[column]], dtype=object)
            unknown = sorted(set(texts[column]) - set(categories[column]))
            if unknown:  # the baseline has no column, so an unknown value would pass as it
                msg = f"is no category of column {column!r}: {_names(categories[column])}"
                raise TableError("data.categorical", _cap(unknown[0]), msg)
        out.append(texts[column] == value)
    return np.ascontiguousarray(np.column_stack(out), dtype=np.float64)


def _as_number(column: pa.ChunkedArray) -> tuple[pa.ChunkedArray | None, int]:
    """Return the column in a type that casts to float64, or None and its first non-number row."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_null(column.type) or any(test(column.type) for test in _NUMERIC):
        return column, -1
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return None, max(0, pc.index(column.is_valid(), True).as_py())  # dates, lists, ...
    text = _clean(column)
    try:  # read as text, yet every cell may be a number (" 1.5 ", a type inferred per block)
        return pc.cast(text, _F64), -1
    except pa.ArrowInvalid:
        lo, hi = 0, len(text)  # casting text[lo:hi] fails: bisect, one vectorized cast a step
        while hi - lo > 1:
            mid = (lo + hi) // 2
            try:
                pc.cast(text.slice(lo, mid - lo), _F64)
                lo = mid
            except pa.ArrowInvalid:
                hi = mid
        return None, lo


def _clean(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Return the column as text without surrounding blanks; a blank cell becomes missing."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    text = pc.utf8_trim_whitespace(pc.cast(column, pa.string()))
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)


def _matrix(columns: list[pa.ChunkedArray], n: int) -> tuple[np.ndarray, bool]:
    """Stack numeric columns into a C-ordered (n, k) float64 array (nulls as NaN); all finite?"""
    X, start, finite = np.empty((n, len(columns))), 0, True
    if columns:  # rows in C++ (to_tensor): a column-strided NumPy copy is 2-3x slower
        table = pa.table({str(j): pc.cast(c, _F64, safe=False) for j, c in enumerate(columns)})
        for batch in table.to_batches(max_chunksize=1 << 16):  # a few MB: checked in cache
            part = X[start : start + batch.num_rows]
            part[...] = batch.to_tensor(null_to_nan=True).to_numpy()
            finite, start = finite and bool(np.isfinite(part).all()), start + batch.num_rows
    return X, finite


def _missing(
    path: Path, values: dict[str, np.ndarray], texts: Columns, place: Place, dropna: bool
) -> np.ndarray:
    """Refuse infinities; refuse missing cells, or return the mask of the rows to keep."""
    for name, v in values.items():
        if (inf := np.flatnonzero(np.isinf(v))).size:
            raise _bad(path, f"{place(name, int(inf[0]))} is not a finite number")
    masks = {n: np.isnan(v) for n, v in values.items()}
    masks |= {n: t.is_null().to_numpy() for n, t in texts.items()}
    rows = np.logical_or.reduce(list(masks.values()))
    if not dropna:
        counts = {n: int(m.sum()) for n, m in masks.items() if m.any()}
        per = ", ".join(f"{n!r}: {k}" for n, k in itertools.islice(counts.items(), 20))
        more = f", ... ({len(counts) - 20} more columns)" if len(counts) > 20 else ""
        first = int(np.argmax(rows))
        column = next(n for n, m in masks.items() if m[first])
        msg = (
            f"missing cells per column {{{per}{more}}}, the first {place(column, first)}: "
            "set data.dropna=true to drop those rows"
        )
        raise TableError("data.dropna", dropna, msg)
    if rows.all():
        raise TableError("data.dropna", dropna, f"every row of {path.name} has a missing cell")
    return ~rows


def _onehot(
    X: np.ndarray, feats: list[str], texts: Columns
) -> tuple[np.ndarray, tuple[str, ...], dict[str, list[str]]]:
    """Put a 0/1 column per category but the first in place of each text column."""
    codes, categories = {}, {}
    for name, text in texts.items():
        encoded = pc.dictionary_encode(text.combine_chunks())
        values = encoded.dictionary.to_pylist()
        order = sorted(range(len(values)), key=values.__getitem__)
        rank = np.empty(len(values), dtype=np.intp)
        rank[order] = np.arange(len(values))
        categories[name] = [values[i] for i in order]
        codes[name] = rank[encoded.indices.to_numpy()]
    # The first sorted category is the baseline: a column for every category would sum to the
    # bias column (collinear, so no unique least-squares fit).
    width = sum(len(categories[c]) - 1 if c in codes else 1 for c in feats)
    out, names, numeric = np.empty((len(X), width)), [], iter(X.T)
    for name in feats:
        if name in codes:
            k = len(categories[name]) - 1
            out[:, len(names) : len(names) + k] = codes[name][:, None] == np.arange(1, k + 1)
            names += [f"{name}={v}" for v in categories[name][1:]]
        else:
            out[:, len(names)] = next(numeric)
            names.append(name)
    if (twice := [n for n, k in Counter(names).items() if k > 1]) or not names:
        msg = f"one-hot names clash: {_names(twice)}" if twice else "no column is left"
        raise TableError("data.features", feats, msg)
    return out, tuple(names), categories
