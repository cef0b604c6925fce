"""The tracking process (lrexp.tracker): the CLI logs its run from a second process.

The oracle is the in-process path: a run tracked from the tracking process must store exactly
what the same run tracked in-process stores. Faults are provoked for real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import runs_in, typed_config
from mlflow.tracking import MlflowClient
from test_faults import LONG, start, wait_for_training

from lrexp import pipeline
from lrexp.tracking import client as tracker

SMALL = ["optimizer=adam", "train.epochs=4", "data.n=120"]
VARYING_TAGS = {"lrexp.heartbeat", "lrexp.held_by"}  # stamped with the time, the pid
VARYING_PARAMS = {"tracking.experiment"}  # the two runs go to two experiments


def _run(store_uri: str, experiment: str, tmp_path: Path):
    cfg = typed_config(*SMALL, f"tracking.uri={store_uri}", f"tracking.experiment={experiment}")
    outcome = pipeline.run(cfg, base_dir=tmp_path, overrides=SMALL)
    return MlflowClient(store_uri).get_run(outcome.run_id), outcome


@pytest.fixture(scope="module")
def both(store_uri, tmp_path_factory):
    """The same run tracked here and from a tracking process: (in-process, tracker) runs."""
    base = tmp_path_factory.mktemp("base")
    here, _ = _run(store_uri, "tracker-here", base)
    with tracker.process():
        away, outcome = _run(store_uri, "tracker-away", base)
    assert outcome.run_id == away.info.run_id  # the summary names the stored run
    return here, away


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for a in client.list_artifacts(run_id, path):
        out += _artifacts(client, run_id, a.path) if a.is_dir else [a.path]
    return sorted(out)


def test_tracked_from_the_tracking_process_the_run_stores_what_it_stores_in_process(
    both, store_uri
):
    here, away = both
    assert away.info.status == here.info.status == "FINISHED"
    assert away.info.run_name == here.info.run_name
    params = {k: v for k, v in here.data.params.items() if k not in VARYING_PARAMS}
    assert {k: v for k, v in away.data.params.items() if k not in VARYING_PARAMS} == params
    assert away.data.metrics == here.data.metrics
    tags = {k: v for k, v in here.data.tags.items() if k not in VARYING_TAGS}
    assert {k: v for k, v in away.data.tags.items() if k not in VARYING_TAGS} == tags
    client = MlflowClient(store_uri)
    assert _artifacts(client, away.info.run_id) == _artifacts(client, here.info.run_id)
    assert "history.csv" in _artifacts(client, away.info.run_id)


def test_tracked_from_the_tracking_process_curves_theta_and_dataset_are_identical(
    both, store_uri, tmp_path
):
    here, away = both
    client = MlflowClient(store_uri)
    for key in ("loss/train_mse", "loss/test_mse", "model/theta_1"):
        curves = [
            [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, key)]
            for r in (here, away)
        ]
        assert curves[0] == curves[1] and len(curves[0]) == 5
    docs = [
        Path(client.download_artifacts(r.info.run_id, "theta.json", tmp_path / r.info.run_id))
        for r in (here, away)
    ]
    assert json.loads(docs[0].read_text()) == json.loads(docs[1].read_text())
    (d_here,), (d_away,) = here.inputs.dataset_inputs, away.inputs.dataset_inputs
    assert d_away.dataset == d_here.dataset  # name, digest, schema, profile, source


def test_tracked_from_the_tracking_process_the_model_is_logged_with_the_summary(both, store_uri):
    _, away = both
    client = MlflowClient(store_uri)
    (model,) = client.search_logged_models(
        [away.info.experiment_id], filter_string=f"source_run_id = '{away.info.run_id}'"
    )
    assert {m.key for m in model.metrics} >= {"final_test_mse", "final_train_mse"}


def test_the_training_process_never_imports_mlflow(tmp_path, store_uri):
    script = f"""
import sys
from conftest import typed_config
from lrexp.tracking import client as tracker
from lrexp import pipeline
cfg = typed_config("train.epochs=2", "tracking.uri={store_uri}", "tracking.experiment=no-mlflow")
with tracker.process():
    outcome = pipeline.run(cfg, base_dir={str(tmp_path)!r})
print(outcome.run_id, "mlflow" in sys.modules)
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    run_id, imported = out.stdout.split()[-2:]
    assert imported == "False"
    assert MlflowClient(store_uri).get_run(run_id).info.status == "FINISHED"


