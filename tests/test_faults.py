"""Faults provoked for real: signals, SIGKILL, exceptions, divergence, an unreachable server.

Each test makes the fault happen (a subprocess and a real signal, a closed port, a learning rate
that diverges) and then reads the store back: the record must be true up to the fault.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import runs_in, typed_config
from mlflow.tracking import MlflowClient

from lrexp import pipeline, runs
from lrexp.tracking import lifecycle, writer

# A full-batch run on the rows that takes minutes unless stopped; progress shows after ~2 s.
LONG = [
    "optimizer=sgd",
    "optimizer.lr=1e-6",
    "train.batch_size=null",
    "train.steps=2000000",
    "train.sufficient_stats=false",
    "data.n=20000",
    "tracking.log_model=false",
]


def start(
    cwd: Path,
    uri: str,
    experiment: str,
    *overrides: str,
    multirun: bool = False,
    heartbeat: float | None = None,
    session: bool = False,
) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if heartbeat is not None:
        env["LREXP_HEARTBEAT_S"] = str(heartbeat)
    args = [
        sys.executable,
        "-m",
        "lrexp.train",
        *(["-m"] if multirun else []),
        *overrides,
        f"tracking.uri={uri}",
        f"tracking.experiment={experiment}",
    ]
    return subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=session,  # a process group of its own: the run and its tracker
    )


def wait_for_training(proc: subprocess.Popen, deadline_s: float = 120) -> None:
    """Block until the run prints a progress line: it is inside the compiled loop."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if "epoch" in line and "train MSE" in line:
            return
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"no progress line; stdout: {proc.stdout.read()[-2000:]}")


def only_run(uri: str, experiment: str):
    (run,) = runs_in(uri, experiment)
    return run


@pytest.mark.parametrize(
    ("sig", "reason"), [(signal.SIGTERM, "terminated (SIGTERM)"), (signal.SIGINT, "interrupted")]
)
def test_signal_ends_the_run_killed_with_its_partial_curve(tmp_path, sig, reason):
    uri, exp = f"sqlite:///{tmp_path / 'mlflow.db'}", "signals"
    proc = start(tmp_path, uri, exp, *LONG)
    wait_for_training(proc)
    proc.send_signal(sig)
    code = proc.wait(timeout=60)  # honoured at the end of the chunk in flight
    assert code != 0
    run = only_run(uri, exp)
    assert run.info.status == "KILLED"
    assert run.data.tags["lrexp.failure_reason"].startswith(reason)
    curve = MlflowClient(uri).get_metric_history(run.info.run_id, "loss/train_mse")
    steps = sorted(m.step for m in curve)
    assert 2 <= len(curve) <= 1000  # the curve up to the interruption, sampled if long
    assert steps[0] == 0 and steps[-1] < 2_000_000  # it stops where training stopped
    assert steps == sorted(set(steps))


# One epoch of mini-batches that takes seconds: 1.6e6 training rows at batch 2 (~1.6 µs a row).
LONG_EPOCH = [
    "data.n=2000000",
    "data.weights=[2.0]",
    "train.batch_size=2",
    "train.epochs=3",
    "optimizer=adamw",
    "schedule=warmup_cosine",
    "train.dtype=float64",
    "tracking.log_model=false",
]


def test_sigterm_in_the_middle_of_a_long_epoch_stops_the_run_inside_that_epoch(tmp_path):
    """How soon the run is recorded KILLED is measured by ``scripts/bench.py`` (section 6)."""
    uri, exp = f"sqlite:///{tmp_path / 'mlflow.db'}", "long-epoch"
    proc = start(tmp_path, uri, exp, *LONG_EPOCH)
    wait_for_training(proc)  # the first progress line comes 2 s into training: inside epoch 1
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    # The loop stops at the end of the compiled call in flight (~0.1 s), then the run is recorded
    # KILLED with its partial curve; it does not finish the epoch first.
    run = only_run(uri, exp)
    assert run.info.status == "KILLED", run.data.tags.get("lrexp.failure_reason")
    assert run.data.tags["lrexp.failure_reason"].startswith("terminated (SIGTERM)")
    curve = MlflowClient(uri).get_metric_history(run.info.run_id, "loss/train_mse")
    assert [m.step for m in curve] == [0]  # stopped inside epoch 1: only the starting point


