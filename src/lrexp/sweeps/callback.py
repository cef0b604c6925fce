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
import sys
from collections.abc import Callable
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lrexp.pipeline.job import SweepJob, describe
from lrexp.sweeps import workers
from lrexp.tracking import client, heartbeat, hooks, signals, store

log = logging.getLogger("lrexp")

ENV_URI = "LREXP_SWEEP_URI"
ENV_EXPERIMENT = "LREXP_SWEEP_EXPERIMENT"
ENV_EXPERIMENT_ID = "LREXP_SWEEP_EXPERIMENT_ID"
ENV_PARENT = "LREXP_SWEEP_PARENT_RUN_ID"
ENV_ARGS = "LREXP_SWEEP_ARGS"  # the sweep's command-line overrides, as JSON
ENV_LAUNCHER = workers.ENV_LAUNCHER  # the launching process (heartbeat.owner): workers watch it
ENV_KEYS = (ENV_URI, ENV_EXPERIMENT, ENV_EXPERIMENT_ID, ENV_PARENT, ENV_ARGS, ENV_LAUNCHER)


_opening: Callable[[], None] | None = None  # the parent run, while a tracking process makes it
_ended: set[str] = set()  # parent runs ended early (a stopped launcher: see end_parent)


def settle() -> None:
    """Wait for the sweep's parent run, where a tracking process is making it."""
    global _opening
    if _opening is not None:
        opening, _opening = _opening, None
        opening()


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


def end_parent(status: str, reason: str) -> None:
    """End the sweep's parent run now, as ``status`` with ``reason`` (a launcher stopped by a
    signal says why, and how many jobs never started); its heartbeat stops."""
    settle()
    uri, parent = os.environ.get(ENV_URI), os.environ.get(ENV_PARENT)
    if not uri or not parent or parent in _ended:
        return
    _ended.add(parent)
    tracking = client.calls()
    tracking.stop_heartbeat(parent)
    tracking.set_tags(uri, parent, {"lrexp.failure_reason": reason})
    tracking.end_run(uri, parent, status)


def ui_hint(uri: str, exp_id: str | None) -> str:
    """The sweep's last lines: how to open its experiment's runs in the UI."""
    from lrexp.tracking import ui_app  # no MLflow import: the launching process stays free of it

    return "  open the UI: " + ui_app.ui_hint(uri, exp_id).replace("\n", "\n" + " " * 15)


def record_bad_job(overrides: list[str], job: SweepJob, error: Exception) -> None:
    """Record a job whose input was bad as a FAILED child run carrying the reason."""
    tracking = client.calls()
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

        tracking = client.calls()  # with the batched launcher, the CLI's tracking process
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
                heartbeat.OWNER_TAG: heartbeat.owner(),  # a dead launcher's parent is reaped
            }
        )
        args = (self.uri, config.tracking.experiment, name, tags)
        os.environ.update(
            {
                ENV_URI: self.uri,
                ENV_EXPERIMENT: config.tracking.experiment,
                ENV_ARGS: json.dumps(list(hc.overrides.task)),
                ENV_LAUNCHER: tags[heartbeat.OWNER_TAG],
            }
        )
        global _opening
        if isinstance(tracking, client.Tracker):  # made there while Hydra composes the jobs
            _opening = functools.partial(self._opened, tracking.submit_open_sweep(*args))
        else:
            self._opened(lambda: tracking.open_sweep(*args))
        atexit.register(self._abandon)
        # SIGTERM's default action skips atexit: make it raise, so the parent is ended KILLED
        # even when the signal lands between jobs or in a batched launcher; workers get it first.
        workers.install()

    def _opened(self, result: Callable[[], tuple[str, str]]) -> None:
        """Take the ids of the sweep's experiment and parent run, and hand them to the jobs."""
        self.exp_id, self.parent = result()
        os.environ.update({ENV_EXPERIMENT_ID: self.exp_id, ENV_PARENT: self.parent})
        experiment = os.environ[ENV_EXPERIMENT]
        print(f"lrexp sweep: parent run {self.parent} in experiment {experiment!r}", flush=True)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if os.environ.get(ENV_PARENT):
            workers.watch_launcher()  # a worker process (joblib's) ends with its launcher

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        settle()
        if self.parent is None or self.parent in _ended:
            return
        tracking = client.calls()
        try:
            hooks.pause_at("sweep-end")  # a test hook (lrexp.tracking.hooks); nothing when unset
            t = config.tracking
            best_model = t.log_model and t.get("sweep_model", "best") == "best"
            # in the tracking process where there is one: it reads and writes the store at length
            summary = tracking.summarize_sweep(
                self.uri, self.exp_id, self.parent, best_model=best_model
            )
            print(summary, flush=True)
            print(ui_hint(self.uri, self.exp_id), flush=True)
            tracking.stop_heartbeat(self.parent)
            tracking.end_run(self.uri, self.parent, "FINISHED")
        except signals.STOPS as e:  # every job has its run: the summary is what is missing
            signals.seen(e)
            end_parent("KILLED", f"{signals.reason(e)} while summarizing the sweep")
            raise
        finally:
            self._clear()

    def _abandon(self) -> None:
        """At exit: a sweep that never reached its end (an exception, Ctrl-C) is not left open."""
        with contextlib.suppress(Exception):  # its tracking process has ended by now
            settle()
        if self.parent is None or self.parent in _ended:
            return
        stop = signals.take_pending()  # Ctrl-C, SIGTERM: the reason, honoured here
        why = f"{signals.reason(stop)}: " if stop is not None else ""
        tracking = client.calls()  # the tracking processes have ended by now: this one's
        tracking.stop_heartbeat(self.parent)
        if tracking.run_status(self.uri, self.parent) == "RUNNING":
            tracking.set_tags(
                self.uri,
                self.parent,
                {"lrexp.failure_reason": f"{why}the sweep stopped before all jobs ended"},
            )
            tracking.end_run(self.uri, self.parent, "KILLED")
        self._clear()

    def _clear(self) -> None:
        self.parent = None
        for key in ENV_KEYS:
            os.environ.pop(key, None)
