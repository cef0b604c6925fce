"""Data: the generator, the file loader and its errors, standardization, splits and batches,
checked against NumPy oracles."""

from __future__ import annotations

import itertools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrexp.core import model
from lrexp.core.data import (
    DataError,
    Dataset,
    Standardizer,
    fold_indices,
    holdout_size,
    input_columns,
    load_file,
    make_linear,
    min_train_rows,
    raw_rows,
    split_indices,
)
from lrexp.core.shuffle import batch_rows, epoch_batches, shuffle_key, shuffled_rows

# ---------------------------------------------------------------------------------------------
# make_linear


def test_make_linear_shapes_names_and_true_theta():
    ds = make_linear(jax.random.key(0), n=37, bias=1.5, weights=[2.0, -3.0, 0.25], noise=0.1)
    assert isinstance(ds, Dataset)
    assert isinstance(ds.X, np.ndarray) and isinstance(ds.y, np.ndarray)
    assert ds.X.shape == (37, 3) and ds.y.shape == (37,)
    assert ds.X.dtype == np.float64 and ds.y.dtype == np.float64
    assert ds.feature_names == ("x1", "x2", "x3")
    assert ds.target_name == "y"
    np.testing.assert_array_equal(ds.true_theta, np.array([1.5, 2.0, -3.0, 0.25]))


def test_make_linear_is_reproducible_for_a_key_and_differs_for_another():
    kw = {"n": 50, "bias": 0.0, "weights": [1.0, 2.0], "noise": 0.5, "collinearity": 0.3}
    a = make_linear(jax.random.key(7), **kw)
    b = make_linear(jax.random.key(7), **kw)
    c = make_linear(jax.random.key(8), **kw)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.allclose(a.X, c.X)
    assert not np.allclose(a.y, c.y)


def test_make_linear_without_noise_is_exactly_linear():
    ds = make_linear(jax.random.key(1), n=200, bias=-0.75, weights=[0.5, 4.0, -2.0], noise=0.0)
    expected = -0.75 + ds.X @ np.array([0.5, 4.0, -2.0])
    np.testing.assert_allclose(ds.y, expected, rtol=1e-13, atol=1e-13)


def test_make_linear_noise_has_the_requested_scale():
    w = np.array([1.0, -1.0])
    ds = make_linear(jax.random.key(2), n=20000, bias=3.0, weights=list(w), noise=0.4)
    resid = ds.y - (3.0 + ds.X @ w)
    assert abs(resid.mean()) < 0.02
    assert abs(resid.std() - 0.4) < 0.02


@pytest.mark.parametrize("collinearity", [0.0, 0.5, 0.95])
def test_make_linear_features_are_standard_normal_with_requested_correlation(collinearity):
    ds = make_linear(
        jax.random.key(3),
        n=20000,
        bias=0.0,
        weights=[1.0, 1.0, 1.0, 1.0],
        noise=1.0,
        collinearity=collinearity,
    )
    np.testing.assert_allclose(ds.X.mean(axis=0), 0.0, atol=0.05)
    np.testing.assert_allclose(ds.X.std(axis=0), 1.0, atol=0.05)
    corr = np.corrcoef(ds.X, rowvar=False)
    off = corr[~np.eye(4, dtype=bool)]
    np.testing.assert_allclose(off, collinearity, atol=0.02)


