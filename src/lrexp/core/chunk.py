"""One compiled call of the training loop ("chunk"): ``jit`` of a ``lax.scan`` over epoch slots.

A chunk runs ``spec.chunk`` epochs, or, for epochs too long for one call, ``1/spec.split`` of an
epoch. After each slot it evaluates θ̃ on the full train and test data and applies the stop rule
(all epochs run, a tolerance met, or diverged); once done, a chunk leaves the state unchanged, so
every chunk has one fixed shape. It emits one history row per slot, with a flag saying whether
that slot completed an epoch (a part of an epoch, or a slot after ``done``, does not), and, with
``spec.log_steps``, the slot's per-step rows (:class:`~lrexp.core.step.StepRows`).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lrexp.core import model, optim
from lrexp.core.layouts import BatchBlocks, BatchRows, BlockMoments, ChunkRows
from lrexp.core.spec import Hyper, LoopSpec
from lrexp.core.step import Loop, State, StepRows, no_steps, train_slot


class History(NamedTuple):
    """One row per epoch (per step in full-batch mode); row 0 is the starting point."""

    train_tsse: Any
    train_mse: Any
    test_mse: Any
    lr: Any
    grad_norm: Any
    theta: Any  # (rows, M+1)


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
    if isinstance(train, BatchRows | BatchBlocks | BlockMoments | ChunkRows):
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
    if isinstance(train, ChunkRows):  # rows on the host: their number as a shape
        return train.rows.shape[0]
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


def _settle(s: State, new: State, completed, loss, mse, hyper: Hyper, epochs: int) -> State:
    """Apply the stop rule to ``new``, trained from ``s``, given its train TSSE and MSE."""
    # θ finite but its loss overflowing (float32) counts as diverging too
    overflow = completed & (new.diverged < 0) & ~jnp.isfinite(loss)
    diverged = jnp.where(overflow, new.step, new.diverged)
    improvement = s.mse - mse  # a rise is no plateau: only a small improvement stops
    small = (improvement < hyper.tol) | (improvement <= hyper.rtol * s.mse)
    met_tol = completed & (improvement >= 0) & small
    stop = met_tol | (new.epoch >= epochs) | (diverged >= 0)
    return new._replace(
        mse=jnp.where(completed, mse, new.mse),
        diverged=diverged,
        done=s.done | (completed & stop),
        stop_epoch=jnp.where(met_tol, new.epoch, new.stop_epoch),
    )


def _slot(carry, _, *, loop: Loop, test, hyper: Hyper, schedule):
    """Train one epoch slot, evaluate θ̃ after it and apply the stop rule; emit its history row."""
    s, value, grad = carry  # TSSE and gradient at s.theta, from the previous evaluation

    def idle(s, *_):  # the loop has stopped: no step, and invalid step rows
        return s, no_steps(s, loop)

    new, steps = jax.lax.cond(s.done, idle, partial(train_slot, loop=loop), s, value, grad)
    completed = new.epoch > s.epoch
    (loss, mse, test_mse, grad_norm), grad = _evaluate(new.theta, loop.train, test, with_grad=True)
    new = _settle(s, new, completed, loss, mse, hyper, loop.spec.epochs)
    lr = schedule(jnp.maximum(new.step - 1, 0))
    row = History(loss, mse, test_mse, lr, grad_norm, new.theta)
    return (new, loss, grad), (row, completed, steps)


@partial(jax.jit, static_argnames="spec")
def run_chunk(
    state: State, train, test, hyper: Hyper, key: jax.Array, *, spec: LoopSpec
) -> tuple[State, History, jax.Array, StepRows | None]:
    """Run one chunk from ``state``: ``spec.chunk`` epochs, or ``1/spec.split`` of one.

    Returns the new state, one history row per epoch slot, a flag per slot telling whether
    it completed an epoch (only those rows belong to the history), and with ``spec.log_steps``
    the step rows, (slots, steps per slot) each (else None). ``train`` is
    :class:`BatchRows` for mini-batches; for full batches, :class:`model.Columns` (``test``
    :class:`model.Rows`), or :class:`model.Stats` (``test`` then likewise).
    """
    n = _n_static(train, spec)
    tx, schedule = _transform(spec, hyper, n)
    loop = Loop(spec, tx, train, key, n)
    slot = partial(_slot, loop=loop, test=test, hyper=hyper, schedule=schedule)
    # A full step reuses the evaluation that followed the previous one (the same θ̃): from the
    # rows, one value-and-gradient pass per epoch instead of two. The chunk's first step has none.
    (value, *_), grad = _evaluate(state.theta, train, test, with_grad=True)
    carry = (state, value, grad)
    (state, _, _), (rows, completed, steps) = jax.lax.scan(slot, carry, length=spec.chunk)
    return state, rows, completed, steps
