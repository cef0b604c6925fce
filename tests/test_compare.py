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

import numpy as np
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


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    """A terminal wide enough for the whole table on one line (tests of the fit narrow it)."""
    monkeypatch.setenv("COLUMNS", "1000")


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
    assert plot.exists(), proc.stdout
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


# --- failed and diverged runs, skipped runs, the terminal's width, the overlay's highlight -------
@dataclass(frozen=True)
class Mixed:
    uri: str
    experiment: str
    healthy: list[str]
    diverged: str
    skipped: str  # skipped for healthy[0]: no params of its own
    orphan: str  # skipped for a run that is gone


@pytest.fixture(scope="module")
def mixed(store_uri, tmp_path_factory) -> Mixed:
    """Two healthy runs, one that diverged (FAILED, finite but huge values), and two runs as
    ``tracking.skip_finished`` leaves them (metrics and a ``lrexp.skipped_for`` tag, no params)."""
    base = tmp_path_factory.mktemp("mixed")
    client = MlflowClient(store_uri)
    name = f"test-{uuid.uuid4().hex[:12]}"
    client.create_experiment(name, artifact_location=str(base / "artifacts"))
    tracked = [f"tracking.uri={store_uri}", f"tracking.experiment={name}"]
    healthy = []
    for lr in ("0.05", "0.01"):
        overrides = [*tracked, *SMALL, f"optimizer.lr={lr}"]
        run = pipeline.run(typed_config(*overrides), base_dir=base, overrides=overrides)
        healthy.append(run.run_id)
    overrides = [*tracked, "optimizer=sgd", "optimizer.lr=0.12", "train.epochs=5"]
    overrides.append("train.reduction=sum")  # the step on the batch's TSSE: lr 0.12 diverges
    overrides.append("tracking.log_model=false")
    with pytest.raises(pipeline.Diverged):
        pipeline.run(typed_config(*overrides), base_dir=base, overrides=overrides)
    (diverged,) = [r.info.run_id for r in runs_in(store_uri, name) if r.info.status == "FAILED"]
    exp_id = client.get_experiment_by_name(name).experiment_id
    skipped = []
    for original in (healthy[0], "0" * 32):
        run = client.create_run(exp_id, run_name="optimizer.lr=0.05 again")
        client.set_tag(run.info.run_id, "lrexp.skipped_for", original)
        for key, value in client.get_run(healthy[0]).data.metrics.items():
            client.log_metric(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id)
        skipped.append(run.info.run_id)
    return Mixed(store_uri, name, healthy, diverged, *skipped)


def mixed_board(mixed: Mixed, capsys, tmp_path: Path, *args: str) -> tuple[str, str]:
    """compare.main on the mixed experiment: (the ranked table, the lines after it)."""
    argv = ["--uri", mixed.uri, "--experiment", mixed.experiment, "--plot", str(tmp_path / "c.svg")]
    assert compare.main([*argv, *args]) == 0
    out = capsys.readouterr().out
    cut = re.search(r"^(objective:|converged=|left out:|\d+ skipped runs|overlay of)", out, re.M)
    return out[: cut.start()], out[cut.start() :]


def test_a_diverged_run_is_left_out_of_the_ranking_and_listed_apart_with_its_reason(
    mixed, capsys, tmp_path
):
    table, rest = mixed_board(mixed, capsys, tmp_path, "--sort", "gap_theta", "--desc")
    assert mixed.diverged not in table
    assert set(run_ids(table)) == {*mixed.healthy, mixed.skipped}
    assert "left out: 1 failed or diverged runs" in rest
    (line,) = [x for x in rest.splitlines() if mixed.diverged in x]
    assert "FAILED" in line
    reason = rest.splitlines()[rest.splitlines().index(line) + 1]
    assert "diverged at step" in reason
    svg = (tmp_path / "c.svg").read_text()
    assert "optimizer.lr=0.12" not in svg and "e+3" not in svg and "e+4" not in svg


