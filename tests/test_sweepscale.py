"""A batched sweep's children, logged a batch at a time (``log_children``): every child stored
whole under its parent, the same record as a job logged on its own, and the parent's summary
(made from what the tracking side kept) equal to one read back from the store.

In-process (no CLI): the sweep's parent is opened as the sweep callback opens it, the jobs are
composed by Hydra and handed to the batched launcher's ``run_jobs``, and two of the same configs
are run one at a time (``pipeline.run``, as Hydra's basic launcher runs a job) under a second
parent in the same experiment.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import compose_config, typed_config
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from lrexp import pipeline
from lrexp.sweeps import batched
from lrexp.sweeps import callback as sweep
from lrexp.tracking import lifecycle, local, reader, sweep_summary

LRS = ["0.001", "0.003", "0.01", "1000000.0"]  # the last diverges: FAILED, left out of rankings
MOMENTA = ["0.0", "0.5", "0.9", "0.95"]
SEEDS = ["0", "1", "2", "3"]
FIXED = ["train.epochs=3", "tracking.log_model=false"]
SEQUENTIAL = [("0.003", "0.5", "1"), ("1000000.0", "0.9", "2")]  # a good job and a diverged one


def _overrides(lr: str, mu: str, seed: str, uri: str) -> list[str]:
    return [f"optimizer.lr={lr}", f"optimizer.momentum={mu}", f"train.seed={seed}", *FIXED,
            f"tracking.uri={uri}", "tracking.experiment=scale"]  # fmt: skip


def _with(base: DictConfig, lr: str, mu: str, seed: str) -> DictConfig:
    """``base`` with a job's values: what Hydra composes for its overrides (composing each of
    64 jobs would take most of this module's time)."""
    cfg = copy.deepcopy(base)
    cfg.optimizer.lr, cfg.optimizer.momentum, cfg.train.seed = float(lr), float(mu), int(seed)
    return cfg


def _open(uri: str, monkeypatch) -> tuple[str, str]:
    """A sweep's parent run, and the environment its jobs find it in (as the callback sets it)."""
    exp_id, parent = lifecycle.open_sweep(uri, "scale", "sweep", {"lrexp.sweep": "true"})
    lifecycle.stop_heartbeat(parent)
    monkeypatch.setenv(sweep.ENV_URI, uri)
    monkeypatch.setenv(sweep.ENV_EXPERIMENT, "scale")
    monkeypatch.setenv(sweep.ENV_EXPERIMENT_ID, exp_id)
    monkeypatch.setenv(sweep.ENV_PARENT, parent)
    monkeypatch.setenv(sweep.ENV_ARGS, json.dumps(FIXED))
    return exp_id, parent


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """64 jobs (lr × momentum × seed) through the batched launcher; two of them one at a time."""
    tmp = tmp_path_factory.mktemp("sweepscale")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mp = pytest.MonkeyPatch()
    try:
        exp_id, parent = _open(uri, mp)
        grid = [(lr, mu, s) for lr in LRS for mu in MOMENTA for s in SEEDS]
        base = compose_config(*_overrides(*grid[0], uri))
        jobs = [
            batched.Job(i, _overrides(*job, uri), _with(base, *job)) for i, job in enumerate(grid)
        ]
        objectives = batched.run_jobs(jobs, tmp, max_batch=32)  # two batches
        with pytest.MonkeyPatch.context() as no_reading:  # made from what was kept, not read back
            no_reading.setattr(reader, "child_runs", _unexpected)
            no_reading.setattr(reader, "metric_curve", _unexpected)
            summary = local.summarize_sweep(uri, exp_id, parent)
        local.end_run(uri, parent)
        _, one_by_one = _open(uri, mp)
        for lr, mu, seed in SEQUENTIAL:
            o = _overrides(lr, mu, seed, uri)
            job = sweep.job_context(grid.index((lr, mu, seed)), uri, "scale")
            with contextlib.suppress(pipeline.Diverged):  # recorded FAILED, as in the batch
                pipeline.run(typed_config(*o), base_dir=tmp, overrides=o, sweep=job)
        local.end_run(uri, one_by_one)
    finally:
        mp.undo()
    return uri, exp_id, parent, one_by_one, objectives, summary


