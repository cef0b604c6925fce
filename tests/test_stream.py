"""Streamed data (data.stream): one pass over Parquet record batches into float64 sums, and
full-batch training from them, checked against NumPy on the same rows and the in-memory loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import runs_in, typed_config

from lrexp import config
from lrexp.core import data, fit, gram, stream
from lrexp.pipeline import prepare
from lrexp.pipeline.prepare import loop_spec
from lrexp.pipeline.streamed import Streamed

COLUMNS = ["a", "b", "c", "y"]
SIZES = (700, 1100, 900)  # rows per file: 2700 in all


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """Three Parquet files of y = 2 + 1.5a − 0.2b + 30c + ε, columns far from zero (c ≈ 1e4, so
    that sums of raw squares would lose digits); the rows in the files' order, [a, b, c, y]."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("stream") / "parts"
    folder.mkdir()
    rows = []
    for k, n in enumerate(SIZES):
        X = rng.normal(size=(n, 3)) * [1.0, 10.0, 0.1] + [5.0, -3.0, 1e4]
        y = 2.0 + X @ [1.5, -0.2, 30.0] + rng.normal(size=n)
        Z = np.column_stack([X, y])
        table = pa.table({c: Z[:, j] for j, c in enumerate(COLUMNS)})
        pq.write_table(table, folder / f"part-{k}.parquet", row_group_size=300)
        rows.append(Z)
    return folder, np.concatenate(rows)


def _parts(n: int, seed: int = 0, fraction: float = 0.2) -> np.ndarray:
    return stream.assign(np.arange(n), seed, test_fraction=fraction, folds=None)


def _gram(Z: np.ndarray) -> np.ndarray:
    D = np.column_stack([np.ones(len(Z)), Z])
    return D.T @ D


def test_sums_of_a_parquet_directory_equal_numpy_per_part(parquet_dir):
    folder, Z = parquet_dir
    source = stream.open_source(folder, target="y", features=None)
    assert source.columns == COLUMNS and source.rows == len(Z)
    done = stream.stream_pass(
        source, seed=0, test_fraction=0.2, folds=None, dropna=False, batch_rows=256
    )
    part = _parts(len(Z))
    assert 0.15 < part.mean() < 0.25  # the rule holds out about test_fraction of the rows
    for p in (0, 1):
        rows = Z[part == p]
        centred = gram.affine_gram(
            done.sums.gram[p], done.sums.shift, rows.mean(axis=0), np.ones(4)
        )  # the Gram of [1, z − mean]: centred sums, exact where raw squares of 1e4 are not
        np.testing.assert_allclose(centred, _gram(rows - rows.mean(axis=0)), atol=1e-6 * len(Z))
        mean, std = gram.moments(done.sums.gram[p], done.sums.shift)
        np.testing.assert_allclose(mean, rows.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(std, rows.std(axis=0), rtol=1e-9)
    np.testing.assert_array_equal(done.sample, Z[: stream.SAMPLE_ROWS])
    np.testing.assert_array_equal(done.sums.low, Z.min(axis=0))


def test_merged_sums_equal_one_pass():
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(500, 3)) + 100.0
    part = _parts(500)
    halves = [
        stream.accumulate(stream.empty(Z[s].mean(axis=0), 2), Z[s], part[s])
        for s in (slice(0, 200), slice(200, 500))
    ]
    whole = stream.accumulate(stream.empty(Z.mean(axis=0), 2), Z, part)
    merged = stream.merge(*halves)
    for p in (0, 1):
        a = gram.affine_gram(merged.gram[p], merged.shift, whole.shift, np.ones(3))
        np.testing.assert_allclose(a, whole.gram[p], rtol=1e-9, atol=1e-8)


@pytest.fixture(scope="module")
def streamed_run(parquet_dir):
    """A streamed float64 run on the directory, prepared and trained (momentum, 400 steps)."""
    folder, _ = parquet_dir
    cfg = typed_config(
        "data=file", f"data.path={folder}", "data.target=y", "data.stream=true",
        "train.batch_size=null", "train.epochs=400", "train.dtype=float64", "optimizer.lr=1e-4",
        "tracking.enabled=false",
    )  # fmt: skip
    p = prepare(cfg, "/")
    assert isinstance(p, Streamed)
    f = fit.fit(*p.arrays(0), spec=p.spec, hyper=p.hyper, key=jax.random.key(0), dtype=jnp.float64)
    return p, f


