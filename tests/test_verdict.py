"""Every run gets an honest verdict: converged or not (excess train MSE over least squares, as a
share of var(y)), with advice, recorded as tags and a metric, printed, and shown in leaderboards.

Unit tests check :mod:`lrexp.core.verdict` against numbers worked by hand; the rest run the real
pipeline on real Hydra configs into a real SQLite store. The oracle for the metric is NumPy's
lstsq on the training rows and ``np.var`` of their targets.
"""

from __future__ import annotations

import csv
import io
import math
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import runs_in, typed_config
from mlflow.tracking import MlflowClient

from lrexp import compare, pipeline
from lrexp.core import verdict
from lrexp.core.verdict import EXCESS_TOL, Facts, judge
from lrexp.pipeline import Diverged, runner

EARLY = ["train.epochs=1", "optimizer=sgd", "optimizer.lr=1e-3"]  # stopped far too early
QUICK = ["tracking.log_model=false"]


# --- the criterion and the advice, by hand ------------------------------------------------------
def geometric(excess0: float, rate: float, epochs: int, optimal: float, var_y: float):
    """A train-MSE curve whose excess shrinks ×rate per epoch, and its summary metrics."""
    e = excess0 * rate ** np.arange(epochs + 1)
    curve = optimal + var_y * e
    summary = {"final_train_mse": curve[-1], "optimal_train_mse": optimal}
    return curve, summary | {"excess_train_mse": e[-1], "epochs_to_tol": None}


def test_excess_is_the_train_mse_above_the_optimum_as_a_share_of_var_y():
    assert verdict.excess_mse(1.5, 0.5, 4.0) == 0.25
    assert verdict.excess_mse(3e-10, 0.0, 2.0) == pytest.approx(1.5e-10)  # MSE* = 0 is fine
    assert math.isnan(verdict.excess_mse(1.0, 1.0, 0.0))


def test_the_threshold_is_inclusive_and_the_worst_fold_decides():
    f = Facts("sgd", 0.01, 10, stable_lr=0.1)
    curve = np.linspace(2.0, 1.0, 11)
    at = {"excess_train_mse": EXCESS_TOL, "final_train_mse": 1.0, "optimal_train_mse": 0.9}
    assert judge(at, [curve], f, diverged=False).converged
    above = at | {"excess_train_mse": EXCESS_TOL * 1.001}
    assert not judge(above, [curve], f, diverged=False).converged
    folds = {"fold_1/excess_train_mse": 0.001, "fold_2/excess_train_mse": 0.03}
    v = judge(folds, [curve, curve], f, diverged=False)
    assert not v.converged and v.excess_train_mse == 0.03 and "fold 2" in v.reason
    assert not judge(at, [curve], f, diverged=True).converged  # diverged is never converged


def test_a_falling_loss_gets_the_epochs_its_rate_needs():
    # excess 0.8·0.9^t: at t=20 it is 0.09726; 0.09726·0.9^x = EXCESS_TOL/2 at x = 28.17,
    # so 20 + 28.17 → 49 epochs (two significant digits, rounded up).
    curve, summary = geometric(0.8, 0.9, 20, optimal=0.5, var_y=2.0)
    v = judge(summary, [curve], Facts("sgd", 0.05, 20, stable_lr=0.1), diverged=False)
    assert not v.converged and "falling" in v.reason
    assert v.advice[0].startswith("more epochs: train.epochs=49 ")
    assert v.advice[-1].startswith("optimizer=lbfgs")
    assert len(v.advice) == 2  # lr 0.05 is near the bound 0.1: no larger lr offered


def test_a_rising_or_diverged_run_is_told_a_smaller_lr_from_the_stable_bound():
    curve, summary = geometric(0.1, 1.2, 12, optimal=1.0, var_y=1.0)
    f = Facts("momentum", 0.5, 12, stable_lr=0.2)
    v = judge(summary, [curve], f, diverged=False)
    assert "rising" in v.reason
    assert v.advice[0].startswith("a smaller lr: optimizer.lr=0.1 ")  # half the bound 0.2
    d = judge(summary, [curve], f, diverged=True)
    assert d.reason == "diverged" and "optimizer.lr=0.1 " in d.advice[0]
    adam = judge(summary, [curve], Facts("adam", 0.05, 12), diverged=False)
    assert "optimizer.lr=0.005 " in adam.advice[0]  # no bound known: ÷10


def test_a_stalled_run_with_a_tiny_lr_is_told_a_larger_one():
    curve = np.full(30, 3.0)  # flat, far above the optimum 1.0 (var 1: excess 2)
    summary = {"excess_train_mse": 2.0, "final_train_mse": 3.0, "optimal_train_mse": 1.0}
    v = judge(summary, [curve], Facts("sgd", 1e-6, 29, stable_lr=0.08), diverged=False)
    assert "stalled" in v.reason and v.advice[0].startswith("a larger lr: optimizer.lr=0.04 ")


def test_the_trend_is_read_in_any_units_of_the_curve():
    curve, summary = geometric(0.8, 0.9, 20, optimal=0.5, var_y=2.0)
    t = verdict.trend(curve / 7.0, summary["final_train_mse"], 0.5)
    assert t.kind == "falling" and t.rate == pytest.approx(0.9)


# --- real runs ----------------------------------------------------------------------------------
def oracle_excess(p, theta: np.ndarray) -> float:
    """(MSE(θ) − MSE(lstsq)) / var(y) on the first split's training rows, by NumPy alone."""
    tr = p.parts[0][0]
    A = np.column_stack([np.ones(len(tr)), p.dataset.X[tr]])
    y = p.dataset.y[tr]
    star = np.linalg.lstsq(A, y, rcond=None)[0]
    return (np.mean((y - A @ theta) ** 2) - np.mean((y - A @ star) ** 2)) / np.var(y)


