"""Data from files, end to end: real CSV, TSV, semicolon CSV, Parquet and Feather files on disk,
trained through ``pipeline.run`` and the command line; θ against NumPy's lstsq on the same rows
read by pandas; one-hot categories recorded with the run and applied by the logged model; bad
files refused in one line before any run exists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from conftest import runs_in, typed_config
from hydra.core.global_hydra import GlobalHydra
from test_bad_input import IN_PROCESS, Case, check_refused

from lrexp import pipeline, train

# Full-batch L-BFGS in float64 lands on the least-squares θ of the training rows.
EXACT = ["optimizer=lbfgs", "train.dtype=float64", "train.batch_size=null", "train.steps=60"]


def houses(n: int = 90, seed: int = 0) -> pd.DataFrame:
    """price = 3 + 0.5·area − 2·rooms + a city's premium (+ small noise)."""
    rng = np.random.default_rng(seed)
    area, rooms = rng.normal(100, 20, n), rng.integers(1, 6, n).astype(float)
    city = rng.choice(["Paris", "Lyon", "Nice"], n)
    premium = pd.Series(city).map({"Lyon": 0.0, "Nice": 5.0, "Paris": 20.0}).to_numpy()
    price = 3 + 0.5 * area - 2 * rooms + premium + 0.1 * rng.normal(size=n)
    return pd.DataFrame({"area": area, "rooms": rooms, "city": city, "price": price})


WRITERS = {
    "houses.csv": lambda f, p: f.to_csv(p, index=False),
    "houses.tsv": lambda f, p: f.to_csv(p, index=False, sep="\t"),
    "semicolon.csv": lambda f, p: f.to_csv(p, index=False, sep=";"),
    "houses.parquet": lambda f, p: f.to_parquet(p),  # pandas' index saved: not a feature
    "houses.feather": lambda f, p: feather.write_feather(pa.Table.from_pandas(f), p),
}
READERS = {".csv": pd.read_csv, ".tsv": lambda p: pd.read_csv(p, sep="\t")}
READERS |= {".parquet": pd.read_parquet, ".feather": pd.read_feather}


def lstsq_on_train_rows(frame: pd.DataFrame, features: list[str], p: pipeline.Prepared):
    """θ* by NumPy on the training rows of ``frame`` (read by pandas, not by lrexp)."""
    train_rows = p.parts[0][0]
    X = frame[features].to_numpy(np.float64)[train_rows]
    design = np.column_stack([np.ones(len(X)), X])
    return np.linalg.lstsq(design, frame["price"].to_numpy()[train_rows], rcond=None)[0]


@pytest.mark.parametrize("name", list(WRITERS))
def test_each_format_trains_to_the_least_squares_theta(tmp_path, name):
    WRITERS[name](houses(), tmp_path / name)
    frame = pd.read_csv(tmp_path / name, sep=";") if name == "semicolon.csv" else None
    frame = READERS[Path(name).suffix](tmp_path / name) if frame is None else frame
    overrides = [
        "data=file",
        f"data.path={name}",
        "data.target=price",
        "data.features=[area,rooms]",
    ]
    cfg = typed_config(*overrides, *EXACT, "tracking.enabled=false")
    p = pipeline.prepare(cfg, tmp_path)
    assert p.dataset.feature_names == ("area", "rooms") and len(p.dataset.y) == 90
    outcome = pipeline.run(cfg, base_dir=tmp_path, overrides=overrides)
    expected = lstsq_on_train_rows(frame, ["area", "rooms"], p)
    np.testing.assert_allclose(outcome.theta, expected, rtol=1e-6, atol=1e-8)