def test_all_ranks_and_plots_the_diverged_run_too(mixed, capsys, tmp_path):
    metrics = MlflowClient(mixed.uri).get_run(mixed.diverged).data.metrics
    assert metrics["gap_theta"] > 1e6  # finite but huge: it would head a descending sort
    table, rest = mixed_board(mixed, capsys, tmp_path, "--sort", "gap_theta", "--desc", "--all")
    assert run_ids(table)[0] == mixed.diverged
    assert "failed or diverged" not in rest
    svg = (tmp_path / "c.svg").read_text()
    assert "optimizer.lr=0.12" in svg and "e+4" in svg  # the diverged curve: an axis to 1e40s


def test_a_skipped_run_takes_the_params_of_its_original_and_an_orphan_is_counted(
    mixed, capsys, tmp_path
):
    table, rest = mixed_board(mixed, capsys, tmp_path)
    assert [c for c in header(table) if "." in c] == ["optimizer.lr"]  # not every param
    (row,) = [x for x in table.splitlines() if mixed.skipped in x]
    assert " 0.05 " in row
    assert mixed.orphan not in table + rest
    assert "1 skipped runs left out: the run each was skipped for is gone" in rest


def test_the_table_fits_a_narrow_terminal_as_a_subprocess(mixed, tmp_path):
    argv = ["--uri", mixed.uri, "--experiment", mixed.experiment, "--all-columns"]
    proc = subprocess.run(
        [sys.executable, "-m", "lrexp.compare", *argv, "--plot", str(tmp_path / "n.png")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert max(map(len, lines)) <= 100, max(lines, key=len)
    assert {*mixed.healthy, mixed.skipped} <= set(run_ids(proc.stdout))
    assert "optimizer.name" in proc.stdout and "data.n" in proc.stdout  # wrapped, not dropped


def test_columns_picks_the_params_and_metrics_shown(mixed, capsys, tmp_path):
    table, _ = mixed_board(mixed, capsys, tmp_path, "--columns", "train.epochs,min_test_mse")
    columns = header(table)
    assert columns[-3:] == ["train.epochs", "min_test_mse", "run_id"]
    assert "optimizer.lr" not in columns


def test_overlay_highlights_the_best_with_a_legend_and_draws_the_rest_grey():
    from lrexp.report import plots
    from lrexp.report.svg import GREY, PALETTE

    x = np.arange(10)
    curves = {
        f"run {i}": ((x, 1.0 + i + 1 / (x + 1)), (x, 2.0 + i + 1 / (x + 1))) for i in range(27)
    }
    scores = {name: 2.0 + i for i, name in enumerate(curves)}
    svg = plots.overlay(curves, "the sweep's runs", scores=scores)
    assert (
        "the sweep&apos;s runs: best 5 of 27 highlighted" in svg
        or "best 5 of 27 highlighted" in svg
    )
    strokes = re.findall(r'<polyline [^>]*stroke="(#[0-9a-f]+)"', svg)
    assert strokes.count(GREY) == 2 * 22
    assert [strokes.count(c) for c in PALETTE[:5]] == [2] * 5
    for i in range(5):
        assert f"{i + 1}. run {i}  (test MSE {2.0 + i:.4g})" in svg
    assert "run 5" not in svg and "22 other runs" in svg
    assert svg.index(f'stroke="{GREY}"') < svg.index(f'stroke="{PALETTE[0]}"')  # grey beneath


def test_overlay_legend_sits_below_the_panels():
    from lrexp.report import plots

    x = np.arange(5)
    svg = plots.overlay({"a": ((x, x + 1.0), (x, x + 2.0))}, "t", scores={"a": 3.0})
    frame_bottom = max(
        float(m[0]) + float(m[1])
        for m in re.findall(
            r'<rect x="[^"]+" y="([^"]+)" width="[^"]+" height="([^"]+)" fill="white" stroke', svg
        )
    )
    label_y = float(re.search(r'<text x="[^"]+" y="([^"]+)">1\. a', svg)[1])
    assert label_y > frame_bottom
