"""The training data as the loop takes it: float64 sufficient statistics, feature-major columns,
rows for mini-batches, or blocks of rows for block-shuffled mini-batches."""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lrexp.core import devices, model, shuffle
from lrexp.core.spec import LoopSpec


class BatchRows(NamedTuple):
    """Training data for mini-batches: the rows, and their statistics for evaluating each epoch.

    ``Z = [X, y]`` holds a row's features and target side by side, so that one gather fetches a
    batch (a gather costs per row fetched, on this CPU, more than per byte).
    """

    Z: jax.Array  # (n, M+1) in the training dtype
    stats: model.Stats  # float64: train TSSE and gradient in O(M²) instead of passes over Z


class BatchBlocks(NamedTuple):
    """Training data for mini-batches drawn as blocks of rows (``LoopSpec.block`` > 1).

    The rows are put in a pseudo-random order once, padded to whole blocks with rows of zeros,
    and stored block by block, feature-major within a block: a batch is a few contiguous blocks,
    which this CPU fetches several times faster than as many rows scattered over X. A last block
    of zeros stands in for the positions past the epoch's end.
    """

    Zb: jax.Array  # (n_blocks + 1, M+2, block): per row 1, x, y; zeros for padding
    stats: model.Stats  # float64: train TSSE and gradient in O(M²) instead of passes over Zb


class BlockMoments(NamedTuple):
    """Training data for block-shuffled mini-batches as each block's moments
    (:func:`model.block_moments`), where they are fewer than its values (:func:`moments_pay`).

    A batch's gradient then needs its blocks' (M+1)(M+2) moments rather than their (M+2)·block
    values: several times less to fetch and to multiply per step, for the same gradient up to
    rounding (in the training dtype, like the gradient from the rows).
    """

    S: jax.Array  # (n_blocks + 1, M+1, M+2) in the training dtype; the last block zeros
    stats: model.Stats  # float64: train TSSE and gradient in O(M²) instead of passes over S


class HostRows(NamedTuple):
    """Training rows on the host (a memory-mapped file: data larger than memory), for
    mini-batches gathered per compiled call (:func:`chunk_rows`) into :class:`ChunkRows`.

    The loop takes row i as (Z[i] − center) / scale: standardized as it is gathered."""

    Z: Any  # (n, M+1) [x, y] rows, a NumPy array or memmap
    center: Any  # (M+1,)
    scale: Any  # (M+1,)
    stats: model.Stats  # float64, of the standardized rows: evaluation in O(M²)


class ChunkRows(NamedTuple):
    """The batches one compiled call takes from :class:`HostRows`: Z[j] is batch ``first + j`` of
    the epoch (its rows in the epoch's shuffled order, padding rows at weight 0)."""

    Z: jax.Array  # (batches, batch_size, M+1) in the training dtype
    first: jax.Array  # the epoch's batch index of Z[0]
    rows: jax.Array  # (n, 0): the epoch's rows, as a static shape (no data)
    stats: model.Stats


@partial(jax.jit, static_argnames=("n", "batch_size", "count"))
def _chunk_indices(key, epoch, first, *, n: int, batch_size: int, count: int):
    order = shuffle.shuffle_key(jax.random.fold_in(key, epoch))
    batch = first + jnp.arange(count, dtype=jnp.int32)
    return jax.vmap(lambda b: shuffle.batch_rows(order, n, batch_size, b)[0])(batch)


def chunk_rows(host: HostRows, key, epoch: int, first: int, count: int, spec: LoopSpec, dtype):
    """Gather batches ``first .. first + count − 1`` of ``epoch`` from ``host``, in the order
    the loop's steps would take them from rows held on the device (the same keyed bijection)."""
    n = host.Z.shape[0]
    idx = np.asarray(_chunk_indices(key, epoch, first, n=n, batch_size=spec.batch_size,
                                    count=count))  # fmt: skip
    rows = (np.asarray(host.Z[idx.ravel()], np.float64) - host.center) / host.scale
    Z = jnp.asarray(rows.reshape(count, spec.batch_size, -1), dtype)
    return ChunkRows(Z, jnp.asarray(first, jnp.int32), jnp.zeros((n, 0), jnp.int8), host.stats)


def moments_pay(n_features: int, block: int) -> bool:
    """Whether a block's (M+1)(M+2) moments are at most half its (M+2)·block values."""
    return 2 * (n_features + 1) <= block


LAYOUT = 2**32 - 1  # the blocks' row order comes from fold_in(key, LAYOUT); epochs use 0, 1, …