def _unexpected(*args, **kwargs):
    raise AssertionError("the sweep's summary read its children back from the store")


def _children(uri: str, exp_id: str, parent: str) -> dict[str, dict]:
    return {c["name"]: c for c in reader.child_runs(uri, exp_id, parent)}


def test_every_child_is_stored_whole_under_its_parent(sweeps):
    uri, exp_id, parent, _, objectives, _ = sweeps
    children = _children(uri, exp_id, parent)
    assert len(children) == len(objectives) == 64
    client = MlflowClient(uri)
    for name, c in children.items():
        lr, mu, seed = (kv.split("=")[1] for kv in name.split(","))
        assert c["tags"]["mlflow.parentRunId"] == parent
        assert c["params"]["optimizer.lr"] == lr and c["params"]["train.seed"] == seed
        assert c["params"]["optimizer.momentum"] == mu and c["params"]["train.epochs"] == "3"
        job = int(c["tags"]["lrexp.job_num"])
        if lr == "1000000.0":
            assert c["status"] == "FAILED" and objectives[job] == math.inf
            assert "diverged at step" in c["tags"]["lrexp.failure_reason"]
        else:
            assert c["status"] == "FINISHED"
            assert c["metrics"]["final_test_mse"] == pytest.approx(objectives[job], rel=1e-12)
            assert c["tags"]["lrexp.converged"] in ("true", "false")
    some = children["optimizer.lr=0.01,optimizer.momentum=0.5,train.seed=3"]
    history = client.get_metric_history(some["run_id"], "loss/test_mse")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]
    run = client.get_run(some["run_id"])
    assert run.info.end_time >= run.info.start_time > 0
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == [run.inputs.dataset_inputs[0]
                                                                   .dataset.name]  # fmt: skip
    files = {a.path for a in client.list_artifacts(some["run_id"])}
    assert {"config", "history.csv", "theta.json", "plots"} <= files


