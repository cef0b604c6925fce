"""The training loop: one compiled program (``jit`` of nested ``lax.scan``) returning θ and history.

An epoch is a scan over shuffled mini-batches (or a single full-batch step); a chunk is a scan over
``spec.chunk`` epochs. The host calls the same compiled chunk repeatedly: between calls it may show
progress, and it stops once the loop reports ``done`` (all epochs run, or the tolerance met). Once
done, later epochs inside a chunk leave the state unchanged, so every chunk has one fixed shape.

All float hyperparameters travel in ``hyper`` as arrays: changing their values reuses the compiled
program, and ``vmap`` can batch over them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lrexp import data as data_mod
from lrexp import model, optim


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

    def steps_per_epoch(self, n_train: int) -> int:
        return 1 if self.batch_size is None else -(-n_train // self.batch_size)


class Hyper(NamedTuple):
    """Float hyperparameters as arrays (a pytree: jit-traced, vmap-able)."""

    optimizer: Mapping[str, jax.Array]  # lr and the optimizer's float knobs
    schedule: Mapping[str, jax.Array]  # the schedule's float knobs
    tol: jax.Array  # stop when the train MSE improves by less (0 <= Δ < tol); -inf = never


class State(NamedTuple):
    theta: jax.Array  # θ̃ = [θ0, θ1..θM]
    opt_state: Any
    step: jax.Array  # optimizer steps taken
    epoch: jax.Array  # epochs run
    mse: jax.Array  # train MSE after the last epoch
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


def _evaluate(theta, train: model.Rows | model.Stats, test: model.Rows | model.Stats):
    """Full train TSSE and gradient norm, train and test MSE at θ̃."""
    loss, grad = jax.value_and_grad(model.loss)(theta, train)
    test_mse = model.loss(theta, test) / model.n_rows(test)
    return loss, loss / model.n_rows(train), test_mse, jnp.linalg.norm(grad)


def _n_static(train: model.Rows | model.Stats) -> int:
    """Rows per epoch, where the loop's shape depends on it (mini-batches need rows)."""
    return train.X.shape[0] if isinstance(train, model.Rows) else 1


def _begin(theta0: jax.Array, train, test, hyper: Hyper, *, spec: LoopSpec):
    """The state before the first step, and history row 0 (the starting point)."""
    tx, schedule = _transform(spec, hyper, _n_static(train))
    loss, mse, test_mse, grad_norm = _evaluate(theta0, train, test)
    int0 = jnp.zeros((), jnp.int32)
    state = State(theta0, tx.init(theta0), int0, int0, mse, jnp.zeros((), bool), int0 - 1, int0 - 1)
    row = History(loss, mse, test_mse, schedule(int0), grad_norm, theta0)
    return state, jax.tree.map(lambda v: v[None], row)


_begin_jit = jax.jit(_begin, static_argnames="spec")


def _guarded(theta, opt_state, new_theta, new_opt_state, diverged, step):
    """Take the update only while θ stays finite; else keep θ and record the step once."""
    ok = (diverged < 0) & jnp.all(jnp.isfinite(new_theta))
    keep = partial(jnp.where, ok)
    diverged = jnp.where((diverged < 0) & ~ok, step, diverged)
    return keep(new_theta, theta), jax.tree.map(keep, new_opt_state, opt_state), diverged