def test_streamed_full_batch_equals_the_in_memory_loop_on_the_same_split(parquet_dir, streamed_run):
    _, Z = parquet_dir
    p, streamed = streamed_run
    part = _parts(len(Z))
    tr, te = Z[part == 0], Z[part == 1]
    assert p.sizes(0) == (len(tr), len(te)) and p.n_rows == len(Z)
    st = data.Standardizer.fit(tr[:, :3], ("a", "b", "c")).with_target(tr[:, 3], key="k", value=0)
    X, y, X_test, y_test = st.apply(tr[:, :3]), st.apply_target(tr[:, 3]), None, None
    X_test, y_test = st.apply(te[:, :3]), st.apply_target(te[:, 3])
    memory = fit.fit(
        X, y, X_test, y_test, spec=p.spec, hyper=p.hyper, key=jax.random.key(0), dtype=jnp.float64
    )
    assert streamed.epochs_run == memory.epochs_run == 400
    np.testing.assert_allclose(streamed.theta, memory.theta, rtol=1e-9, atol=1e-9)
    for a, b in zip(streamed.history, memory.history, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-9)


def test_streamed_optimum_and_metrics_equal_numpy(parquet_dir, streamed_run):
    _, Z = parquet_dir
    p, f = streamed_run
    part = _parts(len(Z))
    tr, te = Z[part == 0], Z[part == 1]
    fold = p.evaluate([f])[0]
    A = np.column_stack([np.ones(len(tr)), tr[:, :3]])
    np.testing.assert_allclose(fold.theta_star, np.linalg.lstsq(A, tr[:, 3])[0], rtol=1e-7)
    for rows, got in ((tr, fold.train), (te, fold.test)):
        r = rows[:, 3] - fold.theta[0] - rows[:, :3] @ fold.theta[1:]
        mse = float(r @ r) / len(rows)
        r2 = 1 - float(r @ r) / float(np.sum((rows[:, 3] - rows[:, 3].mean()) ** 2))
        assert got["mse"] == pytest.approx(mse, rel=1e-7)
        assert got["rmse"] == pytest.approx(np.sqrt(mse), rel=1e-7)
        assert got["r2"] == pytest.approx(r2, rel=1e-9)
    X_std = (tr[:, :3] - tr[:, :3].mean(axis=0)) / tr[:, :3].std(axis=0)
    cond = np.linalg.cond(np.column_stack([np.ones(len(tr)), X_std]))
    assert fold.condition_number == pytest.approx(cond, rel=1e-6)


def test_streamed_mini_batches_take_the_in_memory_order_from_a_cached_row_file(
    parquet_dir, tmp_path, monkeypatch
):
    _, Z = parquet_dir
    monkeypatch.setenv("LREXP_CACHE", str(tmp_path))
    cfg = typed_config(
        "data=file", f"data.path={parquet_dir[0]}", "data.target=y", "data.stream=true",
        "train.batch_size=64", "train.epochs=3", "tracking.enabled=false",
    )  # fmt: skip
    p = prepare(cfg, "/")
    (cached,) = tmp_path.glob("rows-*.npy")
    host = p.arrays(0)[0]
    part = _parts(len(Z))
    # the training rows in the files' order, less the pass's shift, in float32
    np.testing.assert_allclose(host.Z, Z[part == 0] - p.sums.shift, rtol=1e-6, atol=1e-6)
    key = jax.random.key(7)
    streamed = fit.fit(*p.arrays(0), spec=p.spec, hyper=p.hyper, key=key)
    # In memory: the same rows, standardized alike, on the device; the loop chunked as for them.
    rows = (np.asarray(host.Z, np.float64) - host.center) / host.scale
    te = (Z[part == 1] - p.sums.shift - host.center) / host.scale
    spec = loop_spec(cfg, len(rows), 3)
    assert (p.spec.chunk, spec.chunk) == (1, 3)  # the host gathers a call's batches: one epoch
    memory = fit.fit(rows[:, :-1], rows[:, -1], te[:, :-1], te[:, -1], spec=spec,
                     hyper=p.hyper, key=key)  # fmt: skip
    assert streamed.steps == memory.steps == 3 * -(-len(rows) // 64)
    np.testing.assert_allclose(streamed.theta, memory.theta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(streamed.history.train_mse, memory.history.train_mse, rtol=1e-5)
    before = cached.stat().st_mtime_ns
    prepare(cfg, "/")  # a second run reuses the row file
    assert [cached] == list(tmp_path.glob("rows-*")) and cached.stat().st_mtime_ns == before


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["data.stream=maybe"], "data.stream"),
        (["train.batch_size=32", "train.shuffle_block=8"], "train.shuffle_block"),
        (["train.folds=3"], "train.folds"),
        (["data.stream=false"], "data.path"),  # a directory is read streamed only
    ],
)
def test_what_streaming_cannot_do_is_refused_by_key(parquet_dir, overrides, key):
    folder, _ = parquet_dir
    base = ["data=file", f"data.path={folder}", "data.target=y", "tracking.enabled=false"]
    cfg = typed_config(*base, "data.stream=true", "train.batch_size=null", *overrides)
    with pytest.raises(config.ConfigError) as err:
        prepare(cfg, "/")
    assert err.value.key == key


