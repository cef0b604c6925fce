"""Run a sweep's jobs as vectorized programs: one ``vmap`` per group of structurally equal jobs.

Jobs whose training loops have the same structure (optimizer, schedule, batch size, epochs, data
shapes, dtype) differ only in float hyperparameters, seeds or data values: they train together as
one compiled program. Each job is still checked on its own first, and logged as its own run.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from omegaconf.errors import MissingMandatoryValue

from lrexp import config, pipeline
from lrexp.config import ConfigError
from lrexp.core import fit
from lrexp.core.data import DataError
from lrexp.pipeline import Diverged, Prepared, console, runner
from lrexp.sweeps import stopping
from lrexp.sweeps.jobs import Job
from lrexp.tracking import client, signals

log = logging.getLogger("lrexp")
STACK_BYTES = 2**30  # most memory that per-member copies of the data may take in one batch


def structure(p: Prepared) -> tuple:
    """What must be equal for jobs to share one compiled program."""
    shapes = tuple((len(tr), len(te)) for tr, te in p.parts)
    return (p.spec, p.cfg.train.dtype, p.dataset.X.shape[1], shapes)


def data_identity(p: Prepared) -> str:
    """Equal for jobs that train on identical arrays (same data config, seed and split)."""
    t = p.cfg.train
    return json.dumps([asdict(p.cfg.data), t.seed, t.folds, t.test_fraction], sort_keys=True)


def batches(prepared: list[tuple[Job, Prepared]], max_batch: int) -> list[list]:
    """Group jobs by structure; split a group whose per-member data copies would be too large."""
    groups: dict[tuple, list] = {}
    for item in prepared:
        groups.setdefault(structure(item[1]), []).append(item)
    out = []
    for members in groups.values():
        p = members[0][1]
        per_copy = p.dataset.X.nbytes * max(1, len(p.parts))
        distinct = len({data_identity(q) for _, q in members})
        size = max_batch if distinct == 1 else max(1, min(max_batch, STACK_BYTES // per_copy))
        out += [members[i : i + size] for i in range(0, len(members), size)]
    return out


def train_batch(members: list[tuple[Job, Prepared]]) -> list[list[fit.FitResult]]:
    """Train the members on every split as one vectorized program; return each one's fits.

    Interrupted (Ctrl-C, SIGTERM), the exception carries ``member_fits``: each member's splits
    trained so far, the one in progress up to its last finished chunk."""
    ps = [p for _, p in members]
    shared = len({data_identity(p) for p in ps}) == 1
    spec, dtype = ps[0].spec, jnp.dtype(ps[0].cfg.train.dtype)
    fits: list[list[fit.FitResult]] = [[] for _ in ps]
    progress = console.progress(
        lambda done, _: f"  batch of {len(ps)}: epoch {done}/{spec.epochs}", file=sys.stdout
    )

    for i in range(len(ps[0].parts)):
        arrays = [p.arrays(i) for p in ps]
        stacked = arrays[0] if shared else [np.stack(a) for a in zip(*arrays, strict=True)]
        keys = [jax.random.fold_in(p.shuffle_key, i) for p in ps]
        starts = [runner.start_theta(p, i, f) for p, f in zip(ps, fits, strict=True)]
        m = ps[0].dataset.X.shape[1]
        theta0 = [np.zeros(m + 1) if t is None else t for t in starts]  # sequential CV: carried
        try:
            results = fit.fit_batch(
                *stacked,
                spec=spec,
                hypers=[p.hyper_of(i) for p in ps],
                keys=keys,
                dtype=dtype,
                shared_data=shared,
                on_chunk=progress,
                theta0=np.stack(theta0),
            )
        except BaseException as e:  # Ctrl-C, SIGTERM: each member's splits trained so far
            in_flight = getattr(e, "partial_fits", [None] * len(ps))
            e.member_fits = [
                f + ([r] if r is not None else []) for f, r in zip(fits, in_flight, strict=True)
            ]
            raise
        for member, result in zip(fits, results, strict=True):
            member.append(result)
    return fits


def run_jobs(jobs: list[Job], base_dir: str | Path, max_batch: int = 256) -> dict[int, float]:
    """Check, train (batched) and log every job; return each job's objective (NaN if it failed)."""
    from lrexp.sweeps import callback as sweep

    objectives: dict[int, float] = {}
    prepared = []
    shared: dict = {}  # data sets, splits, standardizers: made once per data config and seed
    for job in jobs:
        context = _sweep_context(job, base_dir)
        try:
            p = pipeline.prepare(config.to_object(job.cfg), base_dir, shared=shared)
        except (ConfigError, DataError, MissingMandatoryValue) as e:
            objectives[job.num] = math.nan
            if context is not None:
                sweep.record_bad_job(job.overrides, context, e)
            else:
                log.error("job %d (%s) failed: %s", job.num, ",".join(job.overrides), e)
            continue
        t = p.cfg.tracking
        skipped = (
            pipeline.skip_if_finished(p, job.overrides, context)
            if (t.enabled and t.skip_finished)
            else None
        )
        if skipped is not None:
            objectives[job.num] = skipped.objective
        else:
            prepared.append((job, p))
    groups = batches(prepared, max_batch)
    programs = f"{len(groups)} vectorized programs" if len(groups) > 1 else "one vectorized program"
    log.info("training %d jobs as %s", len(prepared), programs)
    stored, total = stopping.count_jobs(jobs, objectives)  # the jobs with a child run, and all
    for members in groups:
        try:
            fits = train_batch(members)
        except signals.STOPS as e:
            signals.seen(e)  # honoured here: each member's partial curve is stored, KILLED
            _log_jobs(members, e.member_fits, base_dir, stopped=e, stored=stored)
            stopping.end_parent(e, "training", "never started", total, stored)
            raise
        try:
            objectives.update(_log_jobs(members, fits, base_dir, stored=stored))
        except signals.STOPS as e:
            stopping.end_parent(e, "logging the children", "never logged", total, stored)
            raise
    return objectives


