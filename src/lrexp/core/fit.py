"""The training loop: one compiled program (``jit`` of nested ``lax.scan``) returning θ and history.

A mini-batch epoch is a scan over batches whose rows come from a keyed pseudo-random bijection of
the row indices (``data.batch_rows``), so the loop needs only its position (epoch, batch) to go on
from anywhere; a full-batch epoch is a single step. A compiled call ("chunk") runs ``spec.chunk``
epochs, or, for epochs too long for one call, ``1/spec.split`` of an epoch: calls take a fraction
of a second at any data size, so the host can show progress and honour a signal between them. It
calls the same compiled chunk until the loop reports ``done`` (all epochs run, the tolerance met,
or diverged); once done, a chunk leaves the state unchanged, so every chunk has one fixed shape.
A chunk emits one history row per epoch slot, with a flag saying whether that slot completed an
epoch (a part of an epoch, or a slot after ``done``, does not).

All float hyperparameters travel in ``hyper`` as arrays: changing their values reuses the compiled
program, and ``vmap`` can batch over them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache, partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lrexp.core import data as data_mod
from lrexp.core import model, optim
from lrexp.core.layouts import BatchBlocks, BatchRows, BlockMoments, moments_pay, training_data


@dataclass(frozen=True)
class LoopSpec:
    """The static structure of a training run: changing any field compiles a new program."""

    optimizer: str
    schedule: str
    optimizer_static: tuple[tuple[str, Any], ...] = ()
    schedule_static: tuple[tuple[str, Any], ...] = ()
    batch_size: int | None = None  # None: one full-batch step per epoch
    epochs: int = 1
    chunk: int = 1  # epochs per compiled call
    stats: bool = False  # full batch from sufficient statistics rather than from the rows
    split: int = 1  # compiled calls per epoch, for mini-batch epochs too long for one (chunk 1)
    block: int = 1  # mini-batches: rows shuffled as blocks of this many (1: row by row)

    def steps_per_epoch(self, n_train: int) -> int:
        return 1 if self.batch_size is None else -(-n_train // self.batch_size)

    def calls(self) -> int:
        """Compiled calls that run every epoch (fewer when the loop stops early)."""
        return -(-self.epochs // self.chunk) * self.split


class Hyper(NamedTuple):
    """Float hyperparameters as arrays (a pytree: jit-traced, vmap-able)."""

    optimizer: Mapping[str, jax.Array]  # lr and the optimizer's float knobs
    schedule: Mapping[str, jax.Array]  # the schedule's float knobs
    tol: jax.Array  # stop when the train MSE improves by less (0 <= Δ < tol); -inf = never


class State(NamedTuple):
    theta: jax.Array  # θ̃ = [θ0, θ1..θM]
    opt_state: Any
    step: jax.Array  # optimizer steps taken
    epoch: jax.Array  # epochs completed
    batch: jax.Array  # mini-batches of the epoch in progress taken so far
    mse: jax.Array  # train MSE after the last completed epoch
    done: jax.Array  # all epochs run, the tolerance met, or diverged
    stop_epoch: jax.Array  # epoch at which the tolerance was met; -1 if never
    diverged: jax.Array  # the step whose update left θ non-finite (θ kept from before); -1 if never


class History(NamedTuple):
    """One row per epoch (per step in full-batch mode); row 0 is the starting point."""

    train_tsse: Any
    train_mse: Any
    test_mse: Any
    lr: Any
    grad_norm: Any
    theta: Any  # (rows, M+1)


class FitResult(NamedTuple):
    theta: np.ndarray  # final θ̃
    history: History  # numpy arrays, rows 0..epochs_run
    epochs_run: int
    stop_epoch: int | None  # epoch at which the tolerance was met
    steps: int  # optimizer steps taken
    diverged_step: int | None = None  # the step at which training diverged


def make_hyper(
    optimizer: Mapping[str, float], schedule: Mapping[str, float], tol: float | None, dtype: Any
) -> Hyper:
    """Pack float knobs as arrays of the training dtype."""

    def cast(d):
        return {k: jnp.asarray(v, dtype) for k, v in d.items()}

    return Hyper(
        cast(optimizer), cast(schedule), jnp.asarray(-jnp.inf if tol is None else tol, dtype)
    )


def _transform(spec: LoopSpec, hyper: Hyper, n_train: int):
    total_steps = spec.epochs * spec.steps_per_epoch(n_train)
    opt = dict(hyper.optimizer)
    schedule = optim.make_schedule(
        spec.schedule, opt.pop("lr"), hyper.schedule, dict(spec.schedule_static), total_steps
    )
    tx = optim.make_optimizer(spec.optimizer, schedule, opt, dict(spec.optimizer_static))
    return tx, schedule


def _evaluate(theta, train, test: model.Rows | model.Stats, *, with_grad: bool = False):
    """Full train TSSE and gradient norm, train and test MSE at θ̃, in θ̃'s dtype (and, with
    ``with_grad``, the train gradient, for the next full-batch step to reuse)."""
    if isinstance(train, BatchRows | BatchBlocks | BlockMoments):
        train = train.stats
    loss, grad = jax.value_and_grad(model.loss)(theta, train)
    test_mse = model.loss(theta, test) / model.n_rows(test)
    values = loss, loss / model.n_rows(train), test_mse, jnp.linalg.norm(grad)
    values = tuple(v.astype(theta.dtype) for v in values)
    return (values, grad) if with_grad else values


def _n_static(train, spec: LoopSpec) -> int:
    """Rows per epoch, where the loop's shape depends on it (mini-batches need rows). Padding
    blocks to whole blocks adds no step while the block divides the batch size."""
    if isinstance(train, BatchRows):
        return train.Z.shape[0]
    if isinstance(train, BatchBlocks | BlockMoments):  # blocks of spec.block rows, a zero block
        return (train[0].shape[0] - 1) * spec.block
    return train.X.shape[0] if isinstance(train, model.Rows) else 1


def _begin(theta0: jax.Array, train, test, hyper: Hyper, *, spec: LoopSpec):
    """The state before the first step, and history row 0 (the starting point)."""
    tx, schedule = _transform(spec, hyper, _n_static(train, spec))
    loss, mse, test_mse, grad_norm = _evaluate(theta0, train, test)
    int0 = jnp.zeros((), jnp.int32)
    no = jnp.zeros((), bool)
    state = State(theta0, tx.init(theta0), int0, int0, int0, mse, no, int0 - 1, int0 - 1)
    row = History(loss, mse, test_mse, schedule(int0), grad_norm, theta0)
    return state, jax.tree.map(lambda v: v[None], row)


_begin_jit = jax.jit(_begin, static_argnames="spec")


def _guarded(theta, opt_state, new_theta, new_opt_state, diverged, step, live=True):
    """Take a live update only while θ stays finite; else keep θ and record the step once."""
    finite = jnp.all(jnp.isfinite(new_theta))
    ok = live & (diverged < 0) & finite
    keep = partial(jnp.where, ok)
    diverged = jnp.where(live & (diverged < 0) & ~finite, step, diverged)
    return keep(new_theta, theta), jax.tree.map(keep, new_opt_state, opt_state), diverged


@partial(jax.jit, static_argnames="spec")
def run_chunk(
    state: State, train, test, hyper: Hyper, key: jax.Array, *, spec: LoopSpec
) -> tuple[State, History, jax.Array]:
    """Run one chunk from ``state``: ``spec.chunk`` epochs, or ``1/spec.split`` of one.

    Returns the new state, one history row per epoch slot, and a flag per slot telling whether
    it completed an epoch (only those rows belong to the history). ``train`` is
    :class:`BatchRows` for mini-batches; for full batches, :class:`model.Columns` (``test``
    :class:`model.Rows`), or :class:`model.Stats` (``test`` then likewise).
    """
    n = _n_static(train, spec)
    spe = spec.steps_per_epoch(n)
    tx, schedule = _transform(spec, hyper, n)

    def loss_fn(theta):
        return model.loss(theta, train)

    def full_step(s: State, value, grad) -> State:
        if spec.optimizer in optim.LINE_SEARCH:
            updates, opt_state = tx.update(
                grad, s.opt_state, s.theta, value=value, grad=grad, value_fn=loss_fn
            )
        else:
            updates, opt_state = tx.update(grad, s.opt_state, s.theta)
        new_theta = optax.apply_updates(s.theta, updates)
        theta, opt_state, diverged = _guarded(
            s.theta, s.opt_state, new_theta, opt_state, s.diverged, s.step + 1
        )
        return s._replace(theta=theta, opt_state=opt_state, diverged=diverged, step=s.step + 1)

    def sgd_steps(s: State) -> State:
        """``ceil(spe / split)`` mini-batches from position ``s.batch`` of epoch ``s.epoch``."""
        length = -(-spe // spec.split)
        overrun = length * spec.split > spe  # the epoch's last part runs past its end
        order = data_mod.shuffle_key(jax.random.fold_in(key, s.epoch))

        def gradient(theta, b):
            if isinstance(train, BatchBlocks | BlockMoments):
                blocks = train[0]  # Zb, or S: per block, its rows or its moments
                ids, mask = data_mod.batch_blocks(
                    order, blocks.shape[0] - 1, spec.batch_size // spec.block, b
                )
                ids = jnp.where(mask, ids, blocks.shape[0] - 1)  # past the end: the zero block
                if isinstance(train, BlockMoments):
                    return model.tsse_grad_moments(theta, jnp.sum(blocks[ids], axis=0))
                return jax.grad(model.tsse_blocks)(theta, blocks[ids])
            idx, mask = data_mod.batch_rows(order, n, spec.batch_size, b)
            rows = train.Z[idx]
            X, y, w = rows[:, :-1], rows[:, -1], mask.astype(rows.dtype)
            return jax.grad(model.tsse)(theta, X, y, w)

        def step(carry, _):
            theta, opt_state, diverged, steps, b = carry
            grad = gradient(theta, b)
            updates, new_opt_state = tx.update(grad, opt_state, theta)
            new_theta = optax.apply_updates(theta, updates)
            live = b < spe if overrun else True  # past the end: no step
            theta, opt_state, diverged = _guarded(
                theta, opt_state, new_theta, new_opt_state, diverged, steps + 1, live
            )
            return (theta, opt_state, diverged, steps + live, b + 1), None

        carry = (s.theta, s.opt_state, s.diverged, s.step, s.batch)
        (theta, opt_state, diverged, steps, b), _ = jax.lax.scan(step, carry, length=length)
        return s._replace(theta=theta, opt_state=opt_state, diverged=diverged, step=steps, batch=b)

    def train_slot(s: State, value, grad) -> State:
        if spec.batch_size is None:
            return full_step(s, value, grad)._replace(epoch=s.epoch + 1)
        s = sgd_steps(s)
        complete = (s.batch >= spe) | (s.diverged >= 0)  # diverged: the rest would be no-ops
        return s._replace(epoch=s.epoch + complete, batch=jnp.where(complete, 0, s.batch))

    def slot(carry, _):
        s, value, grad = carry  # TSSE and gradient at s.theta, from the previous evaluation
        new = jax.lax.cond(s.done, lambda s, *_: s, train_slot, s, value, grad)
        completed = new.epoch > s.epoch
        (loss, mse, test_mse, grad_norm), grad = _evaluate(new.theta, train, test, with_grad=True)
        # θ finite but its loss overflowing (float32) counts as diverging too
        overflow = completed & (new.diverged < 0) & ~jnp.isfinite(loss)
        diverged = jnp.where(overflow, new.step, new.diverged)
        improvement = s.mse - mse  # a rise is no plateau: only a small improvement stops
        met_tol = completed & (improvement >= 0) & (improvement < hyper.tol)
        stop = met_tol | (new.epoch >= spec.epochs) | (diverged >= 0)
        new = new._replace(
            mse=jnp.where(completed, mse, new.mse),
            diverged=diverged,
            done=s.done | (completed & stop),
            stop_epoch=jnp.where(met_tol, new.epoch, new.stop_epoch),
        )
        lr = schedule(jnp.maximum(new.step - 1, 0))
        row = History(loss, mse, test_mse, lr, grad_norm, new.theta)
        return (new, loss, grad), (row, completed)

    # A full step reuses the evaluation that followed the previous one (the same θ̃): from the
    # rows, one value-and-gradient pass per epoch instead of two. The chunk's first step has none.
    (value, *_), grad = _evaluate(state.theta, train, test, with_grad=True)
    (state, _, _), (rows, completed) = jax.lax.scan(slot, (state, value, grad), length=spec.chunk)
    return state, rows, completed


# Seconds per compiled call that ``chunked`` aims at, and its cost model (measured on this 2-core
# CPU, float32): a signal waits for at most about one call, several times this on a loaded machine.
CHUNK_S = 0.1
STEP_S = 2.5e-6  # a compiled step and its bookkeeping; all of an epoch from statistics
ROW_S = 4e-9  # a mini-batch row: its index and gather; plus FLOAT_S per float of the row
FLOAT_S = 1.7e-9
FULL_FLOAT_S = 1.4e-9  # per float of [X, y] in a full-batch epoch from the rows (step, evaluation)


def chunked(spec: LoopSpec, n_train: int, n_features: int, target_s: float = CHUNK_S) -> LoopSpec:
    """``spec`` with the epochs per call (``chunk``), or the calls per epoch (``split``), set so
    that a compiled call takes about ``target_s`` seconds at any data size."""
    floats = n_features + 1
    if spec.stats:
        epoch_s = STEP_S
    elif spec.batch_size is None:
        epoch_s = STEP_S + FULL_FLOAT_S * floats * n_train
    elif spec.block > 1 and moments_pay(n_features, spec.block):  # the blocks' moments
        step_s = STEP_S + FLOAT_S * floats * (floats + 1) * (spec.batch_size // spec.block)
        epoch_s = step_s * spec.steps_per_epoch(n_train)
    else:
        step_s = STEP_S + (ROW_S + FLOAT_S * floats) * spec.batch_size
        epoch_s = step_s * spec.steps_per_epoch(n_train)
    if epoch_s > target_s and spec.batch_size is not None:  # a full-batch step cannot be split
        split = min(spec.steps_per_epoch(n_train), math.ceil(epoch_s / target_s))
        return replace(spec, chunk=1, split=split)
    return replace(spec, chunk=max(1, min(spec.epochs, math.floor(target_s / epoch_s))), split=1)


def _result(state: State, rows: list[tuple[History, Any]], member: int | None = None) -> FitResult:
    """Assemble one fit's result from its chunks' rows (of ``member``, in a batched fit)."""

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
    )


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
) -> FitResult:
    """Train θ̃ from zeros on (X, y), evaluating on (X_test, y_test) after every epoch.

    ``on_chunk(epochs_done, rows)`` is called on the host after each compiled chunk, for progress
    display, with the history rows of the epochs that chunk completed; a chunk inside a long epoch
    passes the last completed epoch's row again. It never runs inside the compiled loop.
    """
    train, test = training_data(X, y, X_test, y_test, spec=spec, dtype=dtype, key=key)
    theta = jnp.zeros(np.shape(X)[-1] + 1, dtype)
    state, row0 = _begin_jit(theta, train, test, hyper, spec=spec)
    rows = [(row0, np.ones(1, bool))]
    latest = row0  # the last completed epoch's row, for progress inside a long epoch
    try:
        for _ in range(spec.calls()):
            state, chunk, completed = run_chunk(state, train, test, hyper, key, spec=spec)
            rows.append((chunk, completed))
            # one host sync per chunk
            epoch, done, completed = jax.device_get((state.epoch, state.done, completed))
            if on_chunk is not None:
                if completed.any():
                    latest = History(*(np.asarray(v)[completed] for v in chunk))
                on_chunk(int(epoch), jax.device_get(latest))
            if done:
                break
    except BaseException as e:  # Ctrl-C, SIGTERM: hand the epochs trained so far to the caller
        e.partial_fit = _result(state, rows)
        raise
    return _result(state, rows)


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
) -> list[FitResult]:
    """Train several members at once as one vectorized program (``vmap`` over members).

    Members share the loop's structure (``spec``) and differ in their float hyperparameters and
    shuffling keys; with ``shared_data`` they train on the same arrays, else the arrays carry a
    leading member axis. Each member stops on its own; the loop runs until all have stopped.
    ``on_chunk`` is called after each chunk with the rows of the slots in which some member
    completed an epoch (none, inside a long epoch).
    """
    hyper = jax.tree.map(lambda *v: jnp.stack(v), *hypers)
    key = jnp.stack(keys)
    # Members that share the data share its blocks' row order (the first member's key).
    train, test = training_data(
        X, y, X_test, y_test, spec=spec, dtype=dtype, stacked=not shared_data,
        key=key if not shared_data else key[0],
    )  # fmt: skip
    begin, chunk_fn = _batched(spec, None if shared_data else 0)
    theta = jnp.zeros((len(hypers), np.shape(X)[-1] + 1), dtype)
    state, row0 = begin(theta, train, test, hyper)
    rows = [(row0, np.ones((len(hypers), 1), bool))]
    for _ in range(spec.calls()):
        state, chunk, completed = chunk_fn(state, train, test, hyper, key)
        rows.append((chunk, completed))
        epoch, done, completed = jax.device_get((state.epoch, state.done, completed))
        if on_chunk is not None:  # the slots in which some member completed an epoch
            slots = completed.any(axis=0)
            on_chunk(int(epoch.max()), History(*(np.asarray(v)[:, slots] for v in chunk)))
        if done.all():
            break
    return [_result(state, rows, member=b) for b in range(len(hypers))]
