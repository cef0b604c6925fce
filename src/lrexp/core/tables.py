"""Tables: read CSV, TSV, Parquet or Feather files into float64 NumPy arrays with pyarrow.

Booleans read as 0/1; a missing cell is empty, a pyarrow null spelling (NA, null, ...) or NaN;
text is compared without surrounding blanks. Errors are one line and quote nothing of the file
but column names and the one offending cell.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.parquet as pq

FORMATS = ("csv", "tsv", "parquet", "feather")
CATEGORICAL = ("error", "onehot")
_EXTENSIONS = {".csv": "csv", ".txt": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet"}
_EXTENSIONS |= {".pq": "parquet", ".feather": "feather", ".arrow": "feather", ".ipc": "feather"}
_DELIMITERS = (",", "\t", ";", "|")  # sniffing order: the first wins a tie
_SAMPLE = 1 << 16
_NOT_TEXT = "is not UTF-8 text (binary, or another encoding)"
_NUMERIC = (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal, pa.types.is_boolean)
_F64 = pa.float64()

Place = Callable[[str, int], str]  # (column, row) -> "'abc' (column 'b', line 7)"
Columns = dict[str, pa.ChunkedArray]


class TableError(ValueError):
    """Unusable data: names the ``data.*`` key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r}: {allowed}")


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


def _bad(path: Path, problem: str) -> TableError:
    """Return the error for a file that cannot be used as it is."""
    return TableError("data.path", str(path), problem)


def format_of(path: str | Path) -> str | None:
    """Return the format the file's extension names, or None."""
    return _EXTENSIONS.get(Path(path).suffix.lower())


def _format(path: Path, fmt: str | None) -> str:
    """Return the format: ``fmt``, else the one the file's extension names."""
    if (fmt := fmt or format_of(path)) not in FORMATS:
        known = f"{', '.join(FORMATS)}, or a file named {', '.join(_EXTENSIONS)}"
        raise TableError("data.format", fmt, f"must be one of {known}, unlike {path.name!r}")
    return fmt


def _read_csv(
    path: Path, delimiter: str | None, target: str, features: list[str] | None
) -> tuple[pa.Table, Place]:
    """Check the header in Python, then read only the used columns with pyarrow."""
    delimiter = _sniff(path, delimiter)
    if len(delimiter) != 1 or delimiter in '"\r\n':
        raise TableError("data.delimiter", delimiter, "must be one character, no quote or newline")
    try:
        raw = next(_csv_rows(path, delimiter, "strict"))[1]
    except (StopIteration, UnicodeError, csv.Error) as exc:
        problem = _NOT_TEXT if isinstance(exc, UnicodeError) else "has no readable header row"
        raise _bad(path, problem) from None
    names = [h.strip() for h in raw]
    used = [*_select(path, names, target, features), target]
    index = {n: i for i, n in enumerate(names)}  # a dict, not list.index: 1e5 columns stay linear
    convert = pacsv.ConvertOptions(include_columns=[raw[index[c]] for c in used])
    convert.strings_can_be_null = True  # an empty text cell is missing, as an empty number is
    # A block must hold a whole row, and wide files have rows longer than the 1 MiB default.
    options = pacsv.ReadOptions(block_size=max(1 << 20, 16 * sum(len(h) + 1 for h in raw)))
    try:
        table = pacsv.read_csv(path, options, pacsv.ParseOptions(delimiter=delimiter), convert)
        if dates := [i for i, t in enumerate(table.schema.types) if pa.types.is_temporal(t)]:
            # again as text: pyarrow would print a date back unlike the file (a category's name)
            convert.column_types = {convert.include_columns[i]: pa.string() for i in dates}
            table = pacsv.read_csv(path, options, pacsv.ParseOptions(delimiter=delimiter), convert)
    except pa.ArrowInvalid as exc:
        raise _parse_error(path, delimiter, len(names), exc) from None
    if any(pa.types.is_binary(t) or pa.types.is_large_binary(t) for t in table.schema.types):
        raise _bad(path, _NOT_TEXT)  # pyarrow's type for a column with bad UTF-8

    def place(column: str, row: int) -> str:
        line, cells = next(itertools.islice(_csv_rows(path, delimiter), row + 1, None))
        return f"{_cap(cells[index[column]])!r} (column {column!r}, line {line})"

    return table.rename_columns(used), place