def _log_jobs(
    members: list[tuple[Job, Prepared]],
    fits: list,
    base_dir,
    *,
    stopped: BaseException | None = None,
    stored: set[int] | None = None,
) -> dict[int, float]:
    """Log each trained job as its own run; return each one's objective.

    A sweep's children that log no model of their own go to the tracking process together, in
    one call (:mod:`lrexp.sweeps.children`). Others: the CLI's tracking processes
    (:func:`lrexp.tracking.client.writers`) log the runs side by side, one thread each, while
    this process builds the next run's records; else they are logged here. With ``stopped``
    (the stop request that interrupted their training), each run is logged on its own, keeps its
    curves so far and ends KILLED with the reason. Each job whose run is opened is added to
    ``stored``.
    """
    from lrexp.sweeps import children

    stored = set() if stored is None else stored
    items, logged = [], {}
    together = []  # a sweep's children logged as one batch (sweeps.children), the rest one by one
    for (job, p), f in zip(members, fits, strict=True):
        context = _sweep_context(job, base_dir)
        if stopped is None and children.eligible(p, context):
            together.append((job, p, f, context, data_identity(p)))
        else:
            items.append((job, p, f))
    if together:
        try:
            values = children.log(together, base_dir, started_ms=int(time.time() * 1000))
        except signals.STOPS as e:  # before the batch was stored: each run alone, KILLED, whole
            signals.seen(e)
            _log_one_by_one([(job, p, f) for job, p, f, *_ in together], base_dir, e, stored)
            raise
        stored.update(job.num for job, *_ in together)
        logged = {job.num: _report(job, values[job.num]) for job, *_ in together}
    return logged | _log_one_by_one(items, base_dir, stopped, stored)


def _log_one_by_one(items: list, base_dir, stopped, stored: set[int]) -> dict[int, float]:
    """Log each trained job as its own run (see :func:`_log_jobs`)."""
    writers = client.writers()
    if len(writers) < 2:
        return {
            job.num: _report(job, _log_job(job, p, f, base_dir, stopped, stored))
            for job, p, f in items
        }
    free: queue.SimpleQueue[client.Tracker] = queue.SimpleQueue()
    for w in writers:
        free.put(w)

    def log_one(job: Job, p: Prepared, f: list[fit.FitResult]) -> tuple[float, bool]:
        w = free.get()
        try:
            with client.bind(w):
                return _log_job(job, p, f, base_dir, stopped, stored)
        finally:
            free.put(w)

    with ThreadPoolExecutor(len(writers), thread_name_prefix="lrexp-log") as pool:
        futures = [pool.submit(log_one, *item) for item in items]
        try:
            done = zip(items, futures, strict=True)
            return {job.num: _report(job, fut.result()) for (job, _, _), fut in done}
        except BaseException as e:  # Ctrl-C, SIGTERM: the runs being logged end KILLED, the
            signals.stop_threads(e)  # rest never start
            for fut in futures:
                fut.cancel()
            pool.shutdown(wait=True)
            raise
        finally:
            signals.stop_threads(None)


def _report(job: Job, logged: tuple[float, bool]) -> float:
    value, ok = logged
    if ok:
        overrides = ",".join(job.overrides) or "(defaults)"
        print(f"  #{job.num} {overrides}: test MSE {value:.6g}", flush=True)
    return value


def _sweep_context(job: Job, base_dir: str | Path):
    from lrexp.sweeps import callback as sweep
    from lrexp.tracking.store import resolve_uri

    t = job.cfg.tracking
    if not t.enabled:
        return None
    return sweep.job_context(job.num, resolve_uri(t.uri, base_dir), t.experiment)


def _log_job(
    job: Job,
    p: Prepared,
    fits: list[fit.FitResult],
    base_dir,
    stopped: BaseException | None = None,
    stored: set[int] | None = None,
) -> tuple[float, bool]:
    """Record one trained job as its own run; return its objective (NaN if logging failed or
    ``stopped`` its training, inf if it diverged) and whether it succeeded."""
    from lrexp.pipeline import record

    context = _sweep_context(job, base_dir)
    if stopped is not None:
        return stopping.log_stopped(job, p, fits, context, stopped, stored)
    try:
        with runner.tracked(p, job.overrides, context) as run_id:
            if stored is not None:
                stored.add(job.num)
            if run_id is not None:
                record.log_dataset(p)
            outcome = pipeline.conclude(p, fits, run_id)
            if run_id is not None:  # trained already: its inputs go with its outputs
                params, files = record.inputs(p, job.overrides)
                record.log_outputs(p, outcome, context, params=params, files=files)
            pipeline.raise_if_diverged(p, outcome, context)
    except Diverged as e:
        log.error("job %d (%s) %s", job.num, ",".join(job.overrides), e)
        return math.inf, False
    except Exception as e:  # its run is FAILED with the reason; the other jobs go on
        log.exception("job %d (%s) failed: %s", job.num, ",".join(job.overrides), e)
        return math.nan, False
    return outcome.objective, True
