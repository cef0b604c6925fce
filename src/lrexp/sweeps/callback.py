"""Sweeps: one MLflow parent run per multirun, one child run per job, a summary at the end.

A Hydra callback (enabled in ``conf/config.yaml``) creates the store, the experiment and the parent
run once, in the launching process, before any job starts; it hands their ids to the jobs through
the environment, which launchers pass on to worker processes. Jobs then open their runs with those
ids explicitly: no job creates tables or experiments, so parallel workers on a fresh SQLite store
lose nothing and never file a run under the wrong experiment.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lrexp.tracking import client as tracker
from lrexp.tracking import signals, store

log = logging.getLogger("lrexp")

ENV_URI = "LREXP_SWEEP_URI"
ENV_EXPERIMENT = "LREXP_SWEEP_EXPERIMENT"
ENV_EXPERIMENT_ID = "LREXP_SWEEP_EXPERIMENT_ID"
ENV_PARENT = "LREXP_SWEEP_PARENT_RUN_ID"
ENV_ARGS = "LREXP_SWEEP_ARGS"  # the sweep's command-line overrides, as JSON
ENV_KEYS = (ENV_URI, ENV_EXPERIMENT, ENV_EXPERIMENT_ID, ENV_PARENT, ENV_ARGS)


@dataclass(frozen=True)
class SweepJob:
    """A job of a multirun: its parent run, the sweep's experiment and the job's number."""

    parent_run_id: str
    experiment_id: str
    job_num: int
    fixed: tuple[str, ...] = ()  # overrides every job shares (left out of the child's name)

    def varying(self, overrides: list[str]) -> list[str]:
        """The overrides that tell this job apart from the others of its sweep."""
        shared = _parsed(self.fixed)
        return [o for o, kv in zip(overrides, _parsed(overrides), strict=True) if kv not in shared]


def _parsed(overrides) -> list[tuple[str, object]]:
    """(key, value) of each plain override; Hydra re-renders values (false → False) in jobs."""
    with _parsing:  # Hydra's parser is not known to be thread-safe (jobs log from threads)
        return _parse(tuple(overrides))


_parsing = threading.Lock()


@functools.lru_cache(maxsize=1024)
def _parse(overrides: tuple[str, ...]) -> list[tuple[str, object]]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [(o.get_key_element(), None if o.is_sweep_override() else o.value()) for o in parsed]


_opening: Callable[[], None] | None = None  # the parent run, while a tracking process makes it


def settle() -> None:
    """Wait for the sweep's parent run, where a tracking process is making it."""
    global _opening
    if _opening is not None:
        opening, _opening = _opening, None
        opening()


def describe(overrides: list[str]) -> str:
    """A run's name from its overrides: where it is tracked and Hydra's own settings left out."""
    return ",".join(o for o in overrides if not o.lstrip("+~").startswith(("tracking.", "hydra")))


def job_context(job_num: int, uri: str, experiment: str) -> SweepJob | None:
    """The sweep this job belongs to, if its store and experiment are the sweep's."""
    settle()
    if not os.environ.get(ENV_PARENT):
        return None
    if os.environ.get(ENV_URI) != uri or os.environ.get(ENV_EXPERIMENT) != experiment:
        return None  # the job overrides where it is tracked: it is not the parent's child
    # A swept argument ("optimizer=sgd,adam") never equals a job's override ("optimizer=sgd"), so
    # the job overrides found among the sweep's plain arguments are the ones all jobs share.
    fixed = tuple(json.loads(os.environ.get(ENV_ARGS, "[]")))
    return SweepJob(os.environ[ENV_PARENT], os.environ[ENV_EXPERIMENT_ID], job_num, fixed)


def record_bad_job(overrides: list[str], job: SweepJob, error: Exception) -> None:
    """Record a job whose input was bad as a FAILED child run carrying the reason."""
    tracking = tracker.tracking()
    uri = os.environ[ENV_URI]
    run_id = tracking.create_run(
        uri,
        job.experiment_id,
        describe(job.varying(overrides)) or "job",
        {
            "mlflow.parentRunId": job.parent_run_id,
            "lrexp.job_num": str(job.job_num),
            "lrexp.overrides": ",".join(overrides),
            "lrexp.failure_reason": str(error)[:5000],
        },
    )
    tracking.end_run(uri, run_id, "FAILED")
    log.error("job %d (%s) failed: %s", job.job_num, ",".join(overrides), error)


