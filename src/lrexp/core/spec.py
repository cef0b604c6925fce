"""What a training run is made of: its static structure (:class:`LoopSpec`, one compiled program
per value) and its float hyperparameters (:class:`Hyper`, arrays: new values reuse the program)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

REDUCTIONS = ("mean", "sum")


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
    log_steps: bool = False  # also emit every step's batch MSE and θ̃ (a row per optimizer step)
    # What a step descends: "sum", the batch's TSSE, or "mean", TSSE / (rows in the batch), the
    # MSE (the same gradient direction; lr_sum = lr_mean / b). The pipeline's default is "mean"
    # (``train.reduction``); a spec built by hand keeps the sum it always took.
    reduction: str = "sum"

    def __post_init__(self):
        if self.reduction not in REDUCTIONS:
            raise ValueError(
                f"reduction={self.reduction!r}: must be one of {', '.join(REDUCTIONS)}"
            )

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
    # stop, too, when it improves by at most this share of itself (0 <= Δ <= rtol·MSE); -inf = never
    rtol: jax.Array


def make_hyper(
    optimizer: Mapping[str, float],
    schedule: Mapping[str, float],
    tol: float | None,
    dtype: Any,
    *,
    rtol: float | None = None,
) -> Hyper:
    """Pack float knobs as arrays of the training dtype (a ``None`` tolerance: never stop on it)."""

    def cast(d):
        return {k: jnp.asarray(v, dtype) for k, v in d.items()}

    def off(v):
        return jnp.asarray(-jnp.inf if v is None else v, dtype)

    return Hyper(cast(optimizer), cast(schedule), off(tol), off(rtol))
