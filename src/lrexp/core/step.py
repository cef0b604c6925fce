"""The loop's training steps, traced inside the compiled chunk: a full-batch step, or the part of a
mini-batch epoch that one compiled call runs (a ``lax.scan`` over batches).

Each batch's rows come from a keyed pseudo-random bijection of the row indices
(:mod:`lrexp.core.shuffle`), so the steps need only their position (epoch, batch) to go on from
anywhere. An update that would leave θ non-finite is not taken: θ stays, and the step is recorded.

With ``LoopSpec.log_steps`` the steps also emit one :class:`StepRows` row each (the batch's MSE and
θ̃ after the step), stacked by the scan like the epoch history; without it they emit nothing and
the compiled program is the same as if the rows did not exist.

A step descends the batch's TSSE (``spec.reduction == "sum"``) or its mean over the rows actually
in the batch (``"mean"``: TSSE / b, the MSE; a short last batch is averaged over its own rows, a
full batch over all n). The mean's gradient is the sum's divided by b, so one learning rate suits
any batch size; line searches see the same scaled value.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lrexp.core import model, optim, shuffle
from lrexp.core.layouts import BatchBlocks, BatchRows, BlockMoments, ChunkRows
from lrexp.core.spec import LoopSpec


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


class StepRows(NamedTuple):
    """One row per optimizer step (``LoopSpec.log_steps``), as a training log has it."""

    epoch: jax.Array  # the epoch the step belongs to, from 1
    step: jax.Array  # the optimizer step, from 1 (counted over the whole fit)
    batch_mse: jax.Array  # the batch's MSE at θ̃ before the step: what the step descended
    theta: jax.Array  # θ̃ after the step, (M+1,)
    valid: jax.Array  # a step was taken (not past an epoch's end, nor after a stop or divergence)


class Loop(NamedTuple):
    """What every step of one compiled chunk shares."""

    spec: LoopSpec
    tx: optax.GradientTransformation
    train: Any  # model.Columns | model.Stats, or BatchRows | BatchBlocks | BlockMoments
    key: jax.Array  # the run's shuffling key: an epoch's order is fold_in(key, epoch)
    n: int  # rows per epoch, where the loop's shape depends on it


def _guarded(theta, opt_state, new_theta, new_opt_state, diverged, step, live=True):
    """Take a live update only while θ stays finite; else keep θ and record the step once."""
    finite = jnp.all(jnp.isfinite(new_theta))
    ok = live & (diverged < 0) & finite
    keep = partial(jnp.where, ok)
    diverged = jnp.where(live & (diverged < 0) & ~finite, step, diverged)
    return keep(new_theta, theta), jax.tree.map(keep, new_opt_state, opt_state), diverged


def reduced(spec: LoopSpec, value: jax.Array, rows: jax.Array | int) -> jax.Array:
    """A batch's TSSE, or its gradient, as the step descends it: as is, or over its ``rows``."""
    if spec.reduction == "sum":
        return value
    return value / jnp.maximum(jnp.asarray(rows, value.dtype), 1)  # an empty batch takes no step


def full_step(s: State, value: jax.Array, grad: jax.Array, loop: Loop) -> State:
    """Take one full-batch step from the TSSE ``value`` and its ``grad`` at ``s.theta``."""
    n = model.n_rows(loop.train)
    value, grad = reduced(loop.spec, value, n), reduced(loop.spec, grad, n)

    def loss_fn(theta):
        return reduced(loop.spec, model.loss(theta, loop.train), n)

    if optim.OPTIMIZERS[loop.spec.optimizer].line_search:
        updates, opt_state = loop.tx.update(
            grad, s.opt_state, s.theta, value=value, grad=grad, value_fn=loss_fn
        )
    else:
        updates, opt_state = loop.tx.update(grad, s.opt_state, s.theta)
    new_theta = optax.apply_updates(s.theta, updates)
    theta, opt_state, diverged = _guarded(
        s.theta, s.opt_state, new_theta, opt_state, s.diverged, s.step + 1
    )
    return s._replace(theta=theta, opt_state=opt_state, diverged=diverged, step=s.step + 1)


def batch_gradient(theta: jax.Array, order: jax.Array, b: jax.Array, loop: Loop) -> jax.Array:
    """The gradient at θ̃ of mini-batch ``b``'s loss (its TSSE, or TSSE over its rows: the
    reduction), in the epoch whose round keys are ``order``."""
    spec, train = loop.spec, loop.train
    if isinstance(train, BatchBlocks | BlockMoments):
        blocks = train[0]  # Zb, or S: per block, its rows or its moments
        ids, mask = shuffle.batch_blocks(
            order, blocks.shape[0] - 1, spec.batch_size // spec.block, b
        )
        ids = jnp.where(mask, ids, blocks.shape[0] - 1)  # past the end: the zero block
        if isinstance(train, BlockMoments):
            S = jnp.sum(blocks[ids], axis=0)  # S[0, 0] = Σ 1 over the batch's real rows
            return reduced(spec, model.tsse_grad_moments(theta, S), S[0, 0])
        Zb = blocks[ids]  # row 0 of a block: 1 for a real row, 0 for padding
        return reduced(spec, jax.grad(model.tsse_blocks)(theta, Zb), jnp.sum(Zb[:, 0]))
    rows, mask = _batch(order, b, loop)
    X, y, w = rows[:, :-1], rows[:, -1], mask.astype(rows.dtype)
    return reduced(spec, jax.grad(model.tsse)(theta, X, y, w), jnp.sum(w))


