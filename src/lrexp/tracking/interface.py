"""The calls the training side makes on the store, declared once (:class:`TrackingCalls`).

Two things implement it: :mod:`lrexp.tracking.local`, which carries each call out in this process,
and :class:`lrexp.tracking.client.Tracker`, which sends it to the tracking process, where
:mod:`lrexp.tracking.server` carries it out with :mod:`~lrexp.tracking.local`. Calls marked
:func:`pipelined` return nothing, so the client sends them without waiting for their reply; an
error in one is raised at the next call that waits. A test checks that both implementations have
every call, with the same parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

import numpy as np

F = TypeVar("F", bound=Callable[..., Any])


def pipelined(f: F) -> F:
    """Mark a call that returns nothing: the client does not wait for it."""
    f.pipelined = True  # type: ignore[attr-defined]
    return f


class TrackingCalls(Protocol):
    """What :mod:`lrexp.pipeline.record` and the sweeps may ask of the store."""

    # --- a run: opened and ended around its block (never left RUNNING) ---
    def run(
        self,
        uri: str,
        experiment: str | None,
        run_name: str,
        tags: Mapping[str, str],
        *,
        exp_id: str | None = None,
    ) -> AbstractContextManager[str]: ...

    def active_run_id(self) -> str: ...

    # --- what a run writes ---
    @pipelined
    def log_params(self, params: Mapping[str, Any]) -> None: ...

    @pipelined
    def log_batch(
        self,
        run_id: str,
        *,
        curves: Mapping[str, Sequence[float]] = {},
        steps: Sequence[int] | None = None,
        scalars: Mapping[str, float | None] = {},
        params: Mapping[str, Any] = {},
        tags: Mapping[str, str] = {},
        model_id: str | None = None,
    ) -> None: ...

    @pipelined
    def log_metrics(
        self,
        run_id: str,
        series: Mapping[str, Sequence[float]],
        scalars: Mapping[str, float],
        steps: Sequence[int] | None = None,
    ) -> None: ...

    @pipelined
    def log_files(self, run_id: str, files: Mapping[str, str]) -> None: ...

    @pipelined
    def log_dataset(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        features: Sequence[str],
        target: str,
        name: str,
        source: str,
        context: str = "training",
    ) -> None: ...

    def log_model(
        self,
        theta: Sequence[float],
        features: Sequence[str],
        example: Sequence[Sequence[float | str]],
        *,
        categories: Mapping[str, Sequence[str]] = {},
        run_id: str | None = None,
        uri: str | None = None,
        step: int = 0,
    ) -> str: ...

    @pipelined
    def set_tags(self, uri: str, run_id: str, tags: Mapping[str, str]) -> None: ...

    # --- runs made and ended by id (a sweep's parent, a bad job's child) ---
    def create_run(self, uri: str, exp_id: str, run_name: str, tags: Mapping[str, str]) -> str: ...

    def end_run(self, uri: str, run_id: str, status: str = "FINISHED") -> None: ...

    def open_sweep(
        self, uri: str, experiment: str, run_name: str, tags: Mapping[str, str]
    ) -> tuple[str, str]: ...

    @pipelined
    def log_children(
        self,
        uri: str,
        exp_id: str,
        children: Sequence[Mapping[str, Any]],
        datasets: Mapping[str, Mapping[str, Any]] = {},
    ) -> None: ...

    def summarize_sweep(
        self, uri: str, exp_id: str, parent: str, *, best_model: bool = False
    ) -> str: ...

    def stop_heartbeat(self, run_id: str) -> None: ...

    # --- reading back ---
    def find_finished(
        self, uri: str, experiment: str, tag: str, value: str
    ) -> dict[str, Any] | None: ...

    def run_status(self, uri: str, run_id: str) -> str: ...

    def run_experiment_id(self, uri: str, run_id: str) -> str: ...


CALLS = frozenset(n for n in vars(TrackingCalls) if not n.startswith("_"))
PIPELINED = frozenset(n for n in CALLS if getattr(getattr(TrackingCalls, n), "pipelined", False))