def test_a_missing_value_names_its_row_or_is_dropped(tmp_path):
    y = np.arange(40.0) + np.random.default_rng(2).normal(size=40)
    x = np.arange(40.0)
    x[17] = np.nan
    pq.write_table(pa.table({"x": x, "y": y}), tmp_path / "gap.parquet")
    base = ["data=file", "data.path=gap.parquet", "data.target=y", "data.stream=true"]
    base += ["train.batch_size=null", "tracking.enabled=false"]
    with pytest.raises(data.DataError, match="row 18 has a missing value in column 'x'"):
        prepare(typed_config(*base), tmp_path)
    p = prepare(typed_config(*base, "data.dropna=true"), tmp_path)
    assert p.n_rows == 39 and p.dataset.dropped_rows == 1


def test_auto_streams_only_parquet_above_the_memory_share(parquet_dir, small_csv):
    folder, _ = parquet_dir
    auto = ["data=file", "data.target=y", "train.batch_size=null", "tracking.enabled=false"]
    small = folder / "part-0.parquet"
    assert not isinstance(prepare(typed_config(*auto, f"data.path={small}"), "/"), Streamed)
    assert isinstance(prepare(typed_config(*auto, f"data.path={folder}"), "/"), Streamed)
    text = folder.parent / "text.parquet"  # auto leaves what streaming refuses to the loader
    pq.write_table(pa.table({"x": ["a", "b", "a", "b"], "y": [1.0, 2.0, 3.0, 5.0]}), text)
    with pytest.raises(data.DataError, match="categorical=onehot"):
        prepare(typed_config(*auto, f"data.path={text}"), "/")
    cfg = typed_config("data=csv", f"data.path={small_csv}", "data.target=price",
                       "data.stream=true", "train.batch_size=null")  # fmt: skip
    with pytest.raises(config.ConfigError, match="streams Parquet only"):
        prepare(cfg, "/")


def test_stream_true_through_the_cli_logs_a_finished_run(
    parquet_dir, tracked, store_uri, experiment
):
    folder, Z = parquet_dir
    cmd = [
        sys.executable, "-m", "lrexp.train", "data=file", f"data.path={folder}", "data.target=y",
        "data.stream=true", "train.batch_size=null", "train.epochs=50", "tracking.log_model=false",
        *tracked,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "streamed" in done.stdout
    (run,) = runs_in(store_uri, experiment)
    assert run.info.status == "FINISHED"
    assert run.data.params["run.n_rows"] == str(len(Z))
    assert run.data.params["data.stream"] == "True"
    assert run.data.metrics["final_test_r2"] > 0.9


RSS_PROBE = """
import json, re, sys
from pathlib import Path
from lrexp.core import stream
def peak_kib():  # VmHWM: the peak of this program (ru_maxrss: of the parent, if higher)
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
def run(path):
    source = stream.open_source(Path(path), target="y", features=None)
    return stream.stream_pass(source, seed=0, test_fraction=0.2, folds=None, dropna=False)
run(sys.argv[1])  # a small file first: the code the pass runs is loaded, and counted, here
before = peak_kib()
done = run(sys.argv[2])
after = peak_kib()
print(json.dumps({"rows": int(round(done.sums.n.sum())), "kib": after - before}))
"""


def _write(path: Path, rows: int, chunk: int) -> None:
    rng = np.random.default_rng(3)
    names = [f"x{j}" for j in range(10)] + ["y"]
    with pq.ParquetWriter(path, pa.schema([(c, pa.float64()) for c in names])) as w:
        for start in range(0, rows, chunk):
            block = rng.normal(size=(min(chunk, rows - start), 11))
            w.write_table(pa.table({c: block[:, j] for j, c in enumerate(names)}), 1 << 16)


def test_a_streamed_pass_stays_within_a_memory_budget(tmp_path):
    """4e6 rows × 11 float64 columns (352 MB as arrays, in row groups of 65536 rows) pass in
    under 112 MiB more than the interpreter's peak before: memory O(M²) plus a row group and a
    batch, not the file (bench.py --only stream: the same as the rows grow to 5e7)."""
    rows, budget_kib = 4_000_000, 112 * 1024
    _write(tmp_path / "small.parquet", 1000, 1000)
    _write(tmp_path / "big.parquet", rows, 500_000)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    args = [str(tmp_path / "small.parquet"), str(tmp_path / "big.parquet")]
    probe = subprocess.run([sys.executable, "-c", RSS_PROBE, *args], capture_output=True,
                           text=True, timeout=60, env=env)  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-2000:]
    got = json.loads(probe.stdout)
    assert got["rows"] == rows
    assert rows * 11 * 8 > 2.5 * budget_kib * 1024  # the arrays would not fit the budget
    assert got["kib"] < budget_kib, got