def _batch(order: jax.Array, b: jax.Array, loop: Loop) -> tuple[jax.Array, jax.Array]:
    """Mini-batch ``b``'s rows and 0/1 mask: gathered from the rows, or, for rows on the host,
    taken from the batches gathered there for this call (:class:`ChunkRows`)."""
    idx, mask = shuffle.batch_rows(order, loop.n, loop.spec.batch_size, b)
    if isinstance(loop.train, ChunkRows):
        return jax.lax.dynamic_index_in_dim(loop.train.Z, b - loop.train.first, 0, False), mask
    return loop.train.Z[idx], mask


def batch_mse(theta: jax.Array, order: jax.Array, b: jax.Array, loop: Loop) -> jax.Array:
    """The MSE at θ̃ of mini-batch ``b`` (its real rows only), for the per-step log."""
    if not isinstance(loop.train, BatchRows | ChunkRows):  # blocks' moments lack yᵀy
        raise ValueError("per-step rows need the rows layout (LoopSpec.block == 1)")
    rows, mask = _batch(order, b, loop)
    w = mask.astype(rows.dtype)
    return model.tsse(theta, rows[:, :-1], rows[:, -1], w) / jnp.sum(w)


def batch_steps(s: State, loop: Loop) -> tuple[State, StepRows | None]:
    """Take ``ceil(spe / split)`` mini-batch steps from position ``s.batch`` of epoch ``s.epoch``
    (``spe``: steps per epoch); steps past the epoch's end are no-ops. With ``log_steps``, also
    return a :class:`StepRows` row per step (else None)."""
    spec, tx = loop.spec, loop.tx
    spe = spec.steps_per_epoch(loop.n)
    length = -(-spe // spec.split)
    overrun = length * spec.split > spe  # the epoch's last part runs past its end
    order = shuffle.shuffle_key(jax.random.fold_in(loop.key, s.epoch))

    def step(carry, _):
        theta, opt_state, diverged, steps, b = carry
        grad = batch_gradient(theta, order, b, loop)
        updates, new_opt_state = tx.update(grad, opt_state, theta)
        new_theta = optax.apply_updates(theta, updates)
        live = b < spe if overrun else True  # past the end: no step
        if spec.log_steps:  # static: without it the step emits nothing, and computes no more
            mse, valid = batch_mse(theta, order, b, loop), jnp.asarray(live) & (diverged < 0)
        theta, opt_state, diverged = _guarded(
            theta, opt_state, new_theta, new_opt_state, diverged, steps + 1, live
        )
        row = StepRows(s.epoch + 1, steps + 1, mse, theta, valid) if spec.log_steps else None
        return (theta, opt_state, diverged, steps + live, b + 1), row

    carry = (s.theta, s.opt_state, s.diverged, s.step, s.batch)
    (theta, opt_state, diverged, steps, b), rows = jax.lax.scan(step, carry, length=length)
    new = s._replace(theta=theta, opt_state=opt_state, diverged=diverged, step=steps, batch=b)
    return new, rows


def no_steps(s: State, loop: Loop) -> StepRows | None:
    """The step rows of a slot that takes no step (the loop has stopped): all invalid."""
    if not loop.spec.log_steps:
        return None
    spec = loop.spec
    length = 1 if spec.batch_size is None else -(-spec.steps_per_epoch(loop.n) // spec.split)
    return StepRows(
        epoch=jnp.zeros(length, s.step.dtype),
        step=jnp.zeros(length, s.step.dtype),
        batch_mse=jnp.zeros(length, s.theta.dtype),
        theta=jnp.zeros((length, *s.theta.shape), s.theta.dtype),
        valid=jnp.zeros(length, bool),
    )


def train_slot(
    s: State, value: jax.Array, grad: jax.Array, loop: Loop
) -> tuple[State, StepRows | None]:
    """Train one epoch slot: a full-batch step (from ``value`` and ``grad`` at ``s.theta``), or a
    part of a mini-batch epoch, counting the epoch once its last batch is taken (or diverged).
    With ``log_steps``, also return the slot's :class:`StepRows` (else None)."""
    if loop.spec.batch_size is None:
        new = full_step(s, value, grad, loop)._replace(epoch=s.epoch + 1)
        return new, _full_step_row(s, new, value, loop)
    spe = loop.spec.steps_per_epoch(loop.n)
    s, rows = batch_steps(s, loop)
    complete = (s.batch >= spe) | (s.diverged >= 0)  # diverged: the rest would be no-ops
    return s._replace(epoch=s.epoch + complete, batch=jnp.where(complete, 0, s.batch)), rows


def _full_step_row(s: State, new: State, value: jax.Array, loop: Loop) -> StepRows | None:
    """A full-batch step's row: its batch is the whole training set (``value``: TSSE at s.θ̃)."""
    if not loop.spec.log_steps:
        return None
    mse = (value / model.n_rows(loop.train)).astype(s.theta.dtype)
    row = StepRows(new.epoch, new.step, mse, new.theta, s.diverged < 0)
    return jax.tree.map(lambda v: v[None], row)