@partial(jax.jit, static_argnames="spec")
def run_chunk(
    state: State, train, test, hyper: Hyper, key: jax.Array, *, spec: LoopSpec
) -> tuple[State, History]:
    """Run ``spec.chunk`` epochs from ``state``; return the new state and their history rows.

    ``train``/``test`` are :class:`model.Rows`, or :class:`model.Stats` for full-batch training.
    """
    n = _n_static(train)
    tx, schedule = _transform(spec, hyper, n)

    def loss_fn(theta):
        return model.loss(theta, train)

    def sgd_step(carry, batch):
        theta, opt_state, diverged, step = carry
        idx, mask = batch
        rows = model.Rows(train.X[idx], train.y[idx])
        grad = jax.grad(lambda t: model.tsse(t, rows.X, rows.y, mask.astype(rows.X.dtype)))(theta)
        updates, new_opt_state = tx.update(grad, opt_state, theta)
        new_theta = optax.apply_updates(theta, updates)
        theta, opt_state, diverged = _guarded(
            theta, opt_state, new_theta, new_opt_state, diverged, step + 1
        )
        return (theta, opt_state, diverged, step + 1), None

    def full_step(s: State):
        value, grad = jax.value_and_grad(loss_fn)(s.theta)
        if spec.optimizer in optim.LINE_SEARCH:
            updates, opt_state = tx.update(
                grad, s.opt_state, s.theta, value=value, grad=grad, value_fn=loss_fn
            )
        else:
            updates, opt_state = tx.update(grad, s.opt_state, s.theta)
        new_theta = optax.apply_updates(s.theta, updates)
        return _guarded(s.theta, s.opt_state, new_theta, opt_state, s.diverged, s.step + 1)

    def train_epoch(s: State) -> State:
        if spec.batch_size is None:
            theta, opt_state, diverged = full_step(s)
        else:
            batches = data_mod.epoch_batches(jax.random.fold_in(key, s.epoch), n, spec.batch_size)
            carry = (s.theta, s.opt_state, s.diverged, s.step)
            (theta, opt_state, diverged, _), _ = jax.lax.scan(sgd_step, carry, batches)
        return s._replace(
            theta=theta,
            opt_state=opt_state,
            diverged=diverged,
            step=s.step + spec.steps_per_epoch(n),
            epoch=s.epoch + 1,
        )

    def epoch(s: State, _):
        new = jax.lax.cond(s.done, lambda s: s, train_epoch, s)
        loss, mse, test_mse, grad_norm = _evaluate(new.theta, train, test)
        # θ finite but its loss overflowing (float32) counts as diverging too
        diverged = jnp.where((new.diverged < 0) & ~jnp.isfinite(loss), new.step, new.diverged)
        improvement = s.mse - mse  # a rise is no plateau: only a small improvement stops
        met_tol = ~s.done & (improvement >= 0) & (improvement < hyper.tol)
        new = new._replace(
            mse=mse,
            diverged=diverged,
            done=s.done | met_tol | (new.epoch >= spec.epochs) | (diverged >= 0),
            stop_epoch=jnp.where(met_tol, new.epoch, new.stop_epoch),
        )
        lr = schedule(jnp.maximum(new.step - 1, 0))
        return new, History(loss, mse, test_mse, lr, grad_norm, new.theta)

    return jax.lax.scan(epoch, state, None, length=spec.chunk)


def chunk_epochs(n_train: int, steps_per_epoch: int, epochs: int, work: float = 2e7) -> int:
    """Epochs per compiled call: about ``work`` row-visits, so a call takes well under a second."""
    per_epoch = 2 * n_train + 200 * steps_per_epoch
    return max(1, min(epochs, math.floor(work / per_epoch)))


def training_data(X, y, X_test, y_test, *, spec: LoopSpec, dtype: Any, stacked: bool = False):
    """The train and test data as the loop takes them: rows in ``dtype``, or float64 statistics."""
    if spec.stats:
        stats = jax.vmap(model.sufficient_stats) if stacked else jax.jit(model.sufficient_stats)
        return stats(X, y), stats(X_test, y_test)
    rows = [jnp.asarray(a, dtype) for a in (X, y, X_test, y_test)]
    return model.Rows(*rows[:2]), model.Rows(*rows[2:])


def _result(state: State, rows: list[History], member: int | None = None) -> FitResult:
    """Assemble one fit's result from its chunks' rows (of ``member``, in a batched fit)."""
    time_axis = 0 if member is None else 1  # batched rows are (members, epochs, ...)

    def pick(a):
        a = np.asarray(a)
        return a if member is None else a[member]

    epochs_run, stop = int(pick(state.epoch)), int(pick(state.stop_epoch))
    diverged = int(pick(state.diverged))
    history = History(
        *(
            pick(np.concatenate([np.asarray(r[i]) for r in rows], axis=time_axis))[: epochs_run + 1]
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

    ``on_chunk(epochs_done, rows)`` is called on the host after each compiled chunk, with that
    chunk's history rows, for progress display. It never runs inside the compiled loop.
    """
    train, test = training_data(X, y, X_test, y_test, spec=spec, dtype=dtype)
    theta = jnp.zeros(np.shape(X)[-1] + 1, dtype)
    state, row0 = _begin_jit(theta, train, test, hyper, spec=spec)
    rows = [row0]
    try:
        for _ in range(-(-spec.epochs // spec.chunk)):
            state, chunk = run_chunk(state, train, test, hyper, key, spec=spec)
            rows.append(chunk)
            epoch, done = jax.device_get((state.epoch, state.done))  # one host sync per chunk
            if on_chunk is not None:
                on_chunk(int(epoch), jax.device_get(chunk))
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
    """
    hyper = jax.tree.map(lambda *v: jnp.stack(v), *hypers)
    key = jnp.stack(keys)
    train, test = training_data(
        X, y, X_test, y_test, spec=spec, dtype=dtype, stacked=not shared_data
    )
    begin, chunk_fn = _batched(spec, None if shared_data else 0)
    theta = jnp.zeros((len(hypers), np.shape(X)[-1] + 1), dtype)
    state, row0 = begin(theta, train, test, hyper)
    rows = [row0]
    for _ in range(-(-spec.epochs // spec.chunk)):
        state, chunk = chunk_fn(state, train, test, hyper, key)
        rows.append(chunk)
        epoch, done = jax.device_get((state.epoch, state.done))  # one host sync per chunk
        if on_chunk is not None:
            on_chunk(int(epoch.max()), jax.device_get(chunk))
        if done.all():
            break
    return [_result(state, rows, member=b) for b in range(len(hypers))]
