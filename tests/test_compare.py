"""python -m lrexp.compare: a leaderboard and an overlay plot of runs read back from a real store.

The runs are real: three in-process runs in one experiment, and one real multirun subprocess for a
sweep, all in the session's SQLite store. The oracle for every order is the metric values that
MLflow's own client reads back from the store.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import runs_in, typed_config
from mlflow.tracking import MlflowClient

from lrexp import compare, pipeline

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SMALL = ["train.epochs=3", "tracking.log_model=false", "optimizer=adam"]
# What the three runs differ in: the rest of their config (optimizer.name, data.*, ...) is shared.
VARIANTS = (["optimizer.lr=0.05"], ["optimizer.lr=0.01"], ["optimizer.lr=0.05", "train.seed=1"])


@dataclass(frozen=True)
class Runs:
    uri: str
    experiment: str
    ids: list[str]
    metrics: dict[str, dict[str, float]]  # by run id, as the store holds them


@dataclass(frozen=True)
class Sweep:
    experiment: str
    parent: str
    children: set[str]


def run_ids(text: str) -> list[str]:
    """The run ids in the table, top to bottom (the title line names the sweep's parent)."""
    return re.findall(r"\b[0-9a-f]{32}\b", text.split("\n", 1)[1])


def header(text: str) -> list[str]:
    """The table's column names (the line after the title)."""
    return text.splitlines()[1].split()


@pytest.fixture(scope="module")
def runs(store_uri, tmp_path_factory) -> Runs:
    """Three finished runs; two also carry a metric `partial`, and all a metric `reverse`."""
    base = tmp_path_factory.mktemp("compare")
    client = MlflowClient(store_uri)
    name = f"test-{uuid.uuid4().hex[:12]}"
    client.create_experiment(name, artifact_location=str(base / "artifacts"))
    tracked = [f"tracking.uri={store_uri}", f"tracking.experiment={name}"]
    ids = []
    for variant in VARIANTS:
        overrides = [*tracked, *SMALL, *variant]
        ids.append(
            pipeline.run(typed_config(*overrides), base_dir=base, overrides=overrides).run_id
        )
    for run_id in ids:  # `reverse` orders the runs opposite to their final test MSE
        test_mse = client.get_run(run_id).data.metrics["final_test_mse"]
        client.log_metric(run_id, "reverse", -test_mse)
    for run_id in ids[:2]:
        client.log_metric(run_id, "partial", float(len(run_id)))
    metrics = {i: client.get_run(i).data.metrics for i in ids}
    return Runs(store_uri, name, ids, metrics)


@pytest.fixture(scope="module")
def sweep(store_uri, tmp_path_factory) -> Sweep:
    """A real two-job multirun (`optimizer=sgd,adam`) launched as a user would."""
    cwd = tmp_path_factory.mktemp("sweep")
    name = f"test-{uuid.uuid4().hex[:12]}"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "lrexp.train", "-m", "optimizer=sgd,adam", "train.epochs=2"),
            *(
                "tracking.log_model=false",
                f"tracking.uri={store_uri}",
                f"tracking.experiment={name}",
            ),
        ],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    parent = re.search(r"lrexp sweep: parent run ([0-9a-f]{32})", proc.stdout).group(1)
    client = MlflowClient(store_uri)
    exp_id = client.get_experiment_by_name(name).experiment_id
    children = client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    return Sweep(name, parent, {r.info.run_id for r in children})


def leaderboard(runs: Runs, capsys, tmp_path: Path, *args: str) -> str:
    """Run compare.main on ``runs``' experiment; return what it printed."""
    argv = ["--uri", runs.uri, "--experiment", runs.experiment, "--plot", str(tmp_path / "c.png")]
    assert compare.main([*argv, *args]) == 0
    return capsys.readouterr().out