def test_onehot_categories_are_recorded_and_the_logged_model_reads_raw_strings(
    tmp_path, store_uri, experiment
):
    import mlflow

    frame = houses()
    frame.to_csv(tmp_path / "houses.csv", index=False)
    overrides = ["data=csv", "data.path=houses.csv", "data.target=price",
                 "data.categorical=onehot", *EXACT]  # fmt: skip
    cfg = typed_config(*overrides, f"tracking.uri={store_uri}", f"tracking.experiment={experiment}")
    p = pipeline.prepare(cfg, tmp_path)
    assert p.dataset.feature_names == ("area", "rooms", "city=Nice", "city=Paris")
    outcome = pipeline.run(cfg, base_dir=tmp_path, overrides=overrides)
    encoded = frame.assign(
        **{"city=Nice": frame.city == "Nice", "city=Paris": frame.city == "Paris"}
    )
    names = ["area", "rooms", "city=Nice", "city=Paris"]
    np.testing.assert_allclose(
        outcome.theta, lstsq_on_train_rows(encoded, names, p), rtol=1e-6, atol=1e-8
    )

    (run,) = runs_in(store_uri, experiment)
    client = mlflow.tracking.MlflowClient(store_uri)
    theta = json.loads(Path(client.download_artifacts(run.info.run_id, "theta.json")).read_text())
    assert theta["categories"] == {"city": ["Lyon", "Nice", "Paris"]}
    assert theta["features"] == names and theta["columns"] == ["area", "rooms", "city"]
    assert theta["example"][0] == [frame.area[0], frame.rooms[0], frame.city[0]]
    stored = client.download_artifacts(run.info.run_id, "categories.json")
    assert json.loads(Path(stored).read_text()) == theta["categories"]

    # The logged model, loaded as a served model would be: raw columns in, city as strings.
    mlflow.set_tracking_uri(store_uri)
    (logged,) = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list"
    )
    model = mlflow.pyfunc.load_model(f"models:/{logged.model_id}")
    inputs = {c.name: c.type.name for c in model.metadata.get_input_schema().inputs}
    assert inputs == {"area": "double", "rooms": "double", "city": "string"}
    new = pd.DataFrame({"area": [80.0, 120.5, 99.0], "rooms": [2.0, 4.0, 3.0],
                        "city": ["Lyon", "Paris", "Nice"]})  # fmt: skip
    X = np.column_stack([new.area, new.rooms, new.city == "Nice", new.city == "Paris"])
    np.testing.assert_allclose(model.predict(new), outcome.theta[0] + X @ outcome.theta[1:])
    with pytest.raises(Exception, match="'Rome' is no category of column 'city'"):
        model.predict(new.assign(city=["Lyon", "Rome", "Nice"]))


def test_dropna_drops_rows_and_logs_how_many(tmp_path, store_uri, experiment):
    frame = houses()[["area", "rooms", "price"]].astype(object)
    frame.loc[[3, 10], "area"], frame.loc[[10, 50], "price"] = "", "NA"  # 3 rows with a hole
    frame.to_csv(tmp_path / "holes.csv", index=False)
    overrides = ["data=csv", "data.path=holes.csv", "data.target=price", "data.dropna=true",
                 "tracking.log_model=false", *EXACT]  # fmt: skip
    cfg = typed_config(*overrides, f"tracking.uri={store_uri}", f"tracking.experiment={experiment}")
    assert len(pipeline.prepare(cfg, tmp_path).dataset.y) == 87
    pipeline.run(cfg, base_dir=tmp_path, overrides=overrides)
    (run,) = runs_in(store_uri, experiment)
    assert run.data.metrics["data_dropped_rows"] == 3
    assert run.data.params["run.dropped_rows"] == "3" and run.data.params["run.n_rows"] == "87"