def _sniff(path: Path, delimiter: str | None) -> str:
    """Refuse an empty or binary file; pick a delimiter that splits its first 64 KiB evenly."""
    with path.open("rb") as fh:
        head, whole = fh.read(_SAMPLE), not fh.peek(1)
    if not head.removeprefix(codecs.BOM_UTF8).strip():
        raise _bad(path, "is empty: needs a header row and data rows")
    try:
        if b"\0" in head:
            raise UnicodeError
        lines = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=whole).splitlines()
    except UnicodeError:
        raise _bad(path, _NOT_TEXT) from None
    if delimiter:
        return delimiter
    lines = [ln for ln in (lines if whole else lines[:-1] or lines) if ln.strip()][:100]
    best, most = ",", 1  # the one that cuts every line into the same, largest, number of fields
    for d in _DELIMITERS:
        try:
            widths = {len(row) for row in csv.reader(lines, delimiter=d)}
        except csv.Error:
            continue
        if len(widths) == 1 and (width := widths.pop()) > most:
            best, most = d, width
    return best


def _csv_rows(
    path: Path, delimiter: str, errors: str = "replace"
) -> Iterator[tuple[int, list[str]]]:
    """Yield each non-blank row, header first, with its first file line (slow: for errors)."""
    with path.open(newline="", encoding="utf-8-sig", errors=errors) as fh:
        reader, end = csv.reader(fh, delimiter=delimiter), 0
        for row in reader:
            start, end = end + 1, reader.line_num
            if row:  # pyarrow skips blank lines too
                yield start, row


def _parse_error(path: Path, delimiter: str, width: int, exc: Exception) -> TableError:
    """Name the line of a row pyarrow could not parse; pyarrow's message would quote the row."""
    if re.search(r"Expected \d+ columns, got \d+", str(exc)):
        for line, cells in itertools.islice(_csv_rows(path, delimiter), 1, None):
            if len(cells) != width:
                return _bad(path, f"line {line} has {len(cells)} fields, the header has {width}")
    return _bad(path, f"cannot be parsed as delimited text ({str(exc).split(':')[0][:60]})")


def _read_arrow(
    path: Path, kind: str, target: str, features: list[str] | None
) -> tuple[pa.Table, Place]:
    """Read the used columns of a Parquet or Feather (Arrow IPC) file."""
    try:  # memory-mapped: no copy into read buffers
        if kind == "parquet":  # ParquetFile.read skips read_table's datasets layer
            with pq.ParquetFile(path, memory_map=True) as source:
                table = source.read(_used(path, source.schema_arrow, target, features))
        else:
            with pa.memory_map(str(path)) as source:
                used = _used(path, pa.ipc.open_file(source).schema, target, features)
            table = feather.read_table(path, columns=used, memory_map=True)
    except (pa.ArrowException, OSError) as exc:
        what = "a Parquet" if kind == "parquet" else "a Feather (Arrow IPC)"
        raise _bad(path, f"is not {what} file, or is damaged ({type(exc).__name__})") from None

    def place(column: str, row: int) -> str:
        return f"{_cap(table.column(column)[row].as_py())!r} (column {column!r}, row {row + 1})"

    return table, place


def _used(path: Path, schema: pa.Schema, target: str, features: list[str] | None) -> list[str]:
    """Return the columns to read, the target last; a saved pandas index is no feature."""
    index = (schema.pandas_metadata or {}).get("index_columns", [])  # names, or ranges
    if features is None and index:
        features = [n for n in schema.names if n != target and n not in index]
    return [*_select(path, schema.names, target, features), target]


def _select(path: Path, names: list[str], target: str, features: list[str] | None) -> list[str]:
    """Check the column names and return the feature columns: all but the target by default."""
    if "" in names:
        raise _bad(path, f"column {names.index('') + 1} has no name")
    if twice := [n for n, k in Counter(names).items() if k > 1]:
        raise _bad(path, f"has duplicate column names: {_names(twice)}")
    known = set(names)
    if target not in known:
        raise TableError("data.target", target, f"must be a column of {path.name}: {_names(names)}")
    chosen = [n for n in names if n != target] if features is None else list(features)
    if missing := [f for f in chosen if f not in known]:
        msg = f"{_names(missing)} not among the columns of {path.name}: {_names(names)}"
        raise TableError("data.features", features, msg)
    if not chosen:
        raise TableError("data.features", features, f"{path.name} has no column besides the target")
    if target in chosen or len(set(chosen)) != len(chosen):
        raise TableError("data.features", features, "must be distinct and not the target")
    return chosen


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


def _cap(value: object, limit: int = 40) -> str:
    """Return a cell's text cut to ``limit`` characters."""
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _names(names: Sequence[str], limit: int = 20) -> str:
    """List column names, at most ``limit`` of them."""
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"[{shown}, ... ({len(names) - limit} more)]" if len(names) > limit else f"[{shown}]"