class SweepCallback(Callback):
    """Group a multirun's jobs under one MLflow parent run, and summarize them when it ends."""

    def __init__(self) -> None:
        self.uri: str | None = None
        self.parent: str | None = None
        self.exp_id: str | None = None

    def __getstate__(self) -> dict:
        """Launchers ship callbacks to worker processes: the sweep's state stays in this one."""
        return {"uri": None, "parent": None, "exp_id": None}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.tracking.enabled:
            return
        from lrexp.pipeline import provenance

        tracking = tracker.tracking()  # with the batched launcher, the CLI's tracking process
        self.uri = store.resolve_uri(config.tracking.uri, os.getcwd())
        unreachable = store.check_server(self.uri)
        if unreachable is not None:  # Hydra turns callback errors into warnings: stop here
            print(
                f"lrexp: error: tracking.uri={config.tracking.uri!r}: {unreachable}",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(2)
        hc = config.hydra  # HydraConfig.get() is not set yet when a multirun starts
        name = config.tracking.run_name or "sweep " + " ".join(hc.overrides.task)
        tags = provenance.tags(config.train.dtype)
        tags.update(
            {
                "lrexp.sweep": "true",
                "lrexp.sweep_dir": str(hc.sweep.dir),
                "lrexp.overrides": " ".join(hc.overrides.task),
            }
        )
        args = (self.uri, config.tracking.experiment, name, tags)
        os.environ.update(
            {
                ENV_URI: self.uri,
                ENV_EXPERIMENT: config.tracking.experiment,
                ENV_ARGS: json.dumps(list(hc.overrides.task)),
            }
        )
        global _opening
        if isinstance(tracking, tracker.Tracker):  # made there while Hydra composes the jobs
            _opening = functools.partial(self._opened, tracking.submit("open_sweep", *args))
        else:
            self._opened(lambda: tracking.open_sweep(*args))
        atexit.register(self._abandon)
        # SIGTERM's default action skips atexit: make it raise, so the parent is ended KILLED
        # even when the signal lands between jobs or in a batched launcher.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signals.raise_terminated)

    def _opened(self, result: Callable[[], tuple[str, str]]) -> None:
        """Take the ids of the sweep's experiment and parent run, and hand them to the jobs."""
        self.exp_id, self.parent = result()
        os.environ.update({ENV_EXPERIMENT_ID: self.exp_id, ENV_PARENT: self.parent})
        experiment = os.environ[ENV_EXPERIMENT]
        print(f"lrexp sweep: parent run {self.parent} in experiment {experiment!r}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        settle()
        if self.parent is None:
            return
        tracking = tracker.tracking()
        try:
            t = config.tracking
            best_model = t.log_model and t.get("sweep_model", "best") == "best"
            args = (self.uri, self.exp_id, self.parent)
            summarize = "lrexp.tracking.sweep_summary:summarize"
            if isinstance(tracking, tracker.Tracker):  # it reads and writes the store at length
                summary = tracking.invoke(summarize, *args, best_model=best_model)
            else:
                from lrexp.tracking import sweep_summary

                summary = sweep_summary.summarize(*args, best_model=best_model)
            print(summary, flush=True)
            tracking.stop_heartbeat(self.parent)
            tracking.end_run(self.uri, self.parent, "FINISHED")
        finally:
            self._clear()

    def _abandon(self) -> None:
        """At exit: a sweep that never reached its end (an exception, Ctrl-C) is not left open."""
        with contextlib.suppress(Exception):  # its tracking process has ended by now
            settle()
        if self.parent is None:
            return
        tracking = tracker.tracking()  # the tracking processes have ended by now: this one's
        tracking.stop_heartbeat(self.parent)
        if tracking.run_status(self.uri, self.parent) == "RUNNING":
            tracking.set_tags(
                self.uri,
                self.parent,
                {"lrexp.failure_reason": "the sweep stopped before all jobs ended"},
            )
            tracking.end_run(self.uri, self.parent, "KILLED")
        self._clear()

    def _clear(self) -> None:
        self.parent = None
        for key in ENV_KEYS:
            os.environ.pop(key, None)