def lrexp_train(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "lrexp.train", *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_command_line_trains_on_parquet_into_the_default_store(tmp_path):
    houses().to_parquet(tmp_path / "houses.parquet")
    proc = lrexp_train(tmp_path, "data=file", "data.path=houses.parquet", "data.target=price",
                       "data.categorical=onehot", "tracking.log_model=false", *EXACT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (run,) = runs_in(f"sqlite:///{tmp_path}/mlflow.db", "lrexp")
    assert run.info.status == "FINISHED"
    assert run.data.params["data.path"] == "houses.parquet"
    assert run.data.params["run.n_features"] == "4"  # area, rooms, city=Nice, city=Paris
    assert abs(run.data.metrics["model/theta_4"] - 20.0) < 0.1  # Paris over Lyon


# --- bad files: one line, exit 2, no run ------------------------------------------------------
BAD_FILES = {
    "binary.csv": b"area,price\n1,2\n\x00\x01\x02\x03",
    "latin1.csv": "area,price\n1,2\n2,caf\xe9\n".encode("latin-1"),
    "fake.parquet": b"area,price\n1,2\n2,3\n",
    "hole.csv": b"area,price\n1,2\n2,\n3,4\n",
    "text.csv": b"area,price\n1,2\n\n2,3\nbig,4\n",
}
GOOD = "area,price\n" + "".join(f"{i},{2 * i + 1}\n" for i in range(10))
FILE = ["data=file", "data.target=price"]
BAD = {
    "binary": Case([*FILE, "data.path=binary.csv"], "data.path", "binary.csv", "is not UTF-8"),
    "latin-1": Case([*FILE, "data.path=latin1.csv"], "data.path", "latin1.csv", "is not UTF-8"),
    "not-parquet": Case(
        [*FILE, "data.path=fake.parquet"], "data.path", "fake.parquet", "is not a Parquet file"
    ),
    "missing-cell": Case(
        [*FILE, "data.path=hole.csv"], "data.dropna", "False", "'' (column 'price', line 3)"
    ),
    "non-numeric-cell": Case(
        [*FILE, "data.path=text.csv"],
        "data.categorical",
        "error",
        "'big' (column 'area', line 5) is not a number",
    ),
    "no-such-parquet": Case(
        [*FILE, "data.path=none.parquet"], "data.path", "none.parquet", "an existing Parquet file"
    ),
    "unknown-format": Case(
        [*FILE, "data.path=good.csv", "data.format=excel"], "data.format", "excel", "parquet"
    ),
    "unknown-categorical": Case(
        [*FILE, "data.path=good.csv", "data.categorical=drop"], "data.categorical", "drop", "onehot"
    ),
    "long-delimiter": Case(
        [*FILE, "data.path=good.csv", "data.delimiter=';;'"], "data.delimiter", ";;", "one char"
    ),
    "delimiter-for-parquet": Case(
        ["data=csv", "data.target=price", "data.path=good.parquet", "data.delimiter=';'"],
        "data.delimiter",
        ";",
        "applies to csv and tsv files, not parquet",
    ),
}


def write_bad_files(directory: Path) -> None:
    for name, content in BAD_FILES.items():
        (directory / name).write_bytes(content)
    (directory / "good.csv").write_text(GOOD)
    pq.write_table(pa.table({"area": [1.0, 2.0], "price": [3.0, 5.0]}), directory / "good.parquet")


@pytest.mark.parametrize("name", list(BAD))
def test_bad_file_is_refused_in_one_line_without_a_run(name, tmp_path, monkeypatch, capsys):
    write_bad_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    argv = ["lrexp.train", *BAD[name].overrides, f"hydra.run.dir={tmp_path}/outputs", *IN_PROCESS]
    monkeypatch.setattr(sys, "argv", argv)
    GlobalHydra.instance().clear()
    try:
        with pytest.raises(SystemExit) as exit_:
            train.cli()
    finally:
        GlobalHydra.instance().clear()
    check_refused(BAD[name], exit_.value.code, capsys.readouterr().err, tmp_path)


def test_real_command_line_refuses_a_file_that_is_not_parquet(tmp_path):
    write_bad_files(tmp_path)
    proc = lrexp_train(tmp_path, *BAD["not-parquet"].overrides)
    check_refused(BAD["not-parquet"], proc.returncode, proc.stderr, tmp_path)
