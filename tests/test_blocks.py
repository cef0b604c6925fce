"""Mini-batches of blocks of rows (``train.shuffle_block``): the same SGD as row by row, on batches
made of whole blocks of a once-shuffled layout, whose order is reshuffled every epoch.

The oracle is NumPy: the batches rebuilt from ``data``'s index functions, and momentum SGD on them
in float64, step by step.
"""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import typed_config

from lrexp import config
from lrexp.config import ConfigError
from lrexp.core import data, fit, layouts, shuffle

N, N_TRAIN = 400, 320
WEIGHTS = [2.0, -1.5, 3.0, -0.5, 0.3]
MOMENTUM = {"lr": 0.002, "momentum": 0.9}


@pytest.fixture(scope="module")
def split():
    ds = data.make_linear(jax.random.key(0), n=N, bias=3.0, weights=WEIGHTS, noise=0.1)
    st = data.Standardizer.fit(ds.X[:N_TRAIN], ds.feature_names)
    X, X_test = st.apply(ds.X[:N_TRAIN]), st.apply(ds.X[N_TRAIN:])
    return X, ds.y[:N_TRAIN], X_test, ds.y[N_TRAIN:]


def spec(batch: int, block: int, epochs: int = 3) -> fit.LoopSpec:
    return fit.LoopSpec("momentum", "constant", batch_size=batch, epochs=epochs, block=block)


def fit_blocks(split, s: fit.LoopSpec, key=0, floats=MOMENTUM, dtype=jnp.float64):
    hyper = fit.make_hyper(floats, {}, None, dtype)
    return fit.fit(*split, spec=s, hyper=hyper, key=jax.random.key(key), dtype=dtype)


