"""The training loop: one compiled program (``jit`` of nested ``lax.scan``) returning θ and history.

The host calls the same compiled chunk (:func:`run_chunk`) until the loop reports ``done``: all
epochs run, the tolerance met, or diverged. A chunk runs ``spec.chunk`` epochs, or ``1/spec.split``
of an epoch too long for one call (:func:`chunked` sizes them): calls take a fraction of a second
at any data size, so the host can show progress and honour a signal between them.

All float hyperparameters travel in ``hyper`` as arrays: changing their values reuses the compiled
program, and ``vmap`` can batch over them.

With ``spec.log_steps`` every chunk also returns its per-step rows (each step's batch MSE and θ̃),
fetched with the chunk's history: no host sync per step. They make ``FitResult.steps_history``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lrexp.core import devices, model
from lrexp.core.chunk import History, _begin, _begin_jit, _evaluate, run_chunk
from lrexp.core.cost import CHUNK_S, FLOAT_S, FULL_FLOAT_S, ROW_S, STEP_S, chunked
from lrexp.core.layouts import HostRows, chunk_rows, training_data
from lrexp.core.spec import Hyper, LoopSpec, make_hyper
from lrexp.core.step import State, StepRows

# The loop's names, importable from here as before the loop was split into modules (the private
# ones are scripts/bench.py's: it times the compiled pieces alone).
__all__ = [
    "CHUNK_S",
    "FLOAT_S",
    "FULL_FLOAT_S",
    "ROW_S",
    "STEP_S",
    "FitResult",
    "History",
    "Hyper",
    "LoopSpec",
    "State",
    "StepRows",
    "_begin_jit",
    "_evaluate",
    "chunked",
    "fit",
    "fit_batch",
    "make_hyper",
    "run_chunk",
]


class FitResult(NamedTuple):
    theta: np.ndarray  # final θ̃
    history: History  # numpy arrays, rows 0..epochs_run
    epochs_run: int
    stop_epoch: int | None  # epoch at which the tolerance was met
    steps: int  # optimizer steps taken
    diverged_step: int | None = None  # the step at which training diverged
    # with LoopSpec.log_steps: a row per optimizer step taken (numpy arrays, ``valid`` all true)
    steps_history: StepRows | None = None


def _result(
    state: State,
    rows: list[tuple[History, Any]],
    member: int | None = None,
    steps: list[StepRows] | None = None,
) -> FitResult:
    """Assemble one fit's result from its chunks' rows (of ``member``, in a batched fit), and
    its chunks' step rows where the loop logged them."""

    def pick(a):
        a = np.asarray(a)
        return a if member is None else a[member]  # batched rows are (members, slots, ...)

    def series(chunks):  # the member's slice of each chunk, then concatenated: O(1 member)
        return np.concatenate([pick(a) for a in chunks])

    epochs_run, stop = int(pick(state.epoch)), int(pick(state.stop_epoch))
    diverged = int(pick(state.diverged))
    completed = series(c for _, c in rows)
    history = History(
        *(
            series(r[i] for r, _ in rows)[completed][: epochs_run + 1]
            for i in range(len(History._fields))
        )
    )
    return FitResult(
        pick(state.theta),
        history,
        epochs_run,
        stop if stop >= 0 else None,
        int(pick(state.step)),
        diverged if diverged >= 0 else None,
        _steps_history(steps, pick) if steps else None,
    )


def _steps_history(steps: list[StepRows], pick) -> StepRows:
    """The valid rows of every chunk's step rows, (slots, steps per slot) each, in order."""

    def series(field: str) -> np.ndarray:
        parts = [pick(getattr(c, field)) for c in steps]
        return np.concatenate([p.reshape(-1, *p.shape[2:]) for p in parts])

    flat = StepRows(*(series(f) for f in StepRows._fields))
    return StepRows(*(v[flat.valid] for v in flat))


def _n_params(X) -> int:
    """M + 1 for rows X (…, n, M), or for statistics (:class:`model.Stats`, a streamed pass's:
    ``fit`` and ``fit_batch`` take them in place of X, with y None, where ``spec.stats``)."""
    if isinstance(X, HostRows):  # rows [x, y]
        return X.Z.shape[-1]
    return np.shape(X.gram)[-1] if isinstance(X, model.Stats) else np.shape(X)[-1] + 1


def fit(
    X: np.ndarray,
    y: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    spec: LoopSpec,
    hyper: Hyper,
    key: jax.Array,
    dtype: Any = jnp.float32,
    on_chunk: Callable[[int, History], None] | None = None,
    theta0: np.ndarray | None = None,
) -> FitResult:
    """Train θ̃ from ``theta0`` (zeros when None) on (X, y), evaluating on (X_test, y_test) after
    every epoch. ``theta0`` is [θ0, θ1..θM] in the units of X (as X is given: standardized or not).

    ``on_chunk(epochs_done, rows)`` is called on the host after each compiled chunk, for progress
    display, with the history rows of the epochs that chunk completed; a chunk inside a long epoch
    passes the last completed epoch's row again. It never runs inside the compiled loop.
    """
    train, test = training_data(
        X, y, X_test, y_test, spec=spec, dtype=dtype, key=key, shard=True
    )  # many devices: rows spread over them (full batches from rows, a statistics pass)
    shape = (_n_params(X),)
    theta = jnp.zeros(shape, dtype) if theta0 is None else jnp.asarray(theta0, dtype)
    if theta.shape != shape:
        raise ValueError(f"theta0 has shape {theta.shape}; this data needs {shape}")
    data_at = _host_batches(train, spec, key, dtype)  # (epoch, batch) -> what a call trains on
    train = data_at(0, 0)
    state, row0 = _begin_jit(theta, train, test, hyper, spec=spec)
    rows = [(row0, np.ones(1, bool))]
    steps: list[StepRows] = []  # with spec.log_steps: each chunk's step rows
    latest = row0  # the last completed epoch's row, for progress inside a long epoch
    try:
        for _ in range(spec.calls()):
            state, chunk, completed, chunk_steps = run_chunk(
                state, train, test, hyper, key, spec=spec
            )
            rows.append((chunk, completed))
            if chunk_steps is not None:
                steps.append(chunk_steps)
            # one host sync per chunk
            epoch, done, completed, batch = jax.device_get(
                (state.epoch, state.done, completed, state.batch)
            )
            if not done:
                train = data_at(int(epoch), int(batch))
            if on_chunk is not None:
                if completed.any():
                    latest = History(*(np.asarray(v)[completed] for v in chunk))
                on_chunk(int(epoch), jax.device_get(latest))
            if done:
                break
    except BaseException as e:  # Ctrl-C, SIGTERM: hand the epochs trained so far to the caller
        e.partial_fit = _result(state, rows, steps=steps)
        raise
    return _result(state, rows, steps=steps)


