"""The command line as a user types it: `python -m lrexp.train ...` in a fresh working directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import runs_in


def lrexp_train(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "lrexp.train", *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def run_id_of(stdout: str) -> str:
    match = re.search(r"MLflow run ([0-9a-f]{32})", stdout)
    assert match, stdout
    return match.group(1)


def test_compiled_programs_are_cached_across_runs_unless_turned_off(tmp_path):
    """JAX's persistent compilation cache: in $XDG_CACHE_HOME/lrexp/jax by default, none with
    JAX_COMPILATION_CACHE_DIR set empty; a cached run gives the same result."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    args = [sys.executable, "-m", "lrexp.train", "tracking.enabled=false", "train.epochs=2"]

    def run(**more: str) -> str:
        proc = subprocess.run(
            args, cwd=tmp_path, env={**env, **more}, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    first = run(XDG_CACHE_HOME=str(tmp_path / "xdg"))
    cached = list((tmp_path / "xdg" / "lrexp" / "jax").iterdir())
    assert len(cached) >= 3  # the training loop, the data, the metrics: every program
    assert run(XDG_CACHE_HOME=str(tmp_path / "xdg")) == first  # read back: same θ, same text
    run(XDG_CACHE_HOME=str(tmp_path / "off"), JAX_COMPILATION_CACHE_DIR="")
    assert not (tmp_path / "off").exists()


def test_adam_run_lands_in_sqlite_store_of_launch_directory(tmp_path):
    proc = lrexp_train(tmp_path, "optimizer=adam")
    assert proc.returncode == 0, proc.stderr
    # The default store is sqlite:///mlflow.db in the launch directory, not in Hydra's output dir.
    db = tmp_path / "mlflow.db"
    assert db.is_file()
    assert not list((tmp_path / "outputs").rglob("mlflow.db"))
    runs = runs_in(f"sqlite:///{db}", "lrexp")
    assert [r.info.run_id for r in runs] == [run_id_of(proc.stdout)]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "optimizer=adam"
    assert run.data.params["optimizer.name"] == "adam"
    assert run.data.tags["lrexp.command"].endswith("-m lrexp.train optimizer=adam")
    # The summary shows θ beside θ* and the way to open the UI.
    assert "θ*" in proc.stdout
    assert f"mlflow ui --app-name lrexp --backend-store-uri sqlite:///{db}" in proc.stdout
    # Adam on the default data lands near the optimum: the gap is reported and small.
    assert run.data.metrics["gap_theta"] < 0.05


def test_csv_data_with_relative_path(tmp_path, small_csv, store_uri, experiment):
    (tmp_path / "houses.csv").write_text(small_csv.read_text())
    proc = lrexp_train(
        tmp_path,
        "data=csv",
        "data.path=houses.csv",
        "data.target=price",
        "data.features=[a,b]",
        "optimizer=lbfgs",
        f"tracking.uri={store_uri}",
        f"tracking.experiment={experiment}",
    )
    assert proc.returncode == 0, proc.stderr
    (run,) = runs_in(store_uri, experiment)
    assert run.data.params["data.features"] == "['a', 'b']"
    assert abs(run.data.metrics["model/bias"] - 1.0) < 0.02
    assert abs(run.data.metrics["model/theta_1"] - 2.0) < 0.02
    assert abs(run.data.metrics["model/theta_2"] + 3.0) < 0.02


def test_tutorial_experiment_reports_cross_validation(tmp_path, store_uri, experiment):
    proc = lrexp_train(
        tmp_path,
        "experiment=tutorial",
        f"tracking.uri={store_uri}",
        f"tracking.experiment={experiment}",
    )
    assert proc.returncode == 0, proc.stderr
    assert "6-fold sequential CV test MSE" in proc.stdout and "optimistic" in proc.stdout
    (run,) = runs_in(store_uri, experiment)
    assert run.data.params["train.folds"] == "6"
    assert run.data.params["run.n_test"] == "60" and run.data.params["run.n_train"] == "300"
    assert {f"per_fold/fold_{k}/final_test_mse" for k in range(1, 7)} <= set(run.data.metrics)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["optimizer.lr=-1"], "optimizer.lr"),
        (["train.batch_size=10000"], "train.batch_size"),
        (["data=csv", "data.target=y"], "data.path"),
        (["data=csv", "data.path=nowhere.csv", "data.target=y"], "data.path"),
    ],
)
def test_bad_value_exits_2_with_one_line_error_and_no_run(tmp_path, overrides, key):
    proc = lrexp_train(tmp_path, *overrides)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("lrexp: error:")]
    assert len(errors) == 1 and key in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()  # nothing was created, not even the store


def test_unknown_key_fails_at_composition_naming_the_key(tmp_path):
    proc = lrexp_train(tmp_path, "train.epoch=3")
    assert proc.returncode != 0
    assert "train.epoch" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_help_lists_each_groups_options_and_no_internal_schema(tmp_path):
    from importlib.resources import files

    proc = lrexp_train(tmp_path, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "_schema" not in proc.stdout
    listed = dict(
        line.split(": ", 1)
        for line in proc.stdout.split("== Configuration groups ==")[1]
        .split("== Config ==")[0]
        .splitlines()[2:]
        if ": " in line
    )
    conf = files("lrexp.conf")
    groups = {
        d.name for d in conf.iterdir() if d.is_dir() and d.name not in ("hydra", "__pycache__")
    }
    assert set(listed) == groups
    for group, shown in listed.items():
        yamls = sorted(p.name[:-5] for p in (conf / group).iterdir() if p.name.endswith(".yaml"))
        assert shown.split(", ") == yamls, group  # the template is kept in step with conf/


def test_a_schema_chosen_as_an_option_is_refused_in_one_line_naming_the_options(tmp_path):
    proc = lrexp_train(tmp_path, "optimizer=adam_schema")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "lrexp: error: optimizer=adam_schema: an internal schema, not an option; allowed: "
        "adagrad, adam, adamw, lbfgs, lion, momentum, nesterov, rmsprop, sgd"
    )
    assert not (tmp_path / "mlflow.db").exists()
