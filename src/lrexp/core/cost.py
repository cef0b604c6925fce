"""The cost model that sizes a compiled call ("chunk"): epochs per call, or calls per epoch."""

from __future__ import annotations

import math
from dataclasses import replace

from lrexp.core.layouts import moments_pay
from lrexp.core.spec import LoopSpec

# Seconds per compiled call that ``chunked`` aims at, and its cost model (measured on this 2-core
# CPU, float32): a signal waits for at most about one call, several times this on a loaded machine.
CHUNK_S = 0.1
STEP_S = 2.5e-6  # a compiled step and its bookkeeping; all of an epoch from statistics
ROW_S = 4e-9  # a mini-batch row: its index and gather; plus FLOAT_S per float of the row
FLOAT_S = 1.7e-9
FULL_FLOAT_S = 1.4e-9  # per float of [X, y] in a full-batch epoch from the rows (step, evaluation)


def epoch_seconds(spec: LoopSpec, n_train: int, n_features: int) -> float:
    """Model the seconds one epoch of ``spec`` takes on ``n_train`` rows of ``n_features``."""
    floats = n_features + 1
    if spec.stats:
        return STEP_S
    if spec.batch_size is None:
        return STEP_S + FULL_FLOAT_S * floats * n_train
    if spec.block > 1 and moments_pay(n_features, spec.block):  # the blocks' moments
        step_s = STEP_S + FLOAT_S * floats * (floats + 1) * (spec.batch_size // spec.block)
    else:
        step_s = STEP_S + (ROW_S + FLOAT_S * floats) * spec.batch_size
    return step_s * spec.steps_per_epoch(n_train)


def chunked(spec: LoopSpec, n_train: int, n_features: int, target_s: float = CHUNK_S) -> LoopSpec:
    """``spec`` with the epochs per call (``chunk``), or the calls per epoch (``split``), set so
    that a compiled call takes about ``target_s`` seconds at any data size."""
    epoch_s = epoch_seconds(spec, n_train, n_features)
    if epoch_s > target_s and spec.batch_size is not None:  # a full-batch step cannot be split
        split = min(spec.steps_per_epoch(n_train), math.ceil(epoch_s / target_s))
        return replace(spec, chunk=1, split=split)
    return replace(spec, chunk=max(1, min(spec.epochs, math.floor(target_s / epoch_s))), split=1)