def test_make_linear_least_squares_recovers_true_theta_without_noise():
    ds = make_linear(
        jax.random.key(4), n=100, bias=2.0, weights=[1.0, -0.5], noise=0.0, collinearity=0.8
    )
    theta = model.least_squares(jnp.asarray(ds.X), jnp.asarray(ds.y))
    np.testing.assert_allclose(np.asarray(theta), ds.true_theta, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# load_file: good files


def _write_table(path: Path, header: list[str], values: np.ndarray, *, newline: str = "\n"):
    lines = [",".join(header)] + [",".join(repr(float(v)) for v in row) for row in values]
    path.write_bytes((newline.join(lines) + newline).encode("utf-8"))


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_load_file_parses_values_with_all_other_columns_as_features(tmp_path, newline):
    values = np.random.default_rng(0).normal(size=(12, 4))
    path = tmp_path / "table.csv"
    _write_table(path, ["a", "target", "b", "c"], values, newline=newline)
    ds = load_file(path, target="target")
    assert ds.feature_names == ("a", "b", "c")
    assert ds.target_name == "target"
    assert ds.name == "table"
    assert ds.true_theta is None
    assert ds.X.dtype == np.float64 and ds.y.dtype == np.float64
    np.testing.assert_array_equal(ds.X, values[:, [0, 2, 3]])
    np.testing.assert_array_equal(ds.y, values[:, 1])


def test_load_file_respects_explicit_feature_subset_and_order(tmp_path):
    values = np.random.default_rng(1).normal(size=(9, 4))
    path = tmp_path / "t.csv"
    _write_table(path, ["a", "b", "c", "y"], values)
    ds = load_file(path, target="y", features=["c", "a"])
    assert ds.feature_names == ("c", "a")
    np.testing.assert_array_equal(ds.X, values[:, [2, 0]])
    np.testing.assert_array_equal(ds.y, values[:, 3])


def test_load_file_reads_header_with_utf8_bom(tmp_path):
    values = np.random.default_rng(2).normal(size=(5, 3))
    path = tmp_path / "bom.csv"
    lines = ["a,b,y"] + [",".join(repr(float(v)) for v in row) for row in values]
    path.write_bytes(b"\xef\xbb\xbf" + ("\n".join(lines) + "\n").encode("utf-8"))
    ds = load_file(path, target="a")  # the first column, right after the BOM
    assert ds.feature_names == ("b", "y")
    np.testing.assert_array_equal(ds.y, values[:, 0])
    np.testing.assert_array_equal(ds.X, values[:, 1:])


def test_load_file_strips_whitespace_around_names_and_cells(tmp_path):
    path = tmp_path / "ws.csv"
    path.write_text(" a , y \n 1.5 , -2 \n3,  4e1\n")
    ds = load_file(path, target="y")
    assert ds.feature_names == ("a",)
    np.testing.assert_array_equal(ds.X, np.array([[1.5], [3.0]]))
    np.testing.assert_array_equal(ds.y, np.array([-2.0, 40.0]))


def test_load_file_reads_the_shared_fixture(small_csv):
    ds = load_file(small_csv, target="price", features=["a", "b"])
    theta = np.linalg.lstsq(np.column_stack([np.ones(len(ds.y)), ds.X]), ds.y, rcond=None)[0]
    np.testing.assert_allclose(theta, [1.0, 2.0, -3.0], atol=0.02)


def test_load_file_onehot_records_categories_and_raw_rows_decode_back_to_the_file(tmp_path):
    path = tmp_path / "houses.tsv"
    path.write_text("city\tarea\tkind\tprice\nNice\t1\tflat\t5\nLyon\t2\thouse\t6\n"
                    "Paris\t3\tflat\t7\n\t4\tflat\t8\n")  # fmt: skip
    ds = load_file(path, target="price", categorical="onehot", dropna=True)
    assert ds.dropped_rows == 1 and ds.y.tolist() == [5.0, 6.0, 7.0]
    assert ds.categories == {"city": ["Lyon", "Nice", "Paris"], "kind": ["flat", "house"]}
    assert ds.feature_names == ("city=Nice", "city=Paris", "area", "kind=house")
    assert ds.X.tolist() == [[1, 0, 1, 0], [0, 0, 2, 1], [0, 1, 3, 0]]
    assert input_columns(ds.feature_names, ds.categories) == ["city", "area", "kind"]
    rows = [["Nice", 1.0, "flat"], ["Lyon", 2.0, "house"], ["Paris", 3.0, "flat"]]
    assert raw_rows(ds.X, ds.feature_names, ds.categories) == rows


def test_load_file_without_text_columns_has_no_categories(small_csv):
    ds = load_file(small_csv, target="price")
    assert ds.categories == {} and ds.dropped_rows == 0
    assert input_columns(ds.feature_names, {}) == ["a", "b", "unused"]
    assert raw_rows(ds.X[:2], ds.feature_names, {}) == ds.X[:2].tolist()


# ---------------------------------------------------------------------------------------------
# load_file: errors


def _error(path: Path, **kw) -> DataError:
    with pytest.raises(DataError) as info:
        load_file(path, **kw)
    err = info.value
    assert isinstance(err, ValueError)
    assert str(err).startswith(f"{err.key}={err.value!r}: ")
    assert err.allowed in str(err)
    return err


@pytest.mark.parametrize(
    ("text", "words"),
    [("", "empty"), ("\n\n  \n", "empty"), (",,\n", "column 1 has no name")],
    ids=["empty", "blank", "commas"],
)
def test_load_file_empty_file_raises_data_path_error(tmp_path, text, words):
    path = tmp_path / "empty.csv"
    path.write_text(text)
    err = _error(path, target="y")
    assert err.key == "data.path"
    assert err.value == str(path)
    assert words in err.allowed


def test_load_file_duplicate_header_raises_naming_duplicates(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("a,b,a,y\n1,2,3,4\n")
    err = _error(path, target="y")
    assert err.key == "data.path"
    assert err.value == str(path)
    assert "duplicate" in err.allowed and "'a'" in err.allowed


def test_load_file_missing_target_raises_data_target(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,y\n1,2,3\n")
    err = _error(path, target="price")
    assert err.key == "data.target"
    assert err.value == "price"
    assert "price" in str(err) and "t.csv" in str(err)


def test_load_file_unknown_features_raise_data_features_naming_them(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,y\n1,2,3\n")
    err = _error(path, target="y", features=["a", "zz", "qq"])
    assert err.key == "data.features"
    assert err.value == ["a", "zz", "qq"]
    assert "['zz', 'qq']" in err.allowed


def test_load_file_target_only_file_raises_data_features(tmp_path):
    path = tmp_path / "only.csv"
    path.write_text("y\n1\n2\n")
    err = _error(path, target="y")
    assert err.key == "data.features"
    assert "no column besides the target" in err.allowed


def test_load_file_header_only_raises_data_path(tmp_path):
    path = tmp_path / "head.csv"
    path.write_text("a,b,y\n")
    err = _error(path, target="y")
    assert err.key == "data.path"
    assert err.value == str(path)
    assert "no data rows" in err.allowed


@pytest.mark.parametrize("bad_row", ["1,2", "1,2,3,4"], ids=["short", "long"])
def test_load_file_ragged_line_raises_naming_the_line(tmp_path, bad_row):
    path = tmp_path / "ragged.csv"
    path.write_text(f"a,b,y\n1,2,3\n4,5,6\n{bad_row}\n7,8,9\n")
    err = _error(path, target="y")
    assert err.key == "data.path"
    assert err.value == str(path)
    n_fields = len(bad_row.split(","))
    assert f"line 4 has {n_fields} fields" in err.allowed
    assert "header has 3" in err.allowed


# The key names what to change: the file (an infinity), data.dropna (a missing cell: empty or
# NaN), data.categorical (text, which onehot would encode).
NOT_FINITE = {"abc": "data.categorical", "": "data.dropna", "nan": "data.dropna"}
NOT_FINITE |= {"NaN": "data.dropna", "inf": "data.path", "-inf": "data.path"}
NOT_FINITE |= {"1e999": "data.path", "1,5": "data.categorical"}


@pytest.mark.parametrize("cell", NOT_FINITE, ids=repr)
def test_load_file_non_finite_cell_raises_naming_column_and_line(tmp_path, cell):
    path = tmp_path / "bad.csv"
    quoted = f'"{cell}"' if "," in cell else cell
    path.write_text(f"a,b,y\n1,2,3\n4,5,6\n7,{quoted},9\n")
    err = _error(path, target="y")
    assert err.key == NOT_FINITE[cell]
    assert f"{cell!r} (column 'b', line 4)" in err.allowed


def test_load_file_bad_target_cell_names_the_target_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,y\n1,2\n3,oops\n")
    err = _error(path, target="y")
    assert "'oops' (column 'y', line 3)" in err.allowed


def test_load_file_line_number_is_the_physical_line_despite_blank_lines(tmp_path):
    # the message must point at the line a user sees in an editor: line 5 here
    path = tmp_path / "gaps.csv"
    path.write_text("a,y\n1,2\n\n3,4\nbad,5\n")
    assert path.read_text().splitlines()[4] == "bad,5"
    err = _error(path, target="y")
    assert "'bad' (column 'a', line 5)" in err.allowed


# ---------------------------------------------------------------------------------------------
# Standardizer


def _features(seed: int, n: int = 60) -> tuple[np.ndarray, tuple[str, ...]]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)) * np.array([0.01, 5.0, 300.0]) + np.array([-4.0, 0.0, 1e3])
    return X, ("p", "q", "r")


def test_standardizer_apply_gives_zero_mean_unit_std_columns():
    X, names = _features(0)
    s = Standardizer.fit(X, names)
    Z = s.apply(X)
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Z.std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(Z, (X - X.mean(axis=0)) / X.std(axis=0), rtol=1e-12)


def test_standardizer_uses_training_statistics_on_other_rows():
    X, names = _features(1)
    train, test = X[:40], X[40:]
    s = Standardizer.fit(train, names)
    np.testing.assert_allclose(
        s.apply(test), (test - train.mean(axis=0)) / train.std(axis=0), rtol=1e-12
    )


def test_to_original_gives_equal_predictions_in_original_units():
    X, names = _features(2)
    s = Standardizer.fit(X, names)
    theta_std = np.array([0.7, -1.2, 3.4, 0.05])
    theta_orig = s.to_original(theta_std)
    pred_std = theta_std[0] + s.apply(X) @ theta_std[1:]
    pred_orig = theta_orig[0] + X @ theta_orig[1:]
    np.testing.assert_allclose(pred_orig, pred_std, rtol=1e-10, atol=1e-10)
    via_model = model.predict(jnp.asarray(theta_orig), jnp.asarray(X))
    np.testing.assert_allclose(np.asarray(via_model), pred_std, rtol=1e-10, atol=1e-10)


def test_least_squares_in_standardized_units_maps_to_original_least_squares():
    X, names = _features(3)
    y = 2.0 + X @ np.array([100.0, -0.3, 0.002]) + np.random.default_rng(30).normal(size=len(X))
    s = Standardizer.fit(X, names)
    aug = lambda A: np.column_stack([np.ones(len(A)), A])  # noqa: E731
    theta_std = np.linalg.lstsq(aug(s.apply(X)), y, rcond=None)[0]
    theta_orig = np.linalg.lstsq(aug(X), y, rcond=None)[0]
    np.testing.assert_allclose(s.to_original(theta_std), theta_orig, rtol=1e-8)


def test_to_standardized_inverts_to_original():
    X, names = _features(4)
    s = Standardizer.fit(X, names)
    theta = np.array([1.0, 2.0, -3.0, 4.0])
    np.testing.assert_allclose(s.to_standardized(s.to_original(theta)), theta, rtol=1e-12)
    np.testing.assert_allclose(s.to_original(s.to_standardized(theta)), theta, rtol=1e-10)


def test_to_original_works_on_a_trajectory_with_leading_axes():
    X, names = _features(5)
    s = Standardizer.fit(X, names)
    traj = np.random.default_rng(50).normal(size=(7, 4))
    out = s.to_original(traj)
    assert out.shape == traj.shape
    for t in range(traj.shape[0]):
        np.testing.assert_allclose(out[t], s.to_original(traj[t]), rtol=1e-13, atol=1e-12)
        pred_std = traj[t, 0] + s.apply(X) @ traj[t, 1:]
        np.testing.assert_allclose(out[t, 0] + X @ out[t, 1:], pred_std, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(s.to_standardized(out), traj, rtol=1e-10, atol=1e-12)
    deeper = np.stack([traj, 2 * traj])  # (2, T, M+1)
    np.testing.assert_allclose(
        s.to_original(deeper)[1], s.to_original(2 * traj), rtol=1e-13, atol=1e-12
    )


def test_disabled_standardizer_is_identity():
    X, names = _features(6)
    X[:, 1] = 3.0  # a constant column is fine when nothing is scaled
    s = Standardizer.fit(X, names, enabled=False)
    np.testing.assert_array_equal(s.apply(X), X)
    theta = np.array([0.1, 0.2, 0.3, 0.4])
    np.testing.assert_array_equal(s.to_original(theta), theta)
    np.testing.assert_array_equal(s.to_standardized(theta), theta)


@pytest.mark.parametrize("constant", [["q"], ["p", "r"]])
def test_standardizer_constant_column_raises_naming_it(constant):
    X, names = _features(7)
    for name in constant:
        X[:, names.index(name)] = 2.5
    with pytest.raises(DataError) as info:
        Standardizer.fit(X, names)
    err = info.value
    assert err.key == "data.features"
    assert str(constant) in err.allowed
    for name in set(names) - set(constant):
        assert f"'{name}'" not in err.allowed


# ---------------------------------------------------------------------------------------------
# splits


@pytest.mark.parametrize(
    ("n", "fraction"), [(100, 0.2), (7, 0.3), (2, 0.01), (2, 0.99), (10, 0.5), (1000, 0.123)]
)
def test_holdout_size_is_nearest_to_fraction_and_leaves_both_sides_nonempty(n, fraction):
    k = holdout_size(n, fraction)
    assert 1 <= k <= n - 1
    target = min(max(n * fraction, 1), n - 1)
    assert abs(k - target) <= 0.5


@pytest.mark.parametrize(("n", "fraction"), [(50, 0.2), (23, 0.33), (5, 0.9)])
def test_split_indices_partition_the_rows(n, fraction):
    train, test = split_indices(jax.random.key(0), n, fraction)
    assert len(test) == holdout_size(n, fraction)
    assert len(train) + len(test) == n
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(n))
    np.testing.assert_array_equal(train, np.sort(train))
    np.testing.assert_array_equal(test, np.sort(test))
    assert len(train) == min_train_rows(n, fraction, None)


def test_split_indices_depend_on_the_key_only():
    a = split_indices(jax.random.key(3), 200, 0.25)
    b = split_indices(jax.random.key(3), 200, 0.25)
    c = split_indices(jax.random.key(4), 200, 0.25)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize(("n", "folds"), [(360, 6), (10, 3), (11, 4), (5, 5)])
def test_fold_indices_tests_partition_rows_and_trains_are_complements(n, folds):
    splits = fold_indices(jax.random.key(1), n, folds)
    assert len(splits) == folds
    tests = [test for _, test in splits]
    np.testing.assert_array_equal(np.sort(np.concatenate(tests)), np.arange(n))
    sizes = [len(t) for t in tests]
    assert max(sizes) - min(sizes) <= 1
    for train, test in splits:
        np.testing.assert_array_equal(train, np.setdiff1d(np.arange(n), test))
        np.testing.assert_array_equal(test, np.sort(test))
    assert min(len(train) for train, _ in splits) == min_train_rows(n, 0.2, folds)


def test_fold_indices_equal_sizes_when_divisible():
    splits = fold_indices(jax.random.key(2), 360, 6)
    assert [len(test) for _, test in splits] == [60] * 6
    assert [len(train) for train, _ in splits] == [300] * 6


def test_fold_indices_depend_on_the_key():
    a = fold_indices(jax.random.key(5), 30, 3)
    b = fold_indices(jax.random.key(5), 30, 3)
    c = fold_indices(jax.random.key(6), 30, 3)
    for (_, ta), (_, tb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(ta, tb)
    assert any(not np.array_equal(ta, tc) for (_, ta), (_, tc) in zip(a, c, strict=True))


# ---------------------------------------------------------------------------------------------
# epoch batches


# n = 256 and 1 << 16 fill the Feistel domain (16·16, 256·256) exactly; the others cycle-walk
@pytest.mark.parametrize(
    ("n", "bs"), [(23, 5), (20, 5), (3, 8), (1, 1), (2, 1), (256, 10), (1001, 7)]
)
def test_epoch_batches_cover_every_row_exactly_once(n, bs):
    idx, mask = epoch_batches(jax.random.key(0), n, bs)
    idx, mask = np.asarray(idx), np.asarray(mask)
    n_batches = -(-n // bs)
    assert idx.shape == mask.shape == (n_batches, bs)
    assert mask.dtype == np.bool_
    assert int(mask.sum()) == n
    np.testing.assert_array_equal(np.sort(idx[mask]), np.arange(n))
    # padding points at row 0 (a valid row) and is masked out
    assert np.all(idx[~mask] == 0)
    assert ((~mask).sum()) == n_batches * bs - n


def test_epoch_batches_padding_is_only_at_the_end():
    _, mask = epoch_batches(jax.random.key(1), 23, 5)
    flat = np.asarray(mask).ravel()
    np.testing.assert_array_equal(flat, np.arange(flat.size) < 23)


def test_epoch_batches_order_depends_on_the_key():
    a, _ = epoch_batches(jax.random.key(2), 23, 5)
    b, _ = epoch_batches(jax.random.key(2), 23, 5)
    c, _ = epoch_batches(jax.random.key(3), 23, 5)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_masked_batch_tsse_sums_to_full_tsse():
    rng = np.random.default_rng(9)
    X, y, theta = rng.normal(size=(23, 2)), rng.normal(size=23), rng.normal(size=3)
    idx, mask = epoch_batches(jax.random.key(4), 23, 5)
    Xj, yj, tj = jnp.asarray(X), jnp.asarray(y), jnp.asarray(theta)
    total = sum(
        float(model.tsse(tj, Xj[i], yj[i], m.astype(Xj.dtype)))
        for i, m in zip(idx, mask, strict=True)
    )
    expected = np.sum((y - theta[0] - X @ theta[1:]) ** 2)
    np.testing.assert_allclose(total, expected, rtol=1e-12)


def test_epoch_batches_differ_across_epochs_of_a_split_key():
    keys = jax.random.split(jax.random.key(5), 4)
    orders = [np.asarray(epoch_batches(k, 30, 7)[0]) for k in keys]
    for a, b in itertools.combinations(orders, 2):
        assert not np.array_equal(a, b)


# The shuffle is a keyed bijection computed per batch (no permutation is stored): its properties.
@pytest.mark.parametrize("n", [2, 7, 256, 1000, 1 << 16, 1_000_003])
def test_shuffle_is_a_permutation_of_the_rows_for_any_key(n):
    shuffle = jax.jit(shuffled_rows, static_argnums=1)
    for seed in range(3):
        rows = np.asarray(shuffle(shuffle_key(jax.random.key(seed)), n, jnp.arange(n)))
        assert rows.dtype == np.int32
        np.testing.assert_array_equal(np.sort(rows), np.arange(n))


def test_batches_taken_one_at_a_time_are_the_epochs_batches():
    n, bs, key = 1003, 64, jax.random.key(6)
    idx, mask = epoch_batches(key, n, bs)
    one = jax.jit(batch_rows, static_argnums=(1, 2))
    for b in range(idx.shape[0]):
        i, m = one(shuffle_key(key), n, bs, jnp.int32(b))
        np.testing.assert_array_equal(np.asarray(i), np.asarray(idx[b]))
        np.testing.assert_array_equal(np.asarray(m), np.asarray(mask[b]))


def test_each_epoch_and_each_key_gets_its_own_order():
    n, key = 1000, jax.random.key(7)
    orders = [np.asarray(epoch_batches(jax.random.fold_in(key, e), n, n)[0]) for e in range(20)]
    orders.append(np.asarray(epoch_batches(jax.random.key(8), n, n)[0]))
    assert len({o.tobytes() for o in orders}) == len(orders)
    # not a small perturbation either: consecutive epochs share few positions (1/n expected each)
    same = [np.mean(a == b) for a, b in itertools.pairwise(orders)]
    assert max(same) < 0.02


def chi_square_is_plausible(counts: np.ndarray, expected: float, df: int) -> bool:
    """Pearson's statistic within 4.5 standard deviations of its mean (p ≈ 1e-5 to fail)."""
    chi2 = ((counts - expected) ** 2 / expected).sum()
    return chi2 < df + 4.5 * np.sqrt(2 * df)


@pytest.mark.parametrize("n", [10, 23])
def test_every_row_is_equally_likely_at_every_position_and_after_every_row(n):
    epochs = 40 * n * n  # 40 expected per (row, position) pair
    keys = jax.vmap(shuffle_key)(jax.random.split(jax.random.key(9), epochs))
    orders = np.asarray(jax.jit(jax.vmap(lambda k: shuffled_rows(k, n, jnp.arange(n))))(keys))
    at = np.zeros((n, n))
    np.add.at(at, (orders, np.broadcast_to(np.arange(n), orders.shape)), 1)
    assert chi_square_is_plausible(at, epochs / n, (n - 1) ** 2)
    follows = np.zeros((n, n))  # (row, the row right after it): no fixed neighbours
    np.add.at(follows, (orders[:, :-1], orders[:, 1:]), 1)
    off_diagonal = follows[~np.eye(n, dtype=bool)]
    assert chi_square_is_plausible(off_diagonal, epochs / n, n * (n - 1) - n)


def test_a_large_epochs_order_is_spread_evenly():
    # one epoch of a million rows: which tenth of the rows lands in which tenth of the epoch
    n, tenths = 1_000_000, 10
    order = np.asarray(jax.jit(shuffled_rows, static_argnums=1)(
        shuffle_key(jax.random.key(10)), n, jnp.arange(n)
    ))  # fmt: skip
    cells = np.zeros((tenths, tenths))
    np.add.at(cells, (order * tenths // n, np.arange(n) * tenths // n), 1)
    assert chi_square_is_plausible(cells, n / tenths**2, (tenths - 1) ** 2)
