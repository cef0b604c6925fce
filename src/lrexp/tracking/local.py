"""The tracking calls (:class:`~lrexp.tracking.interface.TrackingCalls`) carried out in this
process: in the tracking process, or in the training process where there is none."""

from lrexp.tracking.lifecycle import create_run, end_run, open_sweep, run, set_tags, stop_heartbeat
from lrexp.tracking.reader import find_finished, run_experiment_id, run_status
from lrexp.tracking.sweep_summary import log_children
from lrexp.tracking.sweep_summary import summarize as summarize_sweep
from lrexp.tracking.writer import (
    active_run_id,
    log_batch,
    log_dataset,
    log_files,
    log_metrics,
    log_model,
    log_params,
)

__all__ = [
    "active_run_id",
    "create_run",
    "end_run",
    "find_finished",
    "log_batch",
    "log_children",
    "log_dataset",
    "log_files",
    "log_metrics",
    "log_model",
    "log_params",
    "open_sweep",
    "run",
    "run_experiment_id",
    "run_status",
    "set_tags",
    "stop_heartbeat",
    "summarize_sweep",
]