def test_a_failed_pipelined_call_is_raised_at_the_next_wait_and_fails_the_run(
    store_uri, experiment
):
    with tracker.process() as t:
        failure = pytest.raises(Exception, match="Run with id=nope not found")
        with failure as info, t.run(store_uri, experiment, "bad-call", {}) as rid:
            t.log_batch(rid, curves={"train_mse": [3.0, 2.0]})
            t.set_tags(store_uri, "nope", {"a": "b"})  # pipelined: fails there, unseen here
            t.run_status(store_uri, rid)  # waits: raises the failure above
        assert "tracking process" in "".join(getattr(info.value, "__notes__", [""]))
    (run,) = runs_in(store_uri, experiment)
    assert run.info.status == "FAILED"
    assert "Run with id=nope not found" in run.data.tags["lrexp.failure_reason"]
    history = MlflowClient(store_uri).get_metric_history(run.info.run_id, "train_mse")
    assert [m.value for m in history] == [3.0, 2.0]  # what was logged before is kept


def test_a_run_of_a_killed_training_process_is_ended_killed_by_the_tracking_process(tmp_path):
    uri, exp = f"sqlite:///{tmp_path / 'mlflow.db'}", "orphaned"
    proc = start(tmp_path, uri, exp, *LONG)
    wait_for_training(proc)
    os.kill(proc.pid, signal.SIGKILL)  # the training process only: its tracker lives on
    proc.wait(timeout=30)
    deadline = time.monotonic() + 60  # the tracking process may still be making the run
    while time.monotonic() < deadline:
        found = runs_in(uri, exp)
        if found and found[0].info.status != "RUNNING":
            break
        time.sleep(0.2)
    (run,) = runs_in(uri, exp)
    assert run.info.status == "KILLED"
    assert run.data.tags["lrexp.failure_reason"] == tracker.ORPHANED


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "train.seed=0,1"],
        ["hydra.mode=MULTIRUN", "train.seed=0,1"],
        ["--cfg", "job"],
        ["--help"],
        ["tracking.enabled=false"],
    ],
)
def test_the_cli_starts_no_tracking_process_where_no_run_is_tracked(argv):
    assert tracker.start_for(argv) is None
    assert tracker.current() is None


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "hydra/launcher=vmap", "optimizer.lr=0.1,0.2"],
        ["hydra.mode=MULTIRUN", "hydra/launcher=vmap", "optimizer.lr=0.1,0.2"],
    ],
)
def test_a_batched_sweep_gets_its_writers_and_each_thread_logs_to_its_own(argv, tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    first = tracker.start_for(argv)
    try:
        writers = tracker.writers()
        assert first is not None and writers[0] is first
        assert len({id(w) for w in writers}) == tracker.WRITERS == 2
        seen = {}

        def where(i: int) -> None:
            with tracker.bind(writers[i]):
                seen[i] = tracker.current()

        threads = [threading.Thread(target=where, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert seen == {0: writers[0], 1: writers[1]}
        assert tracker.current() is first  # unbound threads: the process's own
        # the second is forked from the first once MLflow is imported: it serves calls alike
        for w, name in zip(writers, ("a", "b"), strict=True):
            run_id = w.create_run(uri, "0", name, {})
            assert w.run_status(uri, run_id) == "RUNNING"
    finally:
        tracker.stop()
    assert tracker.writers() == [] and not any(w.alive() for w in writers)


def test_the_tracking_process_carries_out_only_the_interfaces_calls(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    with tracker.process() as t:
        assert t.run_status(uri, t.create_run(uri, "0", "x", {})) == "RUNNING"
        with pytest.raises(ValueError, match="not a tracking call: 'getcwd'"):
            t._submit("getcwd")()
        with pytest.raises(ValueError, match="not a tracking call: 'open_run'"):
            t._submit("open_run", uri, "e", "x", {})()


def test_submitted_calls_give_their_own_values_when_asked_in_any_order(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    with tracker.process() as t:
        a_id, b_id = t.create_run(uri, "0", "a", {}), t.create_run(uri, "0", "b", {})
        t.end_run(uri, b_id, "KILLED")
        a = t._submit("run_status", uri, a_id)
        b = t._submit("run_status", uri, b_id)
        bad = t._submit("run_status", uri, "no-such-run")
        assert b() == "KILLED"
        assert a() == "RUNNING"
        with pytest.raises(Exception, match="no-such-run"):
            bad()


def test_the_cli_tracks_in_process_when_asked_to(monkeypatch):
    monkeypatch.setenv("LREXP_TRACKING_PROCESS", "0")
    assert tracker.start_for(["optimizer=adam"]) is None


def test_an_idle_tracking_process_is_ended_at_once_when_no_run_came():
    t = tracker.start()
    tracker.stop()  # killed, not waited for through MLflow's imports
    assert not t.alive() and tracker.current() is None