def refusal(capsys, *argv: str) -> str:
    """Run compare.main, expecting a refusal; return its one-line error."""
    assert compare.main(list(argv)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("lrexp: error: ")
    return line


def test_table_shows_only_the_params_that_differ_between_runs(runs, capsys, tmp_path):
    out = leaderboard(runs, capsys, tmp_path)
    columns = header(out)
    params = [c for c in columns if "." in c]
    assert sorted(params) == ["optimizer.lr", "train.seed"]
    assert {"run", "status", "final_train_mse", "final_test_mse", "gap_theta"} <= set(columns)
    assert sorted(run_ids(out)) == sorted(runs.ids)


def test_all_columns_shows_every_param(runs, capsys, tmp_path):
    columns = header(leaderboard(runs, capsys, tmp_path, "--all-columns"))
    logged = MlflowClient(runs.uri).get_run(runs.ids[0]).data.params
    assert set(logged) <= set(columns)
    assert {"optimizer.name", "optimizer.b1", "train.epochs", "data.n"} <= set(columns)


@pytest.mark.parametrize("metric", ["final_test_mse", "gap_theta", "reverse"])
@pytest.mark.parametrize("desc", [False, True])
def test_sort_orders_runs_by_the_stored_metric_values(runs, capsys, tmp_path, metric, desc):
    args = ["--sort", metric, *(["--desc"] if desc else [])]
    out = leaderboard(runs, capsys, tmp_path, *args)
    expected = sorted(runs.ids, key=lambda i: runs.metrics[i][metric], reverse=desc)
    assert run_ids(out) == expected
    assert header(out)[2] == metric


def test_another_sort_metric_changes_the_order(runs, capsys, tmp_path):
    by_test_mse = run_ids(leaderboard(runs, capsys, tmp_path))
    by_reverse = run_ids(leaderboard(runs, capsys, tmp_path, "--sort", "reverse"))
    assert by_reverse == by_test_mse[::-1]


@pytest.mark.parametrize("desc", [False, True])
def test_runs_without_the_sort_metric_go_last(runs, capsys, tmp_path, desc):
    args = ["--sort", "partial", *(["--desc"] if desc else [])]
    order = run_ids(leaderboard(runs, capsys, tmp_path, *args))
    assert order[-1] == runs.ids[2]  # the only run without `partial`
    assert sorted(order[:2]) == sorted(runs.ids[:2])


def test_top_lists_only_the_first_runs(runs, capsys, tmp_path):
    full = run_ids(leaderboard(runs, capsys, tmp_path, "--sort", "gap_theta"))
    top = run_ids(leaderboard(runs, capsys, tmp_path, "--sort", "gap_theta", "--top", "2"))
    assert top == full[:2]


def test_overlay_plot_is_a_png_file(runs, capsys, tmp_path):
    plot = tmp_path / "plots" / "overlay.png"
    argv = ["--uri", runs.uri, "--experiment", runs.experiment, "--plot", str(plot)]
    assert compare.main(argv) == 0
    assert str(plot) in capsys.readouterr().out
    assert plot.read_bytes().startswith(PNG_SIGNATURE)


def test_overlay_plot_ending_in_svg_is_an_svg_of_every_run(runs, capsys, tmp_path):
    import xml.etree.ElementTree as ET

    plot = tmp_path / "overlay.svg"
    argv = ["--uri", runs.uri, "--experiment", runs.experiment, "--plot", str(plot)]
    assert compare.main(argv) == 0
    root = ET.parse(plot).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert plot.read_text().count("<polyline") == 2 * len(runs_in(runs.uri, runs.experiment))


def test_sweep_option_lists_only_that_sweeps_child_runs_as_a_subprocess(store_uri, sweep, tmp_path):
    plot = tmp_path / "sweep.png"
    argv = ["--uri", store_uri, "--sweep", sweep.parent, "--plot", str(plot)]
    proc = subprocess.run(
        [sys.executable, "-m", "lrexp.compare", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(sweep.children) == 2
    assert set(run_ids(proc.stdout)) == sweep.children  # neither the parent nor other runs
    assert "optimizer.name" in header(proc.stdout)  # sgd against adam
    assert plot.read_bytes().startswith(PNG_SIGNATURE)


def test_experiment_listing_leaves_out_the_sweep_parent(store_uri, sweep, capsys, tmp_path):
    argv = ["--uri", store_uri, "--experiment", sweep.experiment, "--plot", str(tmp_path / "p.png")]
    assert compare.main(argv) == 0
    assert set(run_ids(capsys.readouterr().out)) == sweep.children


def test_unknown_experiment_is_refused_naming_the_experiments(runs, capsys):
    line = refusal(capsys, "--uri", runs.uri, "--experiment", "no-such-experiment")
    assert "no-such-experiment" in line and repr(runs.experiment) in line


def test_unknown_sweep_id_is_refused(runs, capsys):
    line = refusal(capsys, "--uri", runs.uri, "--sweep", "f" * 32)
    assert "--sweep=" + "f" * 32 in line and "no such run" in line


def test_a_run_that_is_not_a_sweep_parent_is_refused_naming_the_sweeps(store_uri, sweep, capsys):
    child = sorted(sweep.children)[0]
    line = refusal(capsys, "--uri", store_uri, "--experiment", sweep.experiment, "--sweep", child)
    assert "is not a sweep" in line and sweep.parent in line


def test_sort_metric_that_no_run_has_is_refused_naming_the_metrics(runs, capsys, tmp_path):
    plot = tmp_path / "never.png"
    args = ["--uri", runs.uri, "--experiment", runs.experiment, "--plot", str(plot)]
    line = refusal(capsys, *args, "--sort", "no_such_metric")
    assert "--sort=no_such_metric" in line
    assert "final_test_mse" in line and "gap_theta" in line
    assert not plot.exists()


def test_reading_a_missing_store_is_refused_and_creates_none(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = refusal(capsys)  # the default --uri: sqlite:///mlflow.db in the current directory
    assert str(tmp_path / "mlflow.db") in line
    assert not (tmp_path / "mlflow.db").exists()
