"""lrexp.core.tables: real CSV, TSV, Parquet and Feather files read into float64 arrays, checked
against NumPy, pandas and a data set shipped with scikit-learn; every error by key and place."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from lrexp.core import tables
from lrexp.core.tables import FORMATS, Table, TableError, encode_onehot, read_table


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def _csv(header: list[str], values: np.ndarray, sep: str = ",") -> str:
    lines = [sep.join(header)] + [sep.join(repr(float(v)) for v in row) for row in values]
    return "\n".join(lines) + "\n"


def _error(path: Path, key: str, **kw) -> str:
    """Read expecting a TableError for ``key``; return its one-line message."""
    with pytest.raises(TableError) as info:
        read_table(path, **kw)
    message = str(info.value)
    assert info.value.key == key, message
    assert "\n" not in message and "\r" not in message
    assert message == f"{key}={info.value.value!r}: {info.value.allowed}"
    return message


def _check(table: Table, X: np.ndarray, y: np.ndarray, names: tuple[str, ...], target: str):
    assert table.X.dtype == np.float64 and table.y.dtype == np.float64
    assert table.X.flags.c_contiguous and table.X.flags.writeable and table.y.flags.writeable
    assert table.feature_names == names and table.target_name == target
    np.testing.assert_array_equal(table.X, X)
    np.testing.assert_array_equal(table.y, y)


# ---------------------------------------------------------------------------------------------
# good files, each format


VALUES = np.random.default_rng(0).normal(scale=1e3, size=(25, 4))


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_csv_all_other_columns_are_features_and_agree_with_numpy_and_pandas(tmp_path, newline):
    path = _write(tmp_path / "t.csv", _csv(["a", "y", "b", "c"], VALUES).replace("\n", newline))
    table = read_table(path, target="y")
    _check(table, VALUES[:, [0, 2, 3]], VALUES[:, 1], ("a", "b", "c"), "y")
    assert table.categories == {} and table.dropped_rows == 0
    oracle = np.loadtxt(path, delimiter=",", skiprows=1)  # independent parsers, same file
    np.testing.assert_array_equal(table.X, oracle[:, [0, 2, 3]])
    frame = pd.read_csv(path, engine="python")  # Python's float(): exact
    np.testing.assert_array_equal(table.y, frame["y"].to_numpy())


def test_csv_integers_exponents_and_signs_match_numpy_loadtxt(tmp_path):
    text = "p,q,r\n1,-2.5e3,+7\n0x,1,2\n".replace("0x", "-0")
    text += "".join(f"{i},{i * 1e-7!r},{-i}\n" for i in range(1, 40))
    path = _write(tmp_path / "ints.csv", text)
    table = read_table(path, target="r", features=["q", "p"])
    oracle = np.loadtxt(path, delimiter=",", skiprows=1)
    _check(table, oracle[:, [1, 0]], oracle[:, 2], ("q", "p"), "r")


def test_tsv_by_extension_and_by_format(tmp_path):
    text = _csv(["a", "b", "y"], VALUES[:, :3], sep="\t")
    for path, fmt in (
        (_write(tmp_path / "t.tsv", text), None),
        (_write(tmp_path / "t.dat", text), "tsv"),
    ):
        _check(read_table(path, target="y", fmt=fmt), VALUES[:, :2], VALUES[:, 2], ("a", "b"), "y")


@pytest.mark.parametrize("sep", [";", "|", "\t", ","])
def test_csv_delimiter_is_sniffed(tmp_path, sep):
    path = _write(tmp_path / "s.csv", _csv(["a", "b", "y"], VALUES[:, :3], sep=sep))
    _check(read_table(path, target="y"), VALUES[:, :2], VALUES[:, 2], ("a", "b"), "y")


def test_csv_explicit_delimiter_and_quoted_header(tmp_path):
    path = _write(tmp_path / "q.txt", '"a;b";y\n1.5;2\n3;4\n')  # the name holds the delimiter
    table = read_table(path, target="y", delimiter=";")
    _check(table, np.array([[1.5], [3.0]]), np.array([2.0, 4.0]), ("a;b",), "y")


def test_csv_utf8_bom_blank_lines_and_blanks_around_names_and_cells(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf a , y \n\n 1.5 , -2 \n\n\n3,  4e1\n")
    _check(
        read_table(path, target="a"), np.array([[-2.0], [40.0]]), np.array([1.5, 3.0]), ("y",), "a"
    )


def test_parquet_and_feather_read_only_the_asked_columns_in_order(tmp_path):
    data = {name: VALUES[:, j] for j, name in enumerate(["a", "b", "c", "y"])}
    data["notes"] = [f"text {i}" for i in range(len(VALUES))]  # unused: never parsed
    table = pa.table(data)
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=7)  # several chunks
    feather.write_feather(table, tmp_path / "t.feather", chunksize=6)
    feather.write_feather(table, tmp_path / "t.arrow", compression="uncompressed")
    for name in ("t.parquet", "t.feather", "t.arrow"):
        got = read_table(tmp_path / name, target="y", features=["c", "a"])
        _check(got, VALUES[:, [2, 0]], VALUES[:, 3], ("c", "a"), "y")
    pq.write_table(table.drop_columns(["notes"]), tmp_path / "n.pq")
    got = read_table(tmp_path / "n.pq", target="b")
    _check(got, VALUES[:, [0, 2, 3]], VALUES[:, 1], ("a", "c", "y"), "b")


def test_parquet_from_pandas_leaves_its_saved_index_out_and_reads_ints_and_bools(tmp_path):
    frame = pd.DataFrame(
        {"i": [1, 2, 3], "flag": [True, False, True], "y": [0.5, 1.5, 2.5]}, index=[10, 20, 30]
    )
    frame.to_parquet(tmp_path / "p.parquet")  # the index is saved as a column
    table = read_table(tmp_path / "p.parquet", target="y")
    X = np.array([[1.0, 1.0], [2.0, 0.0], [3.0, 1.0]])
    _check(table, X, np.array([0.5, 1.5, 2.5]), ("i", "flag"), "y")


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_sklearn_diabetes_round_trips_exactly(tmp_path, suffix):
    datasets = pytest.importorskip("sklearn.datasets")
    frame = datasets.load_diabetes(as_frame=True).frame
    path = tmp_path / f"diabetes.{suffix}"
    frame.to_csv(path, index=False) if suffix == "csv" else frame.to_parquet(path)
    table = read_table(path, target="target")
    features = tuple(c for c in frame.columns if c != "target")
    assert table.X.shape == (442, 10) and len(features) == 10
    _check(table, frame[list(features)].to_numpy(), frame["target"].to_numpy(), features, "target")


def test_text_numbers_beyond_pyarrows_first_block_still_read_as_numbers(tmp_path):
    n = 60_000  # integers for the first blocks, then a float with blanks: pyarrow reads text
    ints = np.arange(n, dtype=np.float64)
    text = "a,y\n" + "".join(f"{i},{i}\n" for i in range(n)) + " 2.5 ,1\n"
    path = _write(tmp_path / "late.csv", text)
    table = read_table(path, target="y")
    np.testing.assert_array_equal(table.X[:, 0], np.append(ints, 2.5))


# ---------------------------------------------------------------------------------------------
# one-hot, dropna


def test_onehot_drops_the_first_sorted_category_and_records_them(tmp_path):
    text = "color,x,y\nred,1,10\nblue,2,20\n green ,3,30\nred,4,40\n"
    table = read_table(_write(tmp_path / "c.csv", text), target="y", categorical="onehot")
    assert table.categories == {"color": ["blue", "green", "red"]}
    X = np.array([[0, 1, 1], [0, 0, 2], [1, 0, 3], [0, 1, 4]], dtype=np.float64)
    _check(table, X, np.array([10.0, 20, 30, 40]), ("color=green", "color=red", "x"), "y")
    rows = {"color": ["red", "blue", "green", "red"], "x": [1, 2, 3, 4]}
    np.testing.assert_array_equal(encode_onehot(rows, table.feature_names, table.categories), X)
    again = encode_onehot({"x": [9], "color": ["blue"]}, table.feature_names, table.categories)
    np.testing.assert_array_equal(again, [[0.0, 0.0, 9.0]])


def test_onehot_from_a_pandas_categorical_in_parquet(tmp_path):
    frame = pd.DataFrame({"k": pd.Categorical(["b", "a", "c", "a"]), "y": [1.0, 2, 3, 4]})
    frame.to_parquet(tmp_path / "k.parquet")
    table = read_table(tmp_path / "k.parquet", target="y", categorical="onehot")
    assert table.categories == {"k": ["a", "b", "c"]}
    X = np.array([[1.0, 0], [0, 0], [0, 1], [0, 0]])
    _check(table, X, np.array([1.0, 2, 3, 4]), ("k=b", "k=c"), "y")
    assert encode_onehot(frame, table.feature_names, table.categories).tolist() == X.tolist()


def test_encode_onehot_refuses_an_unknown_category_and_a_missing_column():
    with pytest.raises(TableError) as info:
        encode_onehot({"c": ["a", "zzz"]}, ("c=b",), {"c": ["a", "b"]})
    assert info.value.key == "data.categorical" and info.value.value == "zzz"
    with pytest.raises(TableError) as info:
        encode_onehot({"c": ["a"]}, ("c=b", "x"), {"c": ["a", "b"]})
    assert info.value.key == "data.features" and info.value.value == "x"


def test_dropna_drops_rows_missing_any_used_cell_and_counts_them(tmp_path):
    text = "a,b,c,unused,y\n1,2,red,,3\n,5,blue,x,6\n7,NA,red,,9\n10,11,,,12\n13,14,blue,,NaN\n"
    text += "16,17,red,,18\n19,20,green,,21\n"
    path = _write(tmp_path / "na.csv", text)
    table = read_table(
        path, target="y", features=["a", "b", "c"], categorical="onehot", dropna=True
    )
    assert table.dropped_rows == 4
    X = np.array([[1.0, 2, 1], [16, 17, 1], [19, 20, 0]])
    _check(table, X, np.array([3.0, 18, 21]), ("a", "b", "c=red"), "y")
    assert table.categories == {"c": ["green", "red"]}  # of the kept rows: "blue" was dropped
    message = _error(
        path, "data.dropna", target="y", features=["a", "b", "c"], categorical="onehot"
    )
    assert "'a': 1" in message and "'b': 1" in message and "'c': 1" in message
    assert "'y': 1" in message and "set data.dropna=true" in message
    empty = _write(tmp_path / "all.csv", "a,y\n1,\n,2\n")
    assert "every row" in _error(empty, "data.dropna", target="y", dropna=True)


def test_missing_values_in_parquet_nan_and_null_count(tmp_path):
    pq.write_table(
        pa.table({"a": [1.0, float("nan"), None], "y": [1.0, 2.0, 3.0]}), tmp_path / "m.pq"
    )
    assert "'a': 2" in _error(tmp_path / "m.pq", "data.dropna", target="y")
    table = read_table(tmp_path / "m.pq", target="y", dropna=True)
    assert table.dropped_rows == 2 and table.X.tolist() == [[1.0]]


# ---------------------------------------------------------------------------------------------
# errors: key, one line, place; nothing of the file but names and the one cell


def test_unknown_extension_or_format(tmp_path):
    path = _write(tmp_path / "t.xlsx", "a,y\n1,2\n")
    message = _error(path, "data.format", target="y")
    assert all(f in message for f in FORMATS)
    _error(path, "data.format", target="y", fmt="excel")
    assert read_table(path, target="y", fmt="csv").y.tolist() == [2.0]


def test_bad_options(tmp_path):
    path = _write(tmp_path / "t.csv", "a,y\n1,2\n")
    _error(path, "data.categorical", target="y", categorical="drop")
    _error(path, "data.delimiter", target="y", delimiter='"')
    pq.write_table(pa.table({"a": [1.0], "y": [2.0]}), tmp_path / "t.parquet")
    _error(tmp_path / "t.parquet", "data.delimiter", target="y", delimiter=",")
    _error(tmp_path / "nothere.csv", "data.path", target="y")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "is empty"),
        ("\n\n  \n", "is empty"),
        ("a,y\n", "no data rows"),
        ("a,y\n\n\n", "no data rows"),
        ("a,a,y\n1,2,3\n", "duplicate column names: ['a']"),
        ("a,,y\n1,2,3\n", "column 2 has no name"),
    ],
)
def test_unusable_csv_files(tmp_path, text, words):
    assert words in _error(_write(tmp_path / "bad.csv", text), "data.path", target="y")


def test_target_and_features_must_be_columns_and_the_list_is_capped(tmp_path):
    names = [f"col{i}" for i in range(50)]
    path = _write(tmp_path / "wide.csv", ",".join(names) + "\n" + ",".join("1" * 50) + "\n")
    message = _error(path, "data.target", target="nope")
    assert "col19" in message and "col20" not in message and "30 more" in message
    message = _error(path, "data.features", target="col0", features=["col1", "ghost"])
    assert "'ghost'" in message
    _error(path, "data.features", target="col0", features=["col0", "col1"])
    _error(path, "data.features", target="col0", features=[])
    _error(_write(tmp_path / "one.csv", "y\n1\n"), "data.features", target="y")


def test_bad_cell_names_its_column_file_line_and_only_that_cell(tmp_path):
    lines = ["a,b,note,y", "", "1,2,x,3", "4,5,SECRET,6", "", "7,oops,x,9", "10,11,x,12"]
    path = _write(tmp_path / "bad.csv", "\n".join(lines) + "\n")
    message = _error(path, "data.categorical", target="y", features=["a", "b"])
    assert "'oops' (column 'b', line 6)" in message and "data.categorical=onehot" in message
    assert "SECRET" not in message
    assert "'x' (column 'note', line 3)" in _error(
        path, "data.categorical", target="y", features=["note"]
    )
    target = _error(path, "data.target", target="b", features=["a"])
    assert "'oops' (column 'b', line 6)" in target


def test_bad_cell_deep_in_a_big_file_and_a_long_cell_is_capped(tmp_path):
    rows = [f"{i},{i}.5,{i}" for i in range(50_000)]
    rows[41_234] = "1," + "x" * 500 + ",2"
    path = _write(tmp_path / "deep.csv", "a,b,y\n" + "\n".join(rows) + "\n")
    message = _error(path, "data.categorical", target="y")
    assert "line 41236" in message and "x" * 40 + "...'" in message and "x" * 41 not in message


def test_infinity_is_a_bad_cell(tmp_path):
    path = _write(tmp_path / "inf.csv", "a,y\n1,2\n\n-inf,3\n")
    assert "'-inf' (column 'a', line 4) is not a finite number" in _error(
        path, "data.path", target="y"
    )
    pq.write_table(pa.table({"a": [1.0, 2, np.inf], "y": [1.0, 2, 3]}), tmp_path / "inf.parquet")
    assert "(column 'a', row 3)" in _error(tmp_path / "inf.parquet", "data.path", target="y")


def test_bad_cells_in_parquet_and_feather_name_the_row(tmp_path):
    table = pa.table({"a": ["1", "2.5", "three", "4"], "y": [1.0, 2, 3, 4], "d": [None] * 4})
    pq.write_table(table, tmp_path / "t.parquet")
    feather.write_feather(table, tmp_path / "t.feather")
    for name in ("t.parquet", "t.feather"):
        message = _error(tmp_path / name, "data.categorical", target="y", features=["a"])
        assert "'three' (column 'a', row 3)" in message


def test_wrong_field_count_names_the_line_without_quoting_it(tmp_path):
    path = _write(tmp_path / "ragged.csv", "a,b,y\n1,2,3\n\n4,5,6,SECRET\n7,8,9\n")
    message = _error(path, "data.path", target="y")
    assert "line 4 has 4 fields, the header has 3" in message and "SECRET" not in message


@pytest.mark.parametrize(
    "content",
    [
        b"a,y\n1,2\n\x00\x00\x00binary",
        "a,y\n1,caf\xe9\n".encode("latin-1"),
        "a,y\n1,2\n".encode("utf-16"),
        b"a,y\n" + b"1,2\n" * 20_000 + b"3,\xff\xfe\n",  # past the first 64 KiB
    ],
    ids=["nul", "latin1", "utf16", "late"],
)
def test_non_utf8_text_is_refused(tmp_path, content):
    path = tmp_path / "enc.csv"
    path.write_bytes(content)
    assert "is not UTF-8 text" in _error(path, "data.path", target="y")


def test_a_file_that_is_not_parquet_or_feather(tmp_path):
    _write(tmp_path / "fake.parquet", "a,y\n1,2\n")
    _write(tmp_path / "fake.feather", "a,y\n1,2\n")
    assert "not a Parquet file" in _error(tmp_path / "fake.parquet", "data.path", target="y")
    assert "not a Feather" in _error(tmp_path / "fake.feather", "data.path", target="y")
    pq.write_table(
        pa.table({"a": pa.array([], pa.float64()), "y": pa.array([], pa.float64())}),
        tmp_path / "e.pq",
    )
    assert "no data rows" in _error(tmp_path / "e.pq", "data.path", target="y")


# ---------------------------------------------------------------------------------------------
# wide headers stay linear


def test_a_200000_column_header_is_not_quadratic(tmp_path):
    names = [f"c{i}" for i in range(200_000)]
    # list.index per name would take minutes here (the test's own time is the check)
    assert len(tables._select(tmp_path, names, "c7", None)) == 199_999  # all but the target
    row = ",".join(str(i % 10) for i in range(200_000))
    path = _write(tmp_path / "wide.csv", ",".join(names) + "\n" + row + "\n" + row + "\n")
    table = read_table(path, target="c199999", features=["c3", "c150000"])
    _check(table, np.array([[3.0, 0.0]] * 2), np.array([9.0, 9.0]), ("c3", "c150000"), "c199999")


def test_lines_count_blank_lines_quoted_line_breaks_and_cr_endings(tmp_path):
    path = _write(tmp_path / "ml.csv", 'a,n,y\n1,"two\nlines",3\n\n4,x,5\n6,7,z\n')
    assert "'z' (column 'y', line 6)" in _error(path, "data.target", target="y", features=["a"])
    path = _write(tmp_path / "cr.csv", "a,y\r1,2\r\r3,x\r")
    assert "'x' (column 'y', line 4)" in _error(path, "data.target", target="y")


def test_dates_are_one_hot_encoded_by_their_text_as_written(tmp_path):
    path = _write(tmp_path / "d.csv", "d,y\n2020-01-01,1\n2020-02-01T10:00:00,2\n2020-01-01,3\n")
    assert "'2020-01-01' (column 'd', line 2)" in _error(path, "data.categorical", target="y")
    table = read_table(path, target="y", categorical="onehot")
    assert table.categories == {"d": ["2020-01-01", "2020-02-01T10:00:00"]}
    assert table.feature_names == ("d=2020-02-01T10:00:00",)
    assert table.X.tolist() == [[0.0], [1.0], [0.0]]


def test_the_module_imports_no_hydra_omegaconf_or_mlflow():
    code = "import sys, lrexp.core.tables; print(*sorted(m.split('.')[0] for m in sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not {"hydra", "omegaconf", "mlflow"} & set(loaded)


@pytest.mark.parametrize("name", ["e.tsv", "e.csv"])
def test_empty_and_binary_files_are_refused_with_a_given_delimiter_too(tmp_path, name):
    path = _write(tmp_path / name, "")
    assert "is empty" in _error(path, "data.path", target="y", delimiter="\t")
    path.write_bytes(b"a\ty\n1\t\x00\x00\n")
    assert "is not UTF-8 text" in _error(path, "data.path", target="y", delimiter="\t")


def test_huge_integers_round_like_float(tmp_path):
    path = _write(tmp_path / "big.csv", "a,y\n1,9007199254740993\n2,-9007199254740995\n")
    table = read_table(path, target="y")
    assert table.y.tolist() == [float(9007199254740993), float(-9007199254740995)]