def test_a_child_equals_the_same_job_logged_on_its_own(sweeps):
    """Same params, tags, metrics (latest and history), data set input and files as the job run
    one at a time, as Hydra's basic launcher runs it (values up to vmap's last bits)."""
    uri, exp_id, parent, one_by_one, _, _ = sweeps
    batch, alone = _children(uri, exp_id, parent), _children(uri, exp_id, one_by_one)
    assert len(alone) == len(SEQUENTIAL)
    client = MlflowClient(uri)
    # the process holding a run while it is RUNNING (a batch's children never are)
    volatile = {"mlflow.parentRunId", "lrexp.heartbeat", "lrexp.held_by"}
    for name, a in alone.items():
        b = batch[name]
        assert (b["status"], b["params"]) == (a["status"], a["params"])
        assert {k: v for k, v in b["tags"].items() if k not in volatile} == {
            k: v for k, v in a["tags"].items() if k not in volatile
        }
        assert b["metrics"].keys() == a["metrics"].keys()
        for key, value in a["metrics"].items():
            assert b["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), (name, key)
        for key in ("loss/test_mse", "model/theta_1"):
            hb, ha = (sorted((m.step, m.value) for m in client.get_metric_history(c["run_id"], key))
                      for c in (b, a))  # fmt: skip
            assert [s for s, _ in hb] == [s for s, _ in ha]
            assert [v for _, v in hb] == pytest.approx([v for _, v in ha], rel=1e-5, abs=1e-7)
        rb, ra = client.get_run(b["run_id"]), client.get_run(a["run_id"])
        assert [(d.dataset.digest, [(t.key, t.value) for t in d.tags])
                for d in rb.inputs.dataset_inputs] == [
            (d.dataset.digest, [(t.key, t.value) for t in d.tags])
            for d in ra.inputs.dataset_inputs
        ]  # fmt: skip
        assert rb.info.user_id == ra.info.user_id and rb.info.run_name == ra.info.run_name
        assert _files(client, b["run_id"]) == _files(client, a["run_id"])


def _files(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for a in client.list_artifacts(run_id, path):
        out |= _files(client, run_id, a.path) if a.is_dir else {a.path}
    return out


def test_the_parents_summary_equals_one_read_back_from_the_store(sweeps, tmp_path):
    uri, exp_id, parent, _, _, summary = sweeps
    client = MlflowClient(uri)
    stored = reader.child_runs(uri, exp_id, parent)
    board = sweep_summary.leaderboard(stored)
    logged = pd.read_csv(
        client.download_artifacts(parent, "leaderboard.csv", str(tmp_path)),
        keep_default_na=False,
        dtype={"seed": str, "converged": str},
    )
    assert len(logged) == 64 and list(logged["run_id"]) == list(board["run_id"])
    assert np.allclose(logged["test_mse"].astype(float), board["test_mse"], equal_nan=True)
    assert (logged["reason"] != "").sum() == 16  # the diverged lr, for every momentum and seed
    seeds = pd.read_csv(client.download_artifacts(parent, "seeds.csv", str(tmp_path)))
    expected = sweep_summary.seed_stats(board)
    assert len(seeds) == len(expected) == 12  # 3 healthy lrs × 4 momenta, 4 seeds each
    assert np.allclose(seeds["mean_test_mse"], expected["mean_test_mse"])
    overlay = Path(client.download_artifacts(parent, "plots/overlay.svg", str(tmp_path)))
    overlay = overlay.read_text()
    assert overlay.count("<polyline") >= 2 * 48  # train and test curves of every healthy child
    metrics = MlflowClient(uri).get_run(parent).data.metrics
    assert metrics["jobs"] == 64 and metrics["jobs_failed"] == 16
    assert metrics["best_test_mse"] == pytest.approx(board["test_mse"].iloc[0])
    assert board["run"].iloc[0] in summary and "across seeds" in summary


def test_without_mlflows_sql_internals_the_public_calls_store_the_same_children(
    sweeps, monkeypatch
):
    """A store MLflow's internals do not reach (a tracking server, other tables) gets the same
    runs one by one through MLflow's public calls."""
    from lrexp.tracking import bulk, mlflow_private

    uri, exp_id = sweeps[0], sweeps[1]
    payload = {"name": "j", "status": "FINISHED", "start_ms": 1000, "end_ms": 2000,
               "tags": {"lrexp.x": "1"}, "params": {"a.b": 0.5, "c": None},
               "curves": {"loss/test_mse": [3.0, math.nan, 1.0]}, "steps": [0, 5, 9],
               "scalars": {"final_test_mse": 1.0, "gap": None}, "files": {"d/e.txt": "hi"},
               "dataset": None}  # fmt: skip
    fast = bulk.log_runs(uri, exp_id, [payload])
    monkeypatch.setattr(mlflow_private, "sql_store", lambda uri: None)
    slow = bulk.log_runs(uri, exp_id, [payload])
    client = MlflowClient(uri)
    runs = [client.get_run(run_id) for ((run_id, _),) in (fast, slow)]
    assert [latest for (_, latest), in (fast, slow)] == [{"loss/test_mse": 1.0,
                                                         "final_test_mse": 1.0}] * 2  # fmt: skip
    a, b = runs
    assert (a.info.status, a.info.run_name, a.info.start_time, a.info.end_time) == (
        b.info.status, b.info.run_name, b.info.start_time, b.info.end_time)  # fmt: skip
    assert a.data.params == b.data.params == {"a.b": "0.5", "c": "null"}
    assert a.data.tags == b.data.tags and a.data.metrics == b.data.metrics
    history = [[(m.step, m.value) for m in client.get_metric_history(r.info.run_id,
                                                                     "loss/test_mse")]
               for r in runs]  # fmt: skip
    assert history[0] == history[1] == [(0, 3.0), (9, 1.0)]
    assert _files(client, a.info.run_id) == _files(client, b.info.run_id) == {"d/e.txt"}
