"""A batched sweep stopped (Ctrl-C, SIGTERM): each member of the batch in flight is kept as a
KILLED child with its curve so far, and the sweep's parent ends KILLED with the reason and a count
of the jobs left without a run."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from lrexp.pipeline import runner
from lrexp.tracking import client, signals

if TYPE_CHECKING:
    from lrexp.core import fit
    from lrexp.pipeline import Prepared
    from lrexp.pipeline.job import SweepJob


def parent() -> tuple[str, str] | None:
    """The store and id of the sweep's parent run, if this launch has one."""
    from lrexp.sweeps import callback as sweep

    sweep.settle()
    uri, run_id = os.environ.get(sweep.ENV_URI), os.environ.get(sweep.ENV_PARENT)
    return (uri, run_id) if uri and run_id else None


def count_jobs(jobs: list, objectives: dict[int, float]) -> tuple[set[int], int]:
    """The jobs that have a child run already, and the sweep's jobs so far, which the parent
    carries (``lrexp.sweep_jobs``) for a reaper to count, should this launcher die.

    Jobs are numbered from 0 across the sweep: a sweeper's earlier batches of trials have their
    runs; so do this launch's bad or skipped jobs (``objectives``)."""
    earlier = jobs[0].num if jobs else 0
    total = earlier + len(jobs)
    found = parent()
    if found is not None:
        client.calls().set_tags(*found, {"lrexp.sweep_jobs": str(total)})
    return set(objectives) | set(range(earlier)), total


def end_parent(e: BaseException, doing: str, left: str, total: int, stored: set[int]) -> None:
    """End the sweep's parent KILLED: why, while doing what, and how many jobs have no run."""
    from lrexp.sweeps import callback as sweep

    sweep.end_parent(
        "KILLED",
        f"{signals.reason(e)} while {doing}: {len(stored)} of {total} jobs have a child run"
        f" (those stopped KILLED, with their curves so far), {total - len(stored)} {left}",
    )


def log_stopped(
    job,
    p: Prepared,
    fits: list[fit.FitResult],
    context: SweepJob | None,
    stopped: BaseException,
    stored: set[int] | None,
) -> tuple[float, bool]:
    """Record a job whose training ``stopped`` interrupted: its params, its curves so far, and
    its end, KILLED with the reason. Returns (NaN, False): no objective."""
    from lrexp.pipeline import record

    again = type(stopped)(*stopped.args)  # ends the run as the request did, raised here
    try:
        with runner.tracked(p, job.overrides, context) as run_id:
            if stored is not None:
                stored.add(job.num)
            if run_id is not None:
                params, files = record.inputs(p, job.overrides)
                client.calls().log_batch(run_id, params=params)
                client.calls().log_files(run_id, files)
                if fits:
                    record.log_partial(p, run_id, fits)
            raise again
    except BaseException as e:
        if e is not again:
            raise
    return math.nan, False