def test_sigkill_leaves_a_run_that_reap_marks_killed_while_a_live_run_is_spared(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    doomed = start(tmp_path, uri, "doomed", *LONG, heartbeat=0.5, session=True)
    wait_for_training(doomed)
    deadline = time.monotonic() + 60  # the run is made while it trains: wait until it exists
    while not runs_in(uri, "doomed") and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(doomed.pid, signal.SIGKILL)  # the run and its tracking process: nothing can react
    doomed.wait(timeout=30)
    assert only_run(uri, "doomed").info.status == "RUNNING"
    alive = start(tmp_path, uri, "alive", *LONG, heartbeat=0.5)
    try:
        wait_for_training(alive)
        time.sleep(3)  # the dead run's heartbeat is now 3 s old; the live one beats every 0.5 s
        assert runs.main(["reap", "--uri", uri, "--stale", "2"]) == 0
        dead = only_run(uri, "doomed")
        assert dead.info.status == "KILLED"
        assert dead.data.tags["lrexp.failure_reason"].startswith("no heartbeat since")
        assert only_run(uri, "alive").info.status == "RUNNING"
    finally:
        alive.send_signal(signal.SIGTERM)
        alive.wait(timeout=60)
    assert only_run(uri, "alive").info.status == "KILLED"


def test_sigterm_stops_a_sweep_and_marks_its_parent(tmp_path):
    uri, exp = f"sqlite:///{tmp_path / 'mlflow.db'}", "sweep-stopped"
    proc = start(tmp_path, uri, exp, *LONG, "train.seed=0,1,2", multirun=True)
    wait_for_training(proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    by_status = {r.info.status for r in runs_in(uri, exp)}
    (parent,) = [r for r in runs_in(uri, exp) if r.data.tags.get("lrexp.sweep") == "true"]
    assert parent.info.status == "KILLED"
    assert "stopped before" in parent.data.tags["lrexp.failure_reason"]
    assert "RUNNING" not in by_status


def test_exception_ends_failed_with_reason_and_traceback_keeping_what_was_logged(
    store_uri, experiment
):
    with pytest.raises(ZeroDivisionError), lifecycle.run(store_uri, experiment, "boom", {}) as rid:
        writer.log_metrics(rid, {"train_mse": [3.0, 2.0]}, {})
        1 / 0  # noqa: B018
    run = MlflowClient(store_uri).get_run(rid)
    assert run.info.status == "FAILED"
    assert run.data.tags["lrexp.failure_reason"] == "ZeroDivisionError: division by zero"
    assert [m.value for m in MlflowClient(store_uri).get_metric_history(rid, "train_mse")] == [
        3.0,
        2.0,
    ]
    text = Path(
        MlflowClient(store_uri).download_artifacts(rid, "failure/traceback.txt")
    ).read_text()
    assert "ZeroDivisionError" in text and "Traceback" in text
    assert mlflow.active_run() is None


def test_sys_exit_zero_inside_a_run_is_not_a_failure(store_uri, experiment):
    with pytest.raises(SystemExit), lifecycle.run(store_uri, experiment, "exit", {}) as rid:
        sys.exit(0)
    assert MlflowClient(store_uri).get_run(rid).info.status == "FINISHED"


def test_divergence_fails_the_run_at_its_step_keeping_the_last_finite_theta(store_uri, experiment):
    cfg = typed_config(
        "optimizer=sgd",
        "optimizer.lr=0.5",
        "train.reduction=sum",  # lr on the batch TSSE: 0.5 is past its stable bound
        "train.epochs=5",
        "tracking.log_model=false",
        f"tracking.uri={store_uri}",
        f"tracking.experiment={experiment}",
    )
    with pytest.raises(pipeline.Diverged, match=r"diverged at step \d+"):
        pipeline.run(cfg)
    run = only_run(store_uri, experiment)
    assert run.info.status == "FAILED"
    assert "diverged at step" in run.data.tags["lrexp.failure_reason"]
    step = run.data.metrics["diverged_step"]
    assert step >= 1
    client = MlflowClient(store_uri)
    values = [
        m.value
        for key in ("loss/train_mse", "model/bias", "model/theta_1", "optimizer/grad_norm")
        for m in client.get_metric_history(run.info.run_id, key)
    ]
    assert values and all(math.isfinite(v) for v in values)  # no inf or NaN was written
    local = client.download_artifacts(run.info.run_id, "theta.json")
    theta = np.asarray(json.loads(Path(local).read_text())["theta"])
    assert np.all(np.isfinite(theta))


def test_diverged_job_gets_a_rankable_value_and_the_sweep_goes_on(tmp_path):
    uri, exp = f"sqlite:///{tmp_path / 'mlflow.db'}", "diverging-sweep"
    proc = start(
        tmp_path,
        uri,
        exp,
        "optimizer=sgd",
        "optimizer.lr=0.01,0.5",
        "train.reduction=sum",  # lr on the batch TSSE: 0.5 is past its stable bound
        "train.epochs=4",
        "tracking.log_model=false",
        multirun=True,
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    children = {
        r.info.run_name: r for r in runs_in(uri, exp) if "mlflow.parentRunId" in r.data.tags
    }
    assert children["optimizer.lr=0.01"].info.status == "FINISHED"
    assert children["optimizer.lr=0.5"].info.status == "FAILED"
    assert "diverged at step" in children["optimizer.lr=0.5"].data.tags["lrexp.failure_reason"]
    assert re.search(r"1 finished( \(\d converged\))?, 1 failed", out), out


def test_learning_rate_above_the_stable_bound_warns_before_training(caplog):
    with caplog.at_level(logging.WARNING, logger="lrexp"):
        p = pipeline.prepare(
            typed_config(
                "optimizer=sgd", "optimizer.lr=0.5", "train.reduction=sum", "tracking.enabled=false"
            )
        )
    assert p.checks.stable_lr < 0.5
    assert any("exceeds the largest stable learning rate" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lrexp"):
        pipeline.prepare(typed_config("optimizer=adam", "tracking.enabled=false"))
    assert not caplog.records  # Adam's steps do not scale with the loss


def test_stable_bound_is_two_over_the_largest_curvature():
    p = pipeline.prepare(
        typed_config(
            "optimizer=sgd",
            "train.batch_size=null",
            "train.reduction=sum",  # the curvature of the TSSE itself
            "tracking.enabled=false",
        )
    )
    X = p.arrays(0)[0]
    Xa = np.hstack([np.ones((len(X), 1)), X])
    L = 2 * np.linalg.eigvalsh(Xa.T @ Xa).max()  # Lipschitz constant of TSSE's gradient
    assert p.checks.stable_lr == pytest.approx(2 / L, rel=1e-9)


def test_ill_conditioned_float32_run_warns_and_advises_float64(caplog):
    overrides = ["data=collinear", "data.collinearity=0.99999", "tracking.enabled=false"]
    with caplog.at_level(logging.WARNING, logger="lrexp"):
        p = pipeline.prepare(typed_config(*overrides))
    assert p.checks.hessian_condition * np.finfo(np.float32).eps > 0.01
    assert any("train.dtype=float64" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lrexp"):
        pipeline.prepare(typed_config(*overrides, "train.dtype=float64"))
    assert not caplog.records  # float64 resolves it


def test_unreachable_tracking_server_fails_before_training_in_one_line(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = start(tmp_path, f"http://127.0.0.1:{port}", "nowhere")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    errors = [line for line in err.splitlines() if line.startswith("lrexp: error:")]
    assert len(errors) == 1 and "tracking.uri" in errors[0], err
    assert "epoch" not in err and "train MSE" not in out


def test_odd_column_names_and_long_values_never_fail_a_run(tmp_path, store_uri, experiment):
    names = ["price ($)", "größe m²", "semi;colon", "x" * 300]  # target first
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    y = 1 + X @ [1.0, 2.0, 3.0]
    path = tmp_path / "odd.csv"
    rows = [",".join(f'"{n}"' for n in [*names[1:], names[0]])]
    rows += [",".join(f"{v:.6f}" for v in [*x, t]) for x, t in zip(X, y, strict=True)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    cfg = typed_config(
        "data=csv",
        f"data.path={path}",
        f"data.target='{names[0]}'",
        "optimizer=lbfgs",
        "train.epochs=5",
        f"tracking.uri={store_uri}",
        f"tracking.experiment={experiment}",
    )
    outcome = pipeline.run(cfg)
    run = MlflowClient(store_uri).get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    assert outcome.theta == pytest.approx([1.0, 1.0, 2.0, 3.0], abs=1e-4)


def test_store_locked_past_sqlites_wait_fails_clearly_and_keeps_what_was_logged(
    tmp_path, monkeypatch
):
    """A real second connection holds the store's exclusive lock for longer than SQLite's 20 s
    wait plus one retry: the write fails with a clear error, and what was logged before stays."""
    uri, db = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlflow.db"
    monkeypatch.setattr(lifecycle, "STORE_RETRIES", 1)
    holder = None
    with (
        pytest.raises(lifecycle.StoreLocked, match="stayed locked"),
        lifecycle.run(uri, "locked", "locked", {}) as rid,
    ):
        writer.log_metrics(rid, {"train_mse": [2.0, 1.0]}, {})
        script = (
            f"import sqlite3, sys, time; c = sqlite3.connect({str(db)!r}); "
            "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(48)"
        )
        holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "locked"
        writer.log_metrics(rid, {"test_mse": [5.0]}, {})  # waits 20 s, twice, then fails
    holder.wait(timeout=60)
    client = MlflowClient(uri)
    run = client.get_run(rid)
    # The lock is gone now: the run was closed FAILED with the reason, nothing lost.
    assert run.info.status == "FAILED"
    assert "stayed locked" in run.data.tags["lrexp.failure_reason"]
    assert [m.value for m in client.get_metric_history(rid, "train_mse")] == [2.0, 1.0]