def _host_batches(train, spec: LoopSpec, key: jax.Array, dtype) -> Callable[[int, int], Any]:
    """What each compiled call trains on: ``train``, or, for rows on the host
    (:class:`~lrexp.core.layouts.HostRows`), the batches of the call starting at (epoch, batch),
    gathered there. A call then runs within one epoch (``spec.chunk == 1``)."""
    if not isinstance(train, HostRows):
        return lambda epoch, batch: train
    if spec.chunk != 1:
        raise ValueError(f"rows on the host need one epoch a call at most: chunk={spec.chunk}")
    count = -(-spec.steps_per_epoch(train.Z.shape[0]) // spec.split)
    return lambda epoch, batch: chunk_rows(train, key, epoch, batch, count, spec, dtype)


@lru_cache(maxsize=64)
def _batched(spec: LoopSpec, data_axis: int | None):
    """``_begin`` and ``run_chunk`` vmapped over members: one compiled program per (spec, axes)."""
    d = data_axis
    begin = jax.jit(jax.vmap(partial(_begin, spec=spec), in_axes=(0, d, d, 0)))
    chunk = jax.jit(jax.vmap(partial(run_chunk, spec=spec), in_axes=(0, d, d, 0, 0)))
    return begin, chunk


def fit_batch(
    X: np.ndarray,
    y: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    spec: LoopSpec,
    hypers: list[Hyper],
    keys: list[jax.Array],
    dtype: Any = jnp.float32,
    shared_data: bool = True,
    on_chunk: Callable[[int, History], None] | None = None,
    theta0: np.ndarray | None = None,
) -> list[FitResult]:
    """Train several members at once as one vectorized program (``vmap`` over members).

    Members share the loop's structure (``spec``) and differ in their float hyperparameters and
    shuffling keys; with ``shared_data`` they train on the same arrays, else the arrays carry a
    leading member axis. Each member stops on its own; the loop runs until all have stopped.
    ``on_chunk`` is called after each chunk with the rows of the slots in which some member
    completed an epoch (none, inside a long epoch). ``theta0`` (members, M+1): each member's
    starting θ̃ (zeros when None). Interrupted, the exception carries ``partial_fits``: each
    member's fit up to its last finished chunk.
    """
    hyper = jax.tree.map(lambda *v: jnp.stack(v), *hypers)
    key = jnp.stack(keys)
    many = devices.count() > 1  # members spread over the devices: as many on each
    size = devices.members_padded(len(hypers))
    if many:
        hyper, key = devices.spread(devices.pad_members((hyper, key), size))
        if not shared_data:
            X, y, X_test, y_test = devices.spread(devices.pad_members((X, y, X_test, y_test), size))
    # Members that share the data share its blocks' row order (the first member's key).
    train, test = training_data(
        X, y, X_test, y_test, spec=spec, dtype=dtype, stacked=not shared_data,
        key=key if not shared_data else key[0],
    )  # fmt: skip
    if many:  # shared data: a copy on every device
        train, test = devices.spread((train, test), members=not shared_data)
    begin, chunk_fn = _batched(spec, None if shared_data else 0)
    shape = (len(hypers), _n_params(X))
    theta = jnp.zeros(shape, dtype) if theta0 is None else jnp.asarray(theta0, dtype)
    if theta.shape != shape:
        raise ValueError(f"theta0 has shape {theta.shape}; these members need {shape}")
    if many:
        theta = devices.spread(devices.pad_members(theta, size))
    state, row0 = begin(theta, train, test, hyper)
    rows = [(row0, np.ones((len(hypers), 1), bool))]
    steps: list[StepRows] = []
    try:
        for _ in range(spec.calls()):
            state, chunk, completed, chunk_steps = chunk_fn(state, train, test, hyper, key)
            rows.append((chunk, completed))
            if chunk_steps is not None:
                steps.append(chunk_steps)
            epoch, done, completed = jax.device_get((state.epoch, state.done, completed))
            if on_chunk is not None:  # the slots in which some member completed an epoch
                slots = completed.any(axis=0)
                rows_now = History(*(np.asarray(v)[: len(hypers), slots] for v in chunk))
                on_chunk(int(epoch.max()), rows_now)
            if done.all():
                break
    except BaseException as e:  # Ctrl-C, SIGTERM: each member's epochs trained so far
        e.partial_fits = [_result(state, rows, member=b, steps=steps) for b in range(len(hypers))]
        raise
    return [_result(state, rows, member=b, steps=steps) for b in range(len(hypers))]
