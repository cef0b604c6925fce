"""Sweeps through Hydra's submitit launcher (SLURM itself: test_slurm.py): its
local executor (a real process per job, as SLURM would start it) nests every job under one parent.
"""

from __future__ import annotations

import re

import pytest
from conftest import runs_in
from test_server import lrexp_sweep


@pytest.mark.slow
def test_submitit_local_sweep_nests_every_job_under_one_parent(tmp_path):
    # A fresh SQLite store: the jobs start at once, so the sweep must have created it first.
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = lrexp_sweep(
        tmp_path,
        "hydra/launcher=submitit_local",
        "optimizer=sgd,adam",
        "train.epochs=2",
        "tracking.log_model=false",
        f"tracking.uri={store}",
        "tracking.experiment=submitit",
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    runs = runs_in(store, "submitit")
    assert len(runs) == 3
    (parent,) = [r for r in runs if r.data.tags.get("lrexp.sweep") == "true"]
    children = [r for r in runs if r.info.run_id != parent.info.run_id]
    logs = list(tmp_path.glob("multirun/*/*/.submitit/*/*_log.out"))
    statuses = {  # on failure: each child's status and reason, and the jobs' own logs
        r.info.run_name: (r.info.status, r.data.tags.get("lrexp.failure_reason")) for r in children
    }
    job_logs = "".join(f.read_text()[-2000:] for f in tmp_path.glob("multirun/**/*_log.*"))
    assert parent.info.status == "FINISHED", statuses
    assert all(status == "FINISHED" for status, _ in statuses.values()), (statuses, job_logs)
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    assert sorted(r.data.params["optimizer.name"] for r in children) == ["adam", "sgd"]
    # Each child run was made inside a submitit job: the job's own log names it.
    assert len(logs) == 2
    logged = {m for log in logs for m in re.findall(r"MLflow run ([0-9a-f]{32})", log.read_text())}
    assert logged == {r.info.run_id for r in children}
