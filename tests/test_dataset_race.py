"""Jobs of a parallel sweep log the same data set into one experiment at the same moment.

MLflow makes the data set's row on first use (unique per experiment, name and digest): of jobs
that look at once, all find none and all insert it, and all but one fail. A job that loses that
race must still log its input, not end FAILED. Real processes, released together by a barrier, on
a real SQLite store.
"""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
from mlflow.tracking import MlflowClient

from lrexp.tracking import lifecycle, writer

JOBS = 6


def _job(uri: str, exp_id: str, barrier, results) -> None:
    X = np.arange(40.0).reshape(20, 2)
    with lifecycle.run(uri, None, "job", {}, exp_id=exp_id) as run_id:
        barrier.wait()
        writer.log_dataset(X, X.sum(axis=1), features=["a", "b"], target="y", name="same",
                             source="make_linear(seed=0)")  # fmt: skip
        results.put(run_id)


def test_jobs_logging_one_new_data_set_at_once_all_log_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    lifecycle.init_store(uri)
    exp_id = lifecycle.experiment_id(uri, "race")
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(JOBS), ctx.Queue()
    procs = [ctx.Process(target=_job, args=(uri, exp_id, barrier, results)) for _ in range(JOBS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    client = MlflowClient(uri)
    runs = client.search_runs([exp_id])
    statuses = {
        r.info.run_id: (r.info.status, r.data.tags.get("lrexp.failure_reason")) for r in runs
    }
    assert len(runs) == JOBS
    assert all(s == "FINISHED" for s, _ in statuses.values()), statuses
    digests = {d.dataset.digest for r in runs for d in r.inputs.dataset_inputs}
    assert all(len(r.inputs.dataset_inputs) == 1 for r in runs) and len(digests) == 1
