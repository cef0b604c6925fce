"""Sweeps: parent and child runs, failures, parallel and batched launchers, skipping done work."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import typed_config
from mlflow.tracking import MlflowClient

from lrexp import pipeline
from lrexp.core import fit

SMALL = ["train.epochs=3", "tracking.log_model=false"]


def multirun(
    cwd: Path, uri: str, experiment: str, *overrides: str, small: list[str] = SMALL
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = [
        sys.executable,
        "-m",
        "lrexp.train",
        "-m",
        *small,
        *overrides,
        f"tracking.uri={uri}",
        f"tracking.experiment={experiment}",
    ]
    # Below joblib's 300 s idle timeout for its workers: a sweep whose command returns before
    # they have ended (they hold its output open) fails here rather than taking 5 minutes.
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def sweep_runs(uri: str, experiment: str):
    """(parent, children by name) of the only sweep in ``experiment``."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("lrexp.sweep") == "true"]
    children = {
        r.info.run_name: r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    return parent, children


def artifact_text(uri: str, run_id: str, path: str, tmp_path: Path) -> str:
    local = MlflowClient(uri).download_artifacts(run_id, path, str(tmp_path))
    return Path(local).read_text()


@pytest.fixture(scope="module")
def seed_sweep(tmp_path_factory):
    """optimizer × seed, run with Hydra's basic launcher on a fresh store."""
    tmp = tmp_path_factory.mktemp("sweep")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    proc = multirun(tmp, uri, "seeds", "optimizer=sgd,adam", "train.seed=0,1")
    return uri, proc, *sweep_runs(uri, "seeds")


def test_sweep_has_one_parent_and_a_named_child_per_job(seed_sweep):
    _, proc, parent, children = seed_sweep
    assert parent.info.status == "FINISHED"
    assert set(children) == {
        f"optimizer={o},train.seed={s}" for o in ("sgd", "adam") for s in (0, 1)
    }
    for run in children.values():
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.experiment_id == parent.info.experiment_id
    assert sorted(int(r.data.tags["lrexp.job_num"]) for r in children.values()) == [0, 1, 2, 3]
    # the config hash tells configs apart, and ignoring the seed pairs them up
    hashes = {r.data.tags["lrexp.config_hash"] for r in children.values()}
    noseed = {r.data.tags["lrexp.config_hash_noseed"] for r in children.values()}
    assert len(hashes) == 4 and len(noseed) == 2
    assert f"parent run {parent.info.run_id}" in proc.stdout


def test_parent_carries_leaderboard_best_child_and_overlay(seed_sweep, tmp_path):
    uri, _, parent, children = seed_sweep
    board = list(
        csv.DictReader(
            io.StringIO(artifact_text(uri, parent.info.run_id, "leaderboard.csv", tmp_path))
        )
    )
    by_test = sorted(children.values(), key=lambda r: r.data.metrics["final_test_mse"])
    assert [row["run"] for row in board] == [r.info.run_name for r in by_test]
    assert [float(row["test_mse"]) for row in board] == pytest.approx(
        [r.data.metrics["final_test_mse"] for r in by_test]
    )
    best = by_test[0]
    assert parent.data.metrics["best_test_mse"] == pytest.approx(
        best.data.metrics["final_test_mse"]
    )
    assert parent.data.params["best.run_id"] == best.info.run_id
    assert parent.data.metrics["jobs_finished"] == 4 and parent.data.metrics["jobs_failed"] == 0
    svg = artifact_text(uri, parent.info.run_id, "plots/overlay.svg", tmp_path)
    assert svg.startswith("<svg") and svg.count("<polyline") == 2 * len(children)
    assert "the sweep's runs: all 4" in svg  # 4 runs: each highlighted, in the legend
    assert f"1. {best.info.run_name}  (test MSE" in svg


def test_sweep_logs_the_model_of_its_best_child_only(tmp_path):
    import pandas as pd

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    multirun(
        tmp_path, uri, "models", "hydra/launcher=vmap", "optimizer.lr=0.001,0.01",
        small=["train.epochs=3"],
    )  # fmt: skip
    parent, children = sweep_runs(uri, "models")
    best = min(children.values(), key=lambda r: r.data.metrics["final_test_mse"])
    assert parent.data.params["best.run_id"] == best.info.run_id
    mlflow.set_tracking_uri(uri)
    models = mlflow.search_logged_models(
        experiment_ids=[parent.info.experiment_id], output_format="list"
    )
    assert [m.source_run_id for m in models] == [best.info.run_id]
    assert parent.data.params["best.model_uri"] == f"models:/{models[0].model_id}"
    assert MlflowClient(uri).get_run(best.info.run_id).info.status == "FINISHED"
    doc = json.loads(artifact_text(uri, best.info.run_id, "theta.json", tmp_path))
    X = np.random.default_rng(0).normal(size=(7, len(doc["features"])))
    predicted = mlflow.pyfunc.load_model(parent.data.params["best.model_uri"]).predict(
        pd.DataFrame(X, columns=doc["features"])
    )
    np.testing.assert_allclose(
        np.ravel(predicted), doc["theta"][0] + X @ doc["theta"][1:], rtol=1e-9
    )


def test_vmap_launchers_fast_composition_equals_hydras(tmp_path, monkeypatch):
    """A job's config built from an earlier job's (values set) is the config Hydra composes."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from hydra_plugins.lrexp_launcher.vmap_launcher import SweepConfigs

    monkeypatch.chdir(tmp_path)
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path("pkg://lrexp.conf"))
    args = ["hydra/launcher=vmap", "optimizer=momentum,adam", "optimizer.lr=0.1,0.2"]
    master = loader.load_configuration("config", overrides=args, run_mode=RunMode.MULTIRUN)
    fast = SweepConfigs(loader)
    jobs = [
        ["optimizer=momentum", "optimizer.lr=0.1", "train.seed=3"],
        ["optimizer=momentum", "optimizer.lr=0.2", "train.seed=4"],  # from the first: values
        ["optimizer=adam", "optimizer.lr=0.2", "train.seed=4"],  # another group: Hydra's own
        ["optimizer=adam", "optimizer.lr=0.3", "train.seed=5", "data.weights=[1,2]"],
        ["optimizer=adam", "optimizer.lr=0.4", "train.seed=6", "data.weights=[3,4]"],
    ]
    for job in jobs:
        fast.load_sweep_config(master, job)  # the sweeper's check, then the launcher's config
        ours = OmegaConf.to_container(fast.for_launch(master, job)[0])
        hydras = OmegaConf.to_container(loader.load_sweep_config(master, job))
        del hydras["hydra"]  # the launcher runs the task's config (Hydra's own node aside)
        assert ours == hydras, job


def test_parent_aggregates_each_config_across_seeds(seed_sweep, tmp_path):
    uri, _, parent, children = seed_sweep
    rows = list(
        csv.DictReader(io.StringIO(artifact_text(uri, parent.info.run_id, "seeds.csv", tmp_path)))
    )
    assert {row["config"] for row in rows} == {"optimizer=sgd", "optimizer=adam"}
    for row in rows:
        values = [
            children[f"{row['config']},train.seed={s}"].data.metrics["final_test_mse"]
            for s in (0, 1)
        ]
        assert int(row["seeds"]) == 2
        assert float(row["mean_test_mse"]) == pytest.approx(np.mean(values))
        assert float(row["std_test_mse"]) == pytest.approx(np.std(values, ddof=1))
        assert float(row["min_test_mse"]) == pytest.approx(min(values))


def test_failing_job_is_failed_with_its_reason_and_the_sweep_goes_on(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = multirun(tmp_path, uri, "failing", "optimizer.lr=0.01,-1")
    parent, children = sweep_runs(uri, "failing")
    good, bad = children["optimizer.lr=0.01"], children["optimizer.lr=-1"]
    assert good.info.status == "FINISHED"
    assert bad.info.status == "FAILED"
    assert "optimizer.lr=-1.0" in bad.data.tags["lrexp.failure_reason"]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["jobs_failed"] == 1
    assert "FAILED job 1: optimizer.lr=-1" in proc.stdout


@pytest.mark.parametrize("process", ["1", "0"], ids=["tracking-processes", "in-process"])
def test_vmap_sweep_records_good_bad_and_diverged_jobs_each_as_its_own_child(
    tmp_path, monkeypatch, process
):
    """With the batched launcher the CLI logs the children from two tracking processes, side by
    side (``LREXP_TRACKING_PROCESS=0``: from the launching process): the record is the same."""
    monkeypatch.setenv("LREXP_TRACKING_PROCESS", process)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    lrs = ["0.01", "-1", "1000000.0", "0.003", "0.02"]
    proc = multirun(tmp_path, uri, "mixed", "hydra/launcher=vmap", f"optimizer.lr={','.join(lrs)}")
    parent, children = sweep_runs(uri, "mixed")
    assert set(children) == {f"optimizer.lr={v}" for v in lrs}
    statuses = {
        k: (r.info.status, r.data.tags.get("lrexp.failure_reason")) for k, r in children.items()
    }
    for good in ("0.01", "0.003", "0.02"):
        run = children[f"optimizer.lr={good}"]
        assert run.info.status == "FINISHED", statuses
        assert len(MlflowClient(uri).get_metric_history(run.info.run_id, "loss/test_mse")) == 4
        assert run.data.params["optimizer.lr"] == str(float(good))
        lines = [x for x in proc.stdout.splitlines() if x.lstrip().startswith("#")]
        assert any(f"optimizer.lr={good}," in x and "test MSE" in x for x in lines), lines
    bad, diverged = children["optimizer.lr=-1"], children["optimizer.lr=1000000.0"]
    assert bad.info.status == "FAILED" and "optimizer.lr=-1.0" in statuses["optimizer.lr=-1"][1]
    assert diverged.info.status == "FAILED"
    assert "diverged at step" in diverged.data.tags["lrexp.failure_reason"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children.values()} == {parent.info.run_id}
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["jobs_failed"] == 2 and parent.data.metrics["jobs_finished"] == 3


def test_parallel_joblib_sweep_on_a_fresh_store_loses_no_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # does not exist yet: the sweep creates it
    optimizers = ["sgd", "momentum", "nesterov", "adam"]
    multirun(
        tmp_path,
        uri,
        "parallel",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"optimizer={','.join(optimizers)}",
    )
    parent, children = sweep_runs(uri, "parallel")
    assert set(children) == {f"optimizer={o}" for o in optimizers}
    statuses = {
        k: (r.info.status, r.data.tags.get("lrexp.failure_reason")) for k, r in children.items()
    }
    assert all(status == "FINISHED" for status, _ in statuses.values()), statuses
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children.values())
    assert MlflowClient(uri).search_runs(["0"]) == []  # nothing strayed into "Default"


def test_vmap_launcher_results_equal_one_job_at_a_time(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    grid = ["optimizer=momentum,adam", "optimizer.lr=0.003,0.01", "train.seed=0,1"]
    multirun(tmp_path, uri, "basic", *grid)
    multirun(tmp_path, uri, "vmap", "hydra/launcher=vmap", *grid)
    _, basic = sweep_runs(uri, "basic")
    _, batched = sweep_runs(uri, "vmap")
    assert set(batched) == set(basic) and len(basic) == 8
    keys = [
        "final_train_mse",
        "final_test_mse",
        "model/bias",
        "model/theta_1",
        "model/theta_5",
        "epochs_run",
    ]
    for name, run in basic.items():
        for key in keys:
            assert batched[name].data.metrics[key] == pytest.approx(
                run.data.metrics[key], rel=1e-5, abs=1e-6
            ), (name, key)
        history = MlflowClient(uri).get_metric_history(batched[name].info.run_id, "loss/test_mse")
        assert len(history) == 4  # its own curve: epochs 0..3


def test_skip_finished_reuses_the_finished_run_of_an_identical_config(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = typed_config(
        *SMALL, "optimizer=adam", f"tracking.uri={uri}", "tracking.experiment=resume"
    )
    first = pipeline.run(cfg, base_dir=tmp_path, overrides=["optimizer=adam"])
    proc = multirun(tmp_path, uri, "resume", "optimizer=adam,sgd", "tracking.skip_finished=true")
    assert f"already FINISHED as run {first.run_id}" in proc.stdout
    parent, children = sweep_runs(uri, "resume")
    skipped, trained = children["optimizer=adam"], children["optimizer=sgd"]
    assert skipped.data.tags["lrexp.skipped_for"] == first.run_id
    assert skipped.data.metrics["final_test_mse"] == pytest.approx(first.summary["final_test_mse"])
    assert "lrexp.skipped_for" not in trained.data.tags
    assert parent.data.metrics["jobs_finished"] == 2


def test_jobs_in_one_process_reuse_the_compiled_program():
    base = ["tracking.enabled=false", "train.epochs=2"]
    pipeline.run(typed_config(*base, "optimizer.lr=0.01"))
    compiled = fit.run_chunk._cache_size()
    for values in (
        ["optimizer.lr=0.02"],
        ["optimizer.lr=0.005", "optimizer.momentum=0.5"],
        ["train.seed=3", "train.tol=0.001"],
    ):
        pipeline.run(typed_config(*base, *values))
    assert fit.run_chunk._cache_size() == compiled


def test_run_left_active_in_a_reused_worker_does_not_swallow_the_next(store_uri, experiment):
    mlflow.set_tracking_uri(store_uri)
    exp_id = MlflowClient(store_uri).create_experiment(experiment)
    leftover = mlflow.start_run(experiment_id=exp_id).info.run_id  # a job that never ended it
    cfg = typed_config(*SMALL, f"tracking.uri={store_uri}", f"tracking.experiment={experiment}")
    outcome = pipeline.run(cfg)
    client = MlflowClient(store_uri)
    assert outcome.run_id != leftover
    assert client.get_run(leftover).info.status == "KILLED"
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED" and "mlflow.parentRunId" not in run.data.tags
    assert mlflow.active_run() is None


def test_a_sweeps_jobs_share_a_data_set_only_when_data_seed_and_split_are_equal(tmp_path):
    from lrexp.config import ConfigError

    shared: dict = {}
    a = pipeline.prepare(typed_config(*SMALL, "optimizer.lr=0.01"), tmp_path, shared=shared)
    b = pipeline.prepare(typed_config(*SMALL, "optimizer.lr=0.02"), tmp_path, shared=shared)
    other = pipeline.prepare(typed_config(*SMALL, "train.seed=1"), tmp_path, shared=shared)
    alone = pipeline.prepare(typed_config(*SMALL, "optimizer.lr=0.02"), tmp_path)
    assert b.dataset is a.dataset and other.dataset is not a.dataset
    np.testing.assert_array_equal(alone.dataset.X, b.dataset.X)
    for (tr, te), (tr0, te0) in zip(alone.parts, b.parts, strict=True):
        np.testing.assert_array_equal(tr, tr0)
        np.testing.assert_array_equal(te, te0)
    assert alone.checks == b.checks and not np.array_equal(other.dataset.X, a.dataset.X)
    with pytest.raises(ConfigError, match=r"train\.batch_size"):  # each job's own checks still run
        pipeline.prepare(typed_config(*SMALL, "train.batch_size=100000"), tmp_path, shared=shared)