def training_data(
    X, y, X_test, y_test, *, spec: LoopSpec, dtype: Any, stacked: bool = False, key=None,
    shard: bool = False,
):  # fmt: skip
    """The train and test data as the loop takes them: float64 statistics for full batches from
    statistics, feature-major :class:`model.Columns` (test: rows) in ``dtype`` for full batches
    from rows, :class:`BatchRows` (and the test statistics) for mini-batches, or
    :class:`BatchBlocks` for mini-batches of blocks (their rows ordered by ``key``).

    On many devices (:func:`devices.shards_rows`) the statistics pass spreads the rows over
    them, and with ``shard`` full batches from rows are :class:`model.Shards` of columns."""
    if isinstance(X, HostRows):  # gathered per compiled call (chunk_rows); the test: statistics
        return X, X_test
    many = not stacked and y is not None and devices.shards_rows(np.shape(y)[0])
    if spec.stats and many:
        return devices.sharded_sum(_stats, (X, y)), devices.sharded_sum(_stats, (X_test, y_test))
    if spec.batch_size is None and not spec.stats and many and shard:
        return devices.shard_columns(X, y, dtype), devices.shard_columns(X_test, y_test, dtype)
    if spec.stats:
        if isinstance(X, model.Stats):  # statistics already: a streamed pass's (y's are None)
            return X, X_test
        stats = jax.vmap(_stats) if stacked else _stats_jit
        return stats(X, y), stats(X_test, y_test)
    if spec.batch_size is not None and spec.block > 1:
        if stacked:
            layout_key = jax.vmap(jax.random.fold_in, in_axes=(0, None))(key, LAYOUT)
            prepare = jax.vmap(_blocks_jit, in_axes=(0, 0, 0, 0, 0, None, None))
            return prepare(X, y, X_test, y_test, layout_key, jnp.dtype(dtype), spec.block)
        layout_key = jax.random.fold_in(key, LAYOUT)
        return _blocks_jit(X, y, X_test, y_test, layout_key, jnp.dtype(dtype), spec.block)
    if spec.batch_size is not None:
        prepare = jax.vmap(_batch_data, in_axes=(0, 0, 0, 0, None)) if stacked else _batch_jit
        return prepare(X, y, X_test, y_test, jnp.dtype(dtype))
    rows = [jnp.asarray(a, dtype) for a in (X, y, X_test, y_test)]
    return model.columns(*rows[:2]), model.Rows(*rows[2:])  # train: X̃θ̃ and X̃ᵀr both contiguous


def _stats(X: jax.Array, y: jax.Array, block: int = 1 << 16) -> model.Stats:
    """:func:`model.sufficient_stats` summed over blocks of rows: float64 copies of one block at a
    time rather than of all of X (4.7× faster at 1e7 rows here, and no n × (M+2) temporary)."""
    n_blocks = X.shape[0] // block
    stats = model.sufficient_stats(X[n_blocks * block :], y[n_blocks * block :])
    if n_blocks == 0:
        return stats

    def add(total: model.Stats, i):
        rows = (jax.lax.dynamic_slice_in_dim(a, i * block, block) for a in (X, y))
        return jax.tree.map(jnp.add, total, model.sufficient_stats(*rows)), None

    return jax.lax.scan(add, stats, jnp.arange(n_blocks))[0]


def _batch_data(X, y, X_test, y_test, dtype):
    Z = jnp.concatenate([X, y[..., None]], axis=-1).astype(dtype)
    return BatchRows(Z, _stats(X, y)), _stats(X_test, y_test)


def _block_data(X, y, X_test, y_test, key, dtype, block: int):
    """:class:`BatchBlocks`: rows [1, x, y] in the order of a keyed bijection, padded with zeros
    to whole blocks and one more block, stored (n_blocks + 1, M+2, block); or, where they pay,
    their :class:`BlockMoments`."""
    n = X.shape[0]
    n_blocks = -(-n // block)
    order = shuffle.shuffled_rows(shuffle.shuffle_key(key), n, jnp.arange(n, dtype=jnp.int32))
    Z = jnp.concatenate([jnp.ones_like(y)[:, None], X, y[:, None]], axis=1).astype(dtype)[order]
    Z = jnp.pad(Z, ((0, (n_blocks + 1) * block - n), (0, 0)))
    Zb = Z.reshape(n_blocks + 1, block, Z.shape[1]).transpose(0, 2, 1)
    if moments_pay(X.shape[1], block):
        return BlockMoments(model.block_moments(Zb), _stats(X, y)), _stats(X_test, y_test)
    return BatchBlocks(Zb, _stats(X, y)), _stats(X_test, y_test)


_stats_jit = jax.jit(_stats)
_batch_jit = jax.jit(_batch_data, static_argnums=4)
_blocks_jit = jax.jit(_block_data, static_argnums=(5, 6))