def numpy_batches(n: int, batch: int, block: int, key, epochs: int) -> list[list[np.ndarray]]:
    """Each epoch's batches as arrays of row indices, rebuilt from ``data``'s functions."""
    layout = np.asarray(
        shuffle.shuffled_rows(
            shuffle.shuffle_key(jax.random.fold_in(key, layouts.LAYOUT)),
            n,
            jnp.arange(n, dtype=jnp.int32),
        )
    )
    n_blocks = -(-n // block)
    slots = np.full(n_blocks * block, -1)
    slots[:n] = layout  # position i of the layout holds row layout[i]; -1: padding
    steps = -(-n // batch)
    out = []
    for e in range(epochs):
        order = shuffle.shuffle_key(jax.random.fold_in(key, e))
        every = jax.jit(jax.vmap(shuffle.batch_blocks, in_axes=(None, None, None, 0)),
                        static_argnums=(1, 2))  # fmt: skip
        # every batch of the epoch in one call
        all_ids, all_masks = every(order, n_blocks, batch // block, jnp.arange(steps))
        epoch = []
        for ids, mask in zip(np.asarray(all_ids), np.asarray(all_masks), strict=True):
            rows = np.concatenate(
                [slots[i * block : (i + 1) * block] for i, m in zip(ids, mask, strict=True) if m]
            )
            epoch.append(rows[rows >= 0])
        out.append(epoch)
    return out


# Blocks of 4-8 rows train from their rows; of 12-32 (≥ 2(M+1), M = 5), from their moments.
@pytest.mark.parametrize(("batch", "block"), [(16, 8), (24, 12), (20, 4), (48, 24), (64, 32)])
def test_block_shuffled_momentum_sgd_is_numpy_sgd_on_the_same_batches(split, batch, block):
    X, y, *_ = split
    layout = layouts.BlockMoments if block >= 2 * (X.shape[1] + 1) else layouts.BatchBlocks
    train, _ = layouts.training_data(*split, spec=spec(batch, block), dtype=jnp.float64,
                                     key=jax.random.key(0))  # fmt: skip
    assert isinstance(train, layout)
    result = fit_blocks(split, spec(batch, block))
    key = jax.random.key(0)
    theta, trace = np.zeros(X.shape[1] + 1), np.zeros(X.shape[1] + 1)
    design = np.column_stack([np.ones(len(X)), X])
    for epoch in numpy_batches(len(X), batch, block, key, 3):
        assert np.array_equal(np.sort(np.concatenate(epoch)), np.arange(len(X)))  # each row once
        for rows in epoch:
            A = design[rows]
            grad = 2 * A.T @ (A @ theta - y[rows])
            trace = grad + MOMENTUM["momentum"] * trace  # optax.sgd(momentum): a trace of g
            theta = theta - MOMENTUM["lr"] * trace
    assert result.steps == 3 * -(-len(X) // batch)
    np.testing.assert_allclose(result.theta, theta, rtol=1e-10, atol=1e-12)


def test_a_batch_is_whole_blocks_of_the_layout_and_their_order_changes_every_epoch(split):
    n, batch, block = N_TRAIN, 16, 8
    epochs = numpy_batches(n, batch, block, jax.random.key(0), 3)
    first = [frozenset(r) for r in epochs[0]]
    # every batch is two blocks of 8; the same 40 blocks every epoch, paired and ordered anew
    blocks = {frozenset(r[:block]) for e in epochs for r in e} | {
        frozenset(r[block:]) for e in epochs for r in e
    }
    assert len(blocks) == n // block
    assert [frozenset(r) for r in epochs[1]] != first
    assert {frozenset(r) for r in epochs[1]} != set(first)


def test_block_shuffled_sgd_reaches_the_least_squares_optimum(split):
    X, y, *_ = split
    cosine = replace(spec(20, 4, epochs=60), schedule="cosine",
                     schedule_static=(("decay_steps", None),))  # fmt: skip
    hyper = fit.make_hyper(MOMENTUM, {"alpha": 0.0}, None, jnp.float64)
    result = fit.fit(*split, spec=cosine, hyper=hyper, key=jax.random.key(1), dtype=jnp.float64)
    star, *_ = np.linalg.lstsq(np.column_stack([np.ones(len(X)), X]), y, rcond=None)
    np.testing.assert_allclose(result.theta, star, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(("batch", "block"), [(24, 12), (48, 24)])
def test_split_epochs_of_blocks_train_exactly_as_whole_epochs(split, batch, block):
    whole = fit_blocks(split, spec(batch, block))
    parts = fit_blocks(split, replace(spec(batch, block), split=4))
    np.testing.assert_allclose(parts.theta, whole.theta, rtol=1e-12)
    np.testing.assert_allclose(parts.history.train_mse, whole.history.train_mse, rtol=1e-12)


def test_float32_sgd_from_moments_is_as_close_to_float64_as_from_the_rows(split):
    """The moments' terms nearly cancel near the optimum (Gθ̃ ≈ X̃ᵀy), yet float32 SGD from them
    ends as close to its float64 run as float32 SGD from the rows ends to its own."""
    cosine = replace(spec(48, 24, epochs=40), schedule="cosine",
                     schedule_static=(("decay_steps", None),))  # fmt: skip
    gaps = {}
    for name, s in (("moments", cosine), ("rows", replace(cosine, block=8))):
        ends = [
            fit.fit(
                *split,
                spec=s,
                key=jax.random.key(2),
                dtype=dtype,
                hyper=fit.make_hyper(MOMENTUM, {"alpha": 0.0}, None, dtype),
            )
            for dtype in (jnp.float32, jnp.float64)
        ]
        assert ends[1].history.train_mse[-1] < 0.02  # trained: noise 0.1 → MSE ≈ 0.01
        gaps[name] = np.max(np.abs(ends[0].theta - ends[1].theta))
    assert gaps["rows"] < 5e-6  # float32 resolution of θ̃ ≈ 3: 2.4e-7
    assert gaps["moments"] < 4 * gaps["rows"] + 1e-7, gaps


@pytest.mark.parametrize(("batch", "block"), [(16, 8), (48, 24)])
def test_batched_members_with_one_key_match_their_single_fits_in_blocks(split, batch, block):
    s = spec(batch, block)
    hypers = [fit.make_hyper({"lr": lr, "momentum": 0.9}, {}, None, jnp.float64)
              for lr in (0.001, 0.002)]  # fmt: skip
    keys = [jax.random.key(3)] * 2  # a sweep shares data only between members of one seed
    batched = fit.fit_batch(*split, spec=s, hypers=hypers, keys=keys, dtype=jnp.float64)
    for b, h in zip(batched, hypers, strict=True):
        one = fit.fit(*split, spec=s, hyper=h, key=keys[0], dtype=jnp.float64)
        np.testing.assert_allclose(b.theta, one.theta, rtol=1e-10)


def test_members_with_their_own_data_and_keys_match_their_single_fits_from_moments(split):
    """Unshared (stacked) data: each member lays out its blocks, and their moments, by its key."""
    s, keys = spec(48, 24), [jax.random.key(4), jax.random.key(5)]
    hyper = fit.make_hyper(MOMENTUM, {}, None, jnp.float64)
    stacked = [np.stack([a, a]) for a in split]
    batched = fit.fit_batch(*stacked, spec=s, hypers=[hyper] * 2, keys=keys, dtype=jnp.float64,
                            shared_data=False)  # fmt: skip
    ones = [fit.fit(*split, spec=s, hyper=hyper, key=k, dtype=jnp.float64) for k in keys]
    assert not np.allclose(ones[0].theta, ones[1].theta)  # the keys make different batches
    for b, one in zip(batched, ones, strict=True):
        np.testing.assert_allclose(b.theta, one.theta, rtol=1e-10)


@pytest.mark.parametrize(
    ("overrides", "allowed"),
    [
        (["train.shuffle_block=3"], "must divide train.batch_size (10)"),
        (["train.batch_size=null", "train.shuffle_block=2"], "must divide train.batch_size (null"),
        (["train.shuffle_block=0"], "must be an integer >= 1"),
    ],
)
def test_a_block_that_does_not_divide_the_batch_is_refused_naming_the_key(
    overrides, allowed, tmp_path
):
    with pytest.raises(ConfigError, match=r"train\.shuffle_block") as e:
        config.validate(typed_config(*overrides), tmp_path)
    assert allowed in str(e.value)
