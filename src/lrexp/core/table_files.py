"""Reading a table file's bytes with pyarrow: its format by extension, a CSV's delimiter sniffed,
and every read failure as one line naming the file's key (:class:`TableError`), with the place of
a bad cell (the CSV line, or the Parquet/Feather row) found only when one is bad.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.parquet as pq

FORMATS = ("csv", "tsv", "parquet", "feather")
_EXTENSIONS = {".csv": "csv", ".txt": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet"}
_EXTENSIONS |= {".pq": "parquet", ".feather": "feather", ".arrow": "feather", ".ipc": "feather"}
_DELIMITERS = (",", "\t", ";", "|")  # sniffing order: the first wins a tie
_SAMPLE = 1 << 16
_NOT_TEXT = "is not UTF-8 text (binary, or another encoding)"
Place = Callable[[str, int], str]  # (column, row) -> "'abc' (column 'b', line 7)"


class TableError(ValueError):
    """Unusable data: names the ``data.*`` key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r}: {allowed}")


def _cap(value: object, limit: int = 40) -> str:
    """Return a cell's text cut to ``limit`` characters."""
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


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
        table = _all_numbers(path, options, delimiter, convert)
        if table is None:
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


def _all_numbers(
    path: Path, options: pacsv.ReadOptions, delimiter: str, convert: pacsv.ConvertOptions
) -> pa.Table | None:
    """The file read with every used column as float64, or None if a cell is no number. Reading
    without pyarrow's type inference is ~10x faster on wide files (0.3 ms a column with it)."""
    numeric = pacsv.ConvertOptions(
        include_columns=convert.include_columns,
        column_types=dict.fromkeys(convert.include_columns, pa.float64()),
    )
    try:
        return pacsv.read_csv(path, options, pacsv.ParseOptions(delimiter=delimiter), numeric)
    except pa.ArrowInvalid:  # text, dates, booleans, blanks around numbers: inferred instead
        return None


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


def _names(names: Sequence[str], limit: int = 20) -> str:
    """List column names, at most ``limit`` of them, each cut to 40 characters."""
    shown = ", ".join(repr(_cap(n)) for n in names[:limit])
    return f"[{shown}, ... ({len(names) - limit} more)]" if len(names) > limit else f"[{shown}]"


def stream_columns(
    path: Path, schema: pa.Schema, target: str, features: list[str] | None
) -> list[str]:
    """Return the columns a streamed pass reads (:mod:`lrexp.core.stream`), the target last."""
    return _used(path, schema, target, features)
