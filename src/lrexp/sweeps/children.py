"""A batch of a sweep's trained jobs logged as child runs in one tracking call.

The batched launcher trains a batch of jobs as one program; here each job is scored
(:func:`lrexp.pipeline.conclude`) and its run's whole content built as plain values (name,
status, tags, params, sampled curves, summary, files), the same content that
:func:`lrexp.pipeline.record.log_outputs` writes for a run logged on its own. The batch then goes
to the tracking process as one pipelined call
(:meth:`~lrexp.tracking.interface.TrackingCalls.log_children`), which writes it in one SQL
transaction while this process trains the next batch; the sweep's summary is made from what
that process kept of them. A child that fails to score is recorded FAILED with the reason.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from lrexp import pipeline
from lrexp.config import FileData
from lrexp.pipeline import Diverged, outputs, record
from lrexp.pipeline.job import run_name
from lrexp.tracking import client, hooks, metric_names, signals, store

if TYPE_CHECKING:
    from lrexp.core import fit
    from lrexp.pipeline import Prepared
    from lrexp.pipeline.job import SweepJob
    from lrexp.sweeps.jobs import Job

logger = logging.getLogger("lrexp")
# The data sets each tracking process (or this process's local tracking) has been sent already.
_sent: weakref.WeakKeyDictionary[object, set[tuple[str, str]]] = weakref.WeakKeyDictionary()


def eligible(p: Prepared, sweep: SweepJob | None) -> bool:
    """Whether a job is logged here: tracked, a sweep's child, and logging no model of its own
    (``tracking.sweep_model=every`` logs each child's model, one run at a time)."""
    return sweep is not None and p.cfg.tracking.enabled and not record.logs_model(p.cfg, sweep)


def log(
    items: list[tuple[Job, Prepared, list[fit.FitResult], SweepJob, str]],
    base_dir,
    *,
    started_ms: int,
) -> dict[int, tuple[float, bool]]:
    """Log the jobs as child runs in one call per store and experiment; return each job's
    objective (inf if it diverged, NaN if it failed) and whether it succeeded. Each run starts
    at ``started_ms`` (when logging began, as a run opened for its logging would) and ends once
    built."""
    tracking = client.calls()
    sent = _sent.setdefault(tracking, set())
    batches: dict[tuple[str, str], tuple[list, dict]] = {}
    values: dict[int, tuple[float, bool]] = {}
    for job, p, fits, sweep, key in items:  # key: the job's data set's (equal: the same data)
        child, values[job.num] = _child(job, p, fits, sweep, started_ms)
        uri = store.resolve_uri(p.cfg.tracking.uri, p.base_dir)
        children, datasets = batches.setdefault((uri, sweep.experiment_id), ([], {}))
        if (uri, key) not in sent and key not in datasets:
            ds = p.dataset
            datasets[key] = dict(
                X=ds.X,
                y=ds.y,
                features=list(ds.feature_names),
                target=ds.target_name,
                name=ds.name,
                source=ds.source,
            )
        children.append({**child, "dataset": key})
    hooks.pause_at("curves")  # a test hook (lrexp.tracking.hooks): the batch about to be sent
    for (uri, exp_id), (children, datasets) in batches.items():
        tracking.log_children(uri, exp_id, children, datasets)
        sent.update((uri, k) for k in datasets)
    return values


def _child(
    job: Job, p: Prepared, fits: list[fit.FitResult], sweep: SweepJob, started_ms: int
) -> tuple[dict[str, Any], tuple[float, bool]]:
    """One child's run as plain values, and its objective and success."""
    name = run_name(p.cfg, sweep.varying(job.overrides))
    params, files = record.inputs(p, job.overrides)
    child = {"name": name, "status": "FINISHED", "start_ms": started_ms, "params": params,
             "tags": record.run_tags(p.cfg, p.base_dir, job.overrides, sweep),
             "curves": {}, "steps": [], "scalars": {}, "files": files}  # fmt: skip
    value: tuple[float, bool] = (math.nan, False)
    try:
        outcome = pipeline.conclude(p, fits, None)
        value = (outcome.objective, True)
        out = _outputs(p, outcome)
        child["tags"].update(out.pop("verdict"))
        child.update(out, files={**files, **out["files"]})
        pipeline.raise_if_diverged(p, outcome, sweep)
    except Exception as e:  # FAILED with the reason, as a run logged on its own would end
        if isinstance(e, Diverged):
            logger.error("job %d (%s) %s", job.num, ",".join(job.overrides), e)
            value = (math.inf, False)
        else:
            logger.exception("job %d (%s) failed: %s", job.num, ",".join(job.overrides), e)
            value = (math.nan, False)
        child["status"] = "FAILED"
        child["tags"]["lrexp.failure_reason"] = signals.reason(e)
        child["files"]["failure/traceback.txt"] = traceback.format_exc()
    child["tags"]["lrexp.heartbeat"] = f"{time.time():.3f}"
    child["end_ms"] = int(time.time() * 1000)
    return child, value


def _outputs(p: Prepared, outcome) -> dict[str, Any]:
    """What :func:`lrexp.pipeline.record.log_outputs` logs for a run, as values: sampled curves
    at their epochs, summary scalars, verdict tags, θ, history and figures."""
    curves, history = outputs.history_files(p, outcome.folds, outcome.names)
    steps = outputs.sample_steps(curves, p.cfg.tracking.max_curve_points)
    sampled = {
        metric_names.curve_key(k): np.asarray(v)[steps[steps < len(v)]] for k, v in curves.items()
    }
    scalars = {metric_names.summary_key(k): v for k, v in outcome.summary.items()}
    if isinstance(p.cfg.data, FileData):
        scalars["data_dropped_rows"] = outcome.dataset.dropped_rows
    files = {**history, **outputs.output_files(p, outcome, curves)}
    return {"curves": sampled, "steps": steps.tolist(), "scalars": scalars, "files": files,
            "verdict": record.verdict_tags(outcome.verdict)}  # fmt: skip
