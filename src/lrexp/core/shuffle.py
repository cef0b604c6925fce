"""The per-epoch shuffle: a keyed pseudo-random bijection of the rows, and mini-batches from it.

No permutation is materialized: position p of an epoch's order is row π(p), where π is a keyed
pseudo-random bijection of [0, n) computed on the fly, so a step derives its batch's rows in
O(batch) and the loop only needs (epoch, batch) to know where it is.

π is a Feistel network over the mixed-radix domain [0, a·b), a·b ≥ n, a and b ≈ √n: with
x = L·b + R (L < a, R < b), a round maps x to R·a + (L + F_k(R)) mod a, a bijection whatever
F_k is; the next round swaps the roles of a and b. Values landing in [n, a·b) (a fraction below
1/b) are mapped again until they fall in [0, n) ("cycle walking"), which keeps π a bijection.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

SHUFFLE_ROUNDS = 4  # Luby–Rackoff: four rounds of a pseudo-random F give a pseudo-random π


def shuffle_key(key: jax.Array) -> jax.Array:
    """The round keys of one epoch's order, drawn from ``key`` (e.g. ``fold_in(key, epoch)``)."""
    return jax.random.bits(key, (SHUFFLE_ROUNDS,), jnp.uint32)


def _radices(n: int) -> tuple[int, int]:
    """a, b with a·b ≥ n and a·b − n < a ≈ √n: the Feistel domain barely exceeds [0, n).

    Both are at least 16: a few rounds over tiny digits leave the order measurably non-uniform
    (rows of n = 10 favoured some positions), and walking out of a 256-value domain costs little
    at such sizes. Row indices are int32, so n < 2³¹ and both radices are below 2¹⁶.
    """
    a = max(16, math.isqrt(n - 1) + 1)
    return a, max(16, -(-n // a))


def _hash(x: jax.Array) -> jax.Array:
    """A bijective 32-bit mixer ("lowbias32", C. Wellons): every input bit flips half the bits."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _below(h: jax.Array, a: int) -> jax.Array:
    """⌊h·a / 2³²⌋ ∈ [0, a) for uint32 h and a < 2¹⁶: h scaled into [0, a) without a division
    (Lemire's reduction), in 32-bit halves so that it needs no uint64."""
    return ((h >> 16) * a + (((h & 0xFFFF) * a) >> 16)) >> 16


def _feistel(x: jax.Array, round_keys: jax.Array, a: int, b: int) -> jax.Array:
    """One pass of the keyed bijection of [0, a·b) (uint32 in, uint32 out)."""
    left, right = x // b, x % b  # the rounds carry the two digits apart: no division in them
    for r in range(SHUFFLE_ROUNDS):
        mixed = left + _below(_hash(right ^ round_keys[r]), a)  # < 2a: one subtraction reduces it
        left, right = right, jnp.where(mixed >= a, mixed - a, mixed)
        a, b = b, a
    return left * b + right


def shuffled_rows(round_keys: jax.Array, n: int, positions: jax.Array) -> jax.Array:
    """The rows at ``positions`` (each in [0, n)) of the epoch order keyed by ``round_keys``."""
    a, b = _radices(n)
    x = positions.astype(jnp.uint32)
    if a * b == n:
        return _feistel(x, round_keys, a, b).astype(jnp.int32)

    def walk(carry):  # map the positions, then again any value that fell in [n, a·b)
        x, first = carry
        return jnp.where(first | (x >= n), _feistel(x, round_keys, a, b), x), False

    # one copy of the network in the program (it compiles faster): a do-while loop
    x, _ = jax.lax.while_loop(lambda c: c[1] | jnp.any(c[0] >= n), walk, (x, True))
    return x.astype(jnp.int32)


def batch_rows(
    round_keys: jax.Array, n: int, batch_size: int, batch: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Row indices of mini-batch ``batch`` of an epoch, with a 0/1 mask for padding.

    The epoch's last batch is padded with row 0 at weight 0, so that every batch has the same
    shape and the epoch still sees every row exactly once.
    """
    positions = batch * batch_size + jnp.arange(batch_size, dtype=jnp.int32)
    mask = positions < n
    rows = shuffled_rows(round_keys, n, jnp.where(mask, positions, 0))
    return jnp.where(mask, rows, 0), mask


def batch_blocks(
    round_keys: jax.Array, n_blocks: int, blocks_per_batch: int, batch: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Block indices of mini-batch ``batch`` of an epoch over blocks of rows, and their 0/1 mask:
    :func:`batch_rows` with blocks for rows (the epoch visits every block once)."""
    return batch_rows(round_keys, n_blocks, blocks_per_batch, batch)


def epoch_batches(key: jax.Array, n: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """All of one epoch's mini-batches as (batches, batch_size) row indices, and their mask."""
    n_batches = -(-n // batch_size)
    idx, mask = batch_rows(shuffle_key(key), n, n_batches * batch_size, jnp.zeros((), jnp.int32))
    return idx.reshape(n_batches, batch_size), mask.reshape(n_batches, batch_size)
