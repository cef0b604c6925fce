"""Many devices: rows, or a sweep's members, spread over every JAX device of a 1-D mesh.

Rows are cut into an equal share per device (``main``, sharded) and the few left over (``rest``,
fewer than the devices, on every device). A sum over rows is then the sum over ``main``, reduced
across devices by ``psum``, plus the sum over ``rest``: no padding rows, so no weights and nothing
to correct (a padded row of zeros still adds its intercept: TSSE would gain θ0² a row).

Full-batch training places :class:`model.Shards` (each part as :class:`model.Columns`) and lets
``jit`` partition the loop (GSPMD: a sum over sharded rows becomes an all-reduce). Statistics
passes run explicitly per device (``shard_map`` + ``psum``, :func:`sharded_sum`). A batched sweep
shards its member axis instead (:func:`spread`). On one device none of this runs: the programs
are those of the single-device loop.

Across processes (``jax.distributed.initialize`` first) each process passes its own rows to
:func:`local_rows`; :func:`sum_shards` then reduces over every process's devices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lrexp.core import model

AXIS = "devices"
# Full-batch training shards its rows from this many on (a module setting: tests lower it). On 4
# forced CPU devices a step's cross-device reductions cost ≈ 0.2 ms: 14× one device's step at
# 4096 rows × 10, about even at 16 384, less than the rows' pass from 65 536 on (a busy machine).
MIN_ROWS = 1 << 16


def count() -> int:
    """The JAX devices of every process (1: the single-device programs run)."""
    return jax.device_count()


@lru_cache(maxsize=4)
def _mesh(devices: tuple) -> Mesh:
    # Auto axes: jit partitions by propagating the inputs' shardings (GSPMD), as before
    # explicit sharding; the math in core/ needs no sharding annotations.
    return jax.make_mesh((len(devices),), (AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def mesh() -> Mesh:
    """A 1-D mesh (axis ``"devices"``) over every JAX device."""
    return _mesh(tuple(jax.devices()))


def sharding(ndim: int, axis: int | None = 0) -> NamedSharding:
    """Arrays of ``ndim`` dimensions split along ``axis`` over the mesh (None: on every device)."""
    spec = [None] * ndim
    if axis is not None:
        spec[axis] = AXIS
    return NamedSharding(mesh(), P(*spec))


def shard_rows(x: Any, axis: int = 0) -> tuple[jax.Array, jax.Array]:
    """``x`` cut along ``axis``: (main, rest), main an equal share per device (sharded), rest
    the fewer-than-devices rows left over (replicated; possibly none)."""
    x = jnp.asarray(x)
    n = x.shape[axis] - x.shape[axis] % count()
    main, rest = jnp.split(x, [n], axis=axis)
    main = jax.device_put(main, sharding(x.ndim, axis))
    return main, jax.device_put(rest, sharding(x.ndim, None))


def shard_columns(X: Any, y: Any, dtype: Any) -> model.Shards:
    """Rows (X, y) as :class:`model.Shards` of feature-major columns in ``dtype``."""
    X, y = jnp.asarray(X, dtype), jnp.asarray(y, dtype)
    (XT, XT_rest), (y, y_rest) = shard_rows(jnp.swapaxes(X, 0, 1), axis=1), shard_rows(y)
    return model.Shards(model.Columns(XT, y), model.Columns(XT_rest, y_rest))


def shards_rows(n_rows: int) -> bool:
    """Whether full-batch training on ``n_rows`` rows spreads them over the devices."""
    return count() > 1 and n_rows >= MIN_ROWS


@lru_cache(maxsize=32)
def _summed(fn: Callable, n_arrays: int, mesh: Mesh) -> Callable:
    def local(*arrays):  # one device's rows: its partial sum, then the sum over every device
        return jax.lax.psum(fn(*arrays), AXIS)

    specs = (P(AXIS),) * n_arrays
    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P()))


def sum_shards(fn: Callable, arrays: Sequence[jax.Array]) -> Any:
    """Σ over devices of ``fn`` of each device's rows of ``arrays`` (sharded along axis 0 over
    :func:`mesh`); ``fn`` maps rows to a pytree of sums (additive: f(A ∪ B) = f(A) + f(B))."""
    return _summed(fn, len(arrays), mesh())(*arrays)


def sharded_sum(fn: Callable, arrays: Sequence[Any]) -> Any:
    """``fn(*arrays)`` for an additive ``fn`` of rows (a statistics pass, an accumulation of
    sums), computed with the rows spread over every device; on one device, ``fn`` itself.

    The sums land on the first device: what uses them (steps on statistics, O(M²) each) then
    runs once, not once per device."""
    if count() == 1:
        return fn(*arrays)
    parts = [shard_rows(a) for a in arrays]
    total = sum_shards(fn, [main for main, _ in parts])
    if parts[0][1].shape[0] > 0:
        total = jax.tree.map(jnp.add, total, fn(*(rest for _, rest in parts)))
    return jax.device_put(total, jax.local_devices()[0])


def local_rows(*arrays: Any) -> list[jax.Array]:
    """Global arrays, sharded by rows over every process's devices, from this process's rows
    (each process passes as many, a multiple of its local devices), for :func:`sum_shards`."""
    out = []
    for a in arrays:
        a = np.asarray(a)
        shape = (a.shape[0] * jax.process_count(), *a.shape[1:])
        out.append(jax.make_array_from_process_local_data(sharding(a.ndim), a, shape))
    return out


# --- a batched sweep: its members spread over the devices -----------------------------------------
def members_padded(n_members: int) -> int:
    """Members a batch trains: ``n_members``, or on many devices the next multiple of them (the
    extra ones repeat the last member and are dropped)."""
    d = count()
    return n_members if d == 1 else -(-n_members // d) * d


def pad_members(tree: Any, n: int) -> Any:
    """Each leaf's leading (member) axis padded to ``n`` with copies of its last member."""

    def pad(a):
        a = jnp.asarray(a)
        return jnp.concatenate([a, jnp.repeat(a[-1:], n - a.shape[0], axis=0)])

    return jax.tree.map(pad, tree)


def spread(tree: Any, members: bool = True) -> Any:
    """Place a pytree for a batched program: leaves split along their leading (member) axis over
    the devices, or (``members=False``, data the members share) a copy on every device."""
    return jax.tree.map(
        lambda a: jax.device_put(a, sharding(jnp.ndim(a), 0 if members else None)), tree
    )