def test_noise_free_data_is_judged_by_its_excess_not_a_ratio_to_mse_star():
    """With data.noise=0 the optimum's MSE is ~0: converged and stopped-early runs still part."""
    for extra, converged in (([], True), (EARLY, False)):
        p = pipeline.prepare(typed_config("data.noise=0", *extra, "tracking.enabled=false"))
        outcome = runner.conclude(p, runner.train_folds(p, progress=False), None)
        excess = outcome.summary["excess_train_mse"]
        assert excess == pytest.approx(oracle_excess(p, outcome.theta), rel=1e-6, abs=1e-12)
        assert outcome.summary["optimal_train_mse"] < 1e-20
        assert outcome.verdict.converged is converged
        assert (excess <= EXCESS_TOL) if converged else (excess > 0.5)


def test_runs_are_tagged_and_the_summary_says_so(tracked, store_uri, experiment, capsys):
    for extra in ([], EARLY):  # the default config converges; EARLY is stopped far too early
        overrides = [*tracked, *QUICK, *extra]
        outcome = pipeline.run(typed_config(*overrides), overrides=overrides)
        p = pipeline.prepare(typed_config(*overrides))  # the same split: to check the metric
        excess = oracle_excess(p, outcome.theta)
        assert outcome.summary["excess_train_mse"] == pytest.approx(excess, rel=1e-6)
    out = capsys.readouterr().out
    good, early = out.split("lrexp: sgd")
    assert "  converged: yes (excess train MSE " in good and "NOT" not in good
    assert "NOT converged: excess train MSE " in early
    for needle in ("try more epochs: train.epochs=", "optimizer.lr=", "try optimizer=lbfgs"):
        assert needle in early
    runs = {r.data.params["optimizer.name"]: r for r in runs_in(store_uri, experiment)}
    assert runs["momentum"].data.tags["lrexp.converged"] == "true"
    assert runs["momentum"].data.metrics["excess_train_mse"] <= EXCESS_TOL
    tags = runs["sgd"].data.tags
    assert tags["lrexp.converged"] == "false" and "optimizer=lbfgs" in tags["lrexp.advice"]
    assert tags["lrexp.verdict"].startswith("excess train MSE ")
    assert runs["sgd"].data.metrics["excess_train_mse"] > 0.5


def test_a_diverged_run_fails_tagged_not_converged(tracked, store_uri, experiment, capsys):
    overrides = [*tracked, *QUICK, "optimizer=sgd", "optimizer.lr=10", "train.epochs=2"]
    with pytest.raises(Diverged):
        pipeline.run(typed_config(*overrides), overrides=overrides)
    assert "NOT converged: diverged" in capsys.readouterr().out
    (run,) = runs_in(store_uri, experiment)
    assert run.info.status == "FAILED" and run.data.tags["lrexp.converged"] == "false"


def test_cv_summary_labels_its_means(capsys):
    cfg = typed_config("train.folds=3", "train.epochs=4", "train.tol=1e-3", "tracking.enabled=0")
    p = pipeline.prepare(cfg)
    outcome = runner.conclude(p, runner.train_folds(p, progress=False), None)
    runner.print_summary(p, outcome)
    out = capsys.readouterr().out
    assert "  epochs (mean over 3 folds) " in out and not re.search(r"\bepochs [0-9]", out)
    assert "tolerance met at epoch" not in out  # a mean over some folds, unlabelled: no more
    assert all(f"fold_{i}/excess_train_mse" in outcome.summary for i in (1, 2, 3))
    mean = np.mean([outcome.summary[f"fold_{i}/excess_train_mse"] for i in (1, 2, 3)])
    assert outcome.summary["excess_train_mse"] == pytest.approx(mean)


def test_sweep_leaderboard_and_compare_show_converged(tmp_path, capsys, monkeypatch):
    """A real batched (vmap) multirun of a converging and a far-too-early job."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["-m", "lrexp.train", "-m", "hydra/launcher=vmap", *QUICK, "optimizer=sgd"]
    args += ["train.epochs=3", "optimizer.lr=1e-4,0.05", f"tracking.uri={uri}"]
    proc = subprocess.run(
        [sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 finished (1 converged)" in proc.stdout and " converged  run" in proc.stdout
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("lrexp").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("lrexp.sweep") == "true"]
    verdicts = {r.data.params["optimizer.lr"]: r.data.tags["lrexp.converged"] for r in runs
                if r is not parent}  # fmt: skip
    assert verdicts == {"0.0001": "false", "0.05": "true"}
    board_csv = client.download_artifacts(parent.info.run_id, "leaderboard.csv", str(tmp_path))
    with open(board_csv) as f:
        board = list(csv.DictReader(io.StringIO(f.read())))
    assert [r["converged"] for r in board] == ["true", "false"]  # best test MSE first
    assert float(board[0]["excess_train_mse"]) <= EXCESS_TOL < float(board[1]["excess_train_mse"])
    assert parent.data.metrics["jobs_converged"] == 1
    args = ["--uri", uri, "--sweep", parent.info.run_id, "--plot", str(tmp_path / "o.svg")]
    monkeypatch.setenv("COLUMNS", "400")  # every column on one line
    assert compare.main(args) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    top = next(i for i, line in enumerate(lines) if line.split()[:1] == ["run"])
    header = lines[top].split()
    assert {"converged", "excess_train_mse"} <= set(header)
    rows = [line.split() for line in lines[top + 1 : top + 3]]
    assert [row[header.index("converged")] for row in rows] == ["true", "false"]
