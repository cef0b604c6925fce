"""Many devices: results on 4 (forced host) CPU devices equal one device's, and the work really is
spread over them; a statistic over rows split across two processes equals one process's.

JAX fixes its device count when it starts, so each side runs in a subprocess of this file
(``python tests/test_devices.py fits OUT`` with ``XLA_FLAGS`` forcing the count; ``dist`` for a
``jax.distributed`` process), which saves its results for the test to compare.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

N, M = 4099, 5  # 4099 = 4·1024 + 3: the rows that do not split evenly take the other path
FULL = os.environ.get("CI_FULL") == "1"  # as conftest's: the cases marked full run
MEMBERS = 6  # not a multiple of 4: the launcher pads to 8 and drops the copies
ADAM = {"lr": 0.1, "b1": 0.9, "b2": 0.999, "eps": 1e-8}
LRS = [0.05, 0.02, 0.1, 0.01, 0.03, 0.07]


def _env(n_devices: int) -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n_devices}".strip()
    return env


def _spawn(*args: str, n_devices: int = 1) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        env=_env(n_devices),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(procs: list[subprocess.Popen], timeout: float = 120) -> None:
    """Wait for every process to succeed; on any failure or timeout, end them all."""
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, out
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def fits(tmp_path_factory) -> tuple[dict, dict]:
    """The same fits on 1 device and on 4, side by side (two subprocesses at once)."""
    tmp = tmp_path_factory.mktemp("devices")
    _finish([_spawn("fits", str(tmp / f"{d}.npz"), n_devices=d) for d in (1, 4)])
    return tuple(dict(np.load(tmp / f"{d}.npz")) for d in (1, 4))


def test_full_batch_rows_are_sharded_over_four_devices(fits):
    one, four = fits
    assert one["devices"] == 1 and four["devices"] == 4
    # the training rows' columns: 4 shards of N // 4 rows each, and the leftover 3 rows
    assert four["rows_shard_devices"] == 4
    assert tuple(four["rows_shard_shape"]) == (M, N // 4)
    assert four["rest_rows"] == N % 4
    assert four["all_reduce"] and not one["all_reduce"]  # the step's sums reduced across devices


@pytest.mark.parametrize(
    "case",
    [
        "rows_adam",
        "stats_sgd",
        pytest.param("rows_lbfgs", marks=pytest.mark.full),  # the workers compile it: 5 s more
    ],
)
def test_full_batch_fit_on_four_devices_equals_one(fits, case):
    one, four = fits
    np.testing.assert_allclose(four[f"{case}_theta"], one[f"{case}_theta"], rtol=1e-4, atol=1e-5)
    for curve in ("train_mse", "test_mse", "grad_norm"):
        a, b = four[f"{case}_{curve}"], one[f"{case}_{curve}"]
        assert a.shape == b.shape and len(a) > 1
        # near the optimum ‖∇‖ is float32 rounding of sums as large as its starting value
        atol = 1e-6 * np.abs(b).max() if curve == "grad_norm" else 1e-6
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=atol)
    assert four[f"{case}_epochs"] == one[f"{case}_epochs"]


def test_statistics_pass_on_four_devices_equals_one(fits):
    one, four = fits
    np.testing.assert_allclose(four["stats_gram"], one["stats_gram"], rtol=1e-12)
    np.testing.assert_allclose(four["stats_xty"], one["stats_xty"], rtol=1e-12)
    assert four["stats_n"] == one["stats_n"] == N  # no padding row counted


@pytest.mark.parametrize("case", ["shared", "stacked"])
def test_batched_members_spread_over_devices_and_equal_one_device(fits, case):
    one, four = fits
    assert four["batch_devices"] == 4 and one["batch_devices"] == 1
    assert four["batch_shard_members"] == 2  # 8 padded members, 2 a device
    a, b = four[f"batch_{case}_theta"], one[f"batch_{case}_theta"]
    assert a.shape == b.shape == (MEMBERS, M + 1)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(four[f"batch_{case}_mse"], one[f"batch_{case}_mse"], rtol=1e-4)
    assert len(set(np.round(a[:, 1], 4))) == MEMBERS  # the members differ: none a padding copy


CLI_RUNS = {
    "full batch from rows": ("train.batch_size=null", "train.sufficient_stats=false",
                             "data.n=70000", "train.epochs=20"),  # 56 000 training rows ≥ MIN_ROWS
    "vmap sweep": ("-m", "hydra/launcher=vmap", "optimizer.lr=0.001,0.003,0.01", "train.epochs=3"),
}  # fmt: skip


@pytest.mark.full
@pytest.mark.parametrize("run", list(CLI_RUNS))
def test_cli_on_four_devices_prints_what_one_device_prints(tmp_path, run):
    """The whole pipeline on sharded arrays: the same summary (θ table, each job's test MSE)."""
    args = [sys.executable, "-m", "lrexp.train", *CLI_RUNS[run], "tracking.enabled=false"]
    outs = []
    for d in (1, 4):
        proc = subprocess.run(args, env=_env(d), cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        outs.append([x for x in proc.stdout.splitlines() if "theta_" in x or "test MSE" in x])
    assert outs[0] and outs[0] == outs[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_sum_statistics_over_their_halves_of_the_rows(tmp_path):
    """``jax.distributed`` on CPU (gloo collectives): each process holds half the rows; the
    statistics pass psum'd over both equals one process's pass over all of them."""
    port = str(_free_port())
    _finish([_spawn("dist", str(i), port, str(tmp_path / f"{i}.npz")) for i in range(2)], 90)
    for i in range(2):
        got = np.load(tmp_path / f"{i}.npz")
        assert got["processes"] == 2 and got["devices"] == 2 and got["local_rows"] == N // 2
        np.testing.assert_allclose(got["gram"], got["gram_single"], rtol=1e-12)
        np.testing.assert_allclose(got["xty"], got["xty_single"], rtol=1e-12)
        assert got["n"] == 2 * (N // 2)


# --- the subprocesses -----------------------------------------------------------------------------
def _data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N + 500, M)).astype(np.float32)
    y = (3 + X @ np.arange(1, M + 1) + 0.1 * rng.standard_normal(N + 500)).astype(np.float32)
    return X[:N], y[:N], X[N:], y[N:]


def _run_fits(out: str) -> None:
    import jax
    import jax.numpy as jnp

    from lrexp.core import devices, fit, layouts

    devices.MIN_ROWS = 1000  # shard this small data set too
    arrays, res = _data(), {"devices": jax.device_count()}
    key = jax.random.key(0)
    sgd = fit.make_hyper({"lr": 1e-5}, {}, None, jnp.float32)
    cases = {
        "rows_adam": (fit.LoopSpec("adam", "constant", epochs=30, chunk=10), ADAM),
        "stats_sgd": (fit.LoopSpec("sgd", "constant", epochs=30, chunk=10, stats=True), None),
    }
    if FULL:  # a line search (its value_fn on the shards too): 5 s of compiling, at 4 devices
        lbfgs = fit.LoopSpec("lbfgs", "constant", (("memory_size", 5),), epochs=8, chunk=4)
        cases["rows_lbfgs"] = (lbfgs, {"lr": 1.0})
    for name, (spec, opt) in cases.items():
        h = sgd if opt is None else fit.make_hyper(opt, {}, None, jnp.float32)
        r = fit.fit(*arrays, spec=spec, hyper=h, key=key)
        res |= {f"{name}_theta": r.theta, f"{name}_epochs": r.epochs_run}
        curves = ("train_mse", "test_mse", "grad_norm")
        res |= {f"{name}_{c}": getattr(r.history, c) for c in curves}
    spec = cases["rows_adam"][0]
    train, test = layouts.training_data(*arrays, spec=spec, dtype=jnp.float32, shard=True)
    XT = getattr(train, "main", train)[0]
    res["rows_shard_devices"] = len(XT.sharding.device_set)
    res["rows_shard_shape"] = np.array(XT.addressable_shards[0].data.shape)
    res["rest_rows"] = train.rest.y.shape[0] if hasattr(train, "rest") else -1
    h = fit.make_hyper(ADAM, {}, None, jnp.float32)
    state, _ = fit._begin_jit(jnp.zeros(M + 1), train, test, h, spec=spec)
    hlo = fit.run_chunk.lower(state, train, test, h, key, spec=spec).compile().as_text()
    res["all_reduce"] = "all-reduce" in hlo
    stats = layouts.training_data(*arrays, spec=cases["stats_sgd"][0], dtype=jnp.float32)[0]
    res |= {"stats_gram": stats.gram, "stats_xty": stats.xty, "stats_n": stats.n}
    res |= _run_batches(arrays)
    np.savez(out, **res)


def _run_batches(arrays) -> dict:
    """A sweep's batch of members (mini-batches, Adam at several learning rates): on shared
    data, and on per-member copies (stacked); where its members' θ̃ live while it trains."""
    import jax
    import jax.numpy as jnp

    from lrexp.core import devices, fit, layouts

    spec = fit.LoopSpec("adam", "constant", batch_size=256, epochs=3, reduction="mean")
    hypers = [fit.make_hyper(ADAM | {"lr": lr}, {}, None, jnp.float32) for lr in LRS]
    keys = [jax.random.key(i) for i in range(MEMBERS)]
    res = {}
    for case, shared in (("shared", True), ("stacked", False)):
        data = arrays if shared else tuple(np.stack([a] * MEMBERS) for a in arrays)
        # per-member copies: full batches from each copy's statistics (a pass per member)
        loop = spec if shared else fit.LoopSpec("adam", "constant", epochs=3, stats=True)
        fits = fit.fit_batch(*data, spec=loop, hypers=hypers, keys=keys, shared_data=shared)
        res[f"batch_{case}_theta"] = np.stack([f.theta for f in fits])
        res[f"batch_{case}_mse"] = np.stack([f.history.test_mse for f in fits])
    # the program's state, as the launcher places its members (shared data)
    size = devices.members_padded(MEMBERS)
    hyper = jax.tree.map(lambda *v: jnp.stack(v), *hypers)
    hyper, theta = devices.pad_members((hyper, jnp.zeros((MEMBERS, M + 1))), size)
    if devices.count() > 1:
        hyper, theta = devices.spread((hyper, theta))
    train, test = layouts.training_data(*arrays, spec=spec, dtype=jnp.float32)
    state, _ = fit._batched(spec, None)[0](theta, train, test, hyper)
    res["batch_devices"] = len(state.theta.sharding.device_set)
    res["batch_shard_members"] = state.theta.addressable_shards[0].data.shape[0]
    return res


def _run_dist(pid: int, port: str, out: str) -> None:
    import jax

    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    from lrexp.core import devices, layouts

    X, y, _, _ = _data()
    half = N // 2
    mine = slice(pid * half, (pid + 1) * half)  # this process's rows only
    stats = devices.sum_shards(layouts._stats, devices.local_rows(X[mine], y[mine]))
    single = layouts._stats_jit(X[: 2 * half], y[: 2 * half])  # one process, every row
    local = [np.asarray(a.addressable_data(0)) for a in stats]  # replicated: this copy
    np.savez(
        out,
        processes=jax.process_count(),
        devices=jax.device_count(),
        local_rows=half,
        gram=local[0],
        xty=local[1],
        n=local[3],
        gram_single=single.gram,
        xty_single=single.xty,
    )
    jax.distributed.shutdown()


if __name__ == "__main__":
    if sys.argv[1] == "fits":
        _run_fits(sys.argv[2])
    else:
        _run_dist(int(sys.argv[2]), sys.argv[3], sys.argv[4])
