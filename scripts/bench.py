"""Benchmark lrexp against baselines measured in the same run, and print each ratio.

    python scripts/bench.py --quick               # CI smoke test: tiny sizes, no timing checks
    python scripts/bench.py --markdown bench.md   # full sizes; also write the results table
    python scripts/bench.py --only sweep          # some sections (repeat --only; see SECTIONS)
    python scripts/bench.py --only load           # reading CSV and Parquet files, end to end
    python scripts/bench.py --only devices        # 1 vs 4 forced host devices (full mode only)
    python scripts/bench.py --only stream         # a streamed pass: peak RSS as rows grow, speed

Timings are medians of repeats after a warm-up call; compilation is reported on its own line.
Ratios are lrexp / baseline, both measured in this run. torch and scikit-learn come from the
optional ``bench`` extra; without them, the rows that need them say so and are skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import io
import json
import logging
import os
import pkgutil
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import astuple, dataclass, replace
from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

import lrexp
from lrexp import config, pipeline
from lrexp.core import data, fit, layouts, model

SKIP = "skipped: pip install '.[bench]'"


@dataclass(frozen=True)
class Sizes:
    n: int = 10**6  # rows of the full-batch data (sections 1, 4, 7)
    m: int = 10  # features
    steps: int = 1000  # full-batch steps
    row_steps: int = 100  # steps of the plain data-pass path
    n_mini: int = 10**7  # rows of the mini-batch data (section 2)
    mini_epochs: int = 2
    tutorial_epochs: int = 18
    grid: int = 8  # the sweep is grid × grid (learning rate × momentum)
    repeats: int = 15  # in-process timings (milliseconds each)
    mid: int = 5  # the torch loop, tracked runs (seconds each)
    slow: int = 3  # subprocesses, mini-batch epochs (seconds to a minute each)
    warm: int = 1  # warm-up calls before subprocess timings
    full: bool = True  # also the rows for scale and the signal's latency (subprocesses)
    load_rows: int = 10**6  # rows of the files read (section 8), 11 float64 columns
    stream_rows: tuple[int, ...] = (10**6, 10**7)  # rows of the streamed files (section 9)


FULL = Sizes()
QUICK = Sizes(n=10**4, steps=100, row_steps=10, n_mini=10**5, mini_epochs=2, tutorial_epochs=2,
              grid=2, repeats=2, mid=1, slow=1, warm=0, full=False, load_rows=10**4,
              stream_rows=(10**4, 10**5))  # fmt: skip


@dataclass(frozen=True)
class Stat:
    median: float
    lo: float
    hi: float

    @staticmethod
    def of(times: list[float]) -> Stat:
        return Stat(statistics.median(times), min(times), max(times))


@dataclass(frozen=True)
class Row:
    section: str
    what: str
    lrexp: Stat | None = None
    baseline_name: str = ""
    baseline: Stat | None = None
    ratio: str = ""  # lrexp / baseline unless it says otherwise
    target: str = ""
    met: bool | None = None  # None: no target


def race(n: int, *fns: Callable[[], object], warmup: int = 1) -> list[tuple[Stat, float]]:
    """Time each function n times after ``warmup`` calls, taking turns so that they share the
    machine's noise; return each one's stats and the time of its first (compiling) call."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(warmup + n):
        for fn, ts in zip(fns, times, strict=True):
            time.sleep(0.1)  # BLAS threads spin ~0.1 s after a call, slowing whatever comes next
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return [(Stat.of(ts[warmup:]), ts[0]) for ts in times]


def repeat(fn: Callable[[], object], n: int, warmup: int = 1) -> tuple[Stat, float]:
    return race(n, fn, warmup=warmup)[0]


def info(section: str, what: str, seconds: float) -> Row:
    return Row(section, what, Stat(seconds, seconds, seconds))


def compare(section, what, ours: Stat, name, base: Stat, limit: float | None, target="") -> Row:
    """A row whose ratio is lrexp / baseline, met when the ratio is at most ``limit``."""
    r = ours.median / base.median
    met = None if limit is None else r <= limit
    return Row(section, what, ours, name, base, f"{r:.3g}×", target or f"≤ {limit:g}×", met)


@functools.cache
def regression_data(n: int, m: int, seed: int = 0):
    """float32 rows of y = 3 + X·w + ε (X, ε standard normal), and up to 1000 test rows."""
    rng = np.random.default_rng(seed)
    n_test = min(1000, max(10, n // 10))
    X = rng.standard_normal((n + n_test, m), dtype=np.float32)
    y = (3.0 + X @ rng.standard_normal(m) + rng.standard_normal(n + n_test)).astype(np.float32)
    return X[:n], y[:n], X[n:], y[n:]


def hyper(optimizer: str, lr: float, **knobs: float) -> fit.Hyper:
    floats = {"adam": {"b1": 0.9, "b2": 0.999, "eps": 1e-8}}.get(optimizer, {})
    return fit.make_hyper({"lr": lr, **floats, **knobs}, {}, None, jnp.float32)


def run_fit(arrays, optimizer: str, h: fit.Hyper, epochs: int, *, stats=True, batch=None):
    """``fit.fit`` with the loop's chunking as ``pipeline.loop_spec`` would choose it."""
    spec = fit.LoopSpec(optimizer, "constant", batch_size=batch, epochs=epochs, stats=stats)
    spec = fit.chunked(spec, *arrays[0].shape)
    return fit.fit(*arrays, spec=spec, hyper=h, key=jax.random.key(0))


def normal_equations(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """θ̃* from one pass over float32 rows (X̃ᵀX̃, X̃ᵀy by BLAS), solved in float64."""
    s, G, b = X.sum(0, dtype=np.float64), (X.T @ X).astype(np.float64), X.T @ y
    gram = np.block([[np.array([[float(len(X))]]), s[None]], [s[:, None], G]])
    return np.linalg.solve(gram, np.concatenate([[y.sum(dtype=np.float64)], b]))


def one_pass(X: np.ndarray) -> Callable[[], object]:
    """One read of X: a jitted column sum (reads X once, writes M values)."""
    Xd, col_sum = jnp.asarray(X), jax.jit(lambda a: jnp.sum(a, axis=0))
    return lambda: col_sum(Xd).block_until_ready()


def steps_only(arrays, optimizer: str, h: fit.Hyper, steps: int) -> Callable[[], object]:
    """The compiled loop alone: ``steps`` full-batch steps on ready statistics, one chunk."""
    spec = fit.LoopSpec(optimizer, "constant", epochs=steps, chunk=steps, stats=True)
    train_s, test_s = layouts.training_data(*arrays, spec=spec, dtype=jnp.float32)
    theta = jnp.zeros(arrays[0].shape[1] + 1, jnp.float32)
    state, _ = fit._begin_jit(theta, train_s, test_s, h, spec=spec)
    key = jax.random.key(0)
    return lambda: jax.block_until_ready(fit.run_chunk(state, train_s, test_s, h, key, spec=spec))


# --- 1. full-batch training --------------------------------------------------------------------
def full_batch(sz: Sizes) -> list[Row]:
    arrays = regression_data(sz.n, sz.m)
    X, y = arrays[:2]
    gd, adam = hyper("sgd", 0.5 / sz.n), hyper("adam", 0.05)  # GD: stable below 1/λmax ≈ 1/n
    stats = layouts._stats_jit  # the blocked float64 pass training uses
    (base, _), (t_stats, _), (t_gd, c_gd), (t_adam, c_adam), (s_gd, _), (s_adam, _) = race(
        sz.repeats,
        lambda: normal_equations(X, y),
        lambda: jax.block_until_ready(stats(X, y)),
        lambda: run_fit(arrays, "sgd", gd, sz.steps),
        lambda: run_fit(arrays, "adam", adam, sz.steps),
        steps_only(arrays, "sgd", gd, sz.steps),
        steps_only(arrays, "adam", adam, sz.steps),
    )
    what = f"{{}}: {sz.steps} steps, n={sz.n:.0e}, M={sz.m}, from statistics"
    ne = "normal equations (numpy)"
    rows = [
        compare("1", what.format("GD"), t_gd, ne, base, 3),
        compare("1", what.format("Adam"), t_adam, ne, base, 3),
        info("1", "of each: the float64 statistics pass over X", t_stats.median),
        info("1", "GD: one step (a compiled chunk of all steps / steps)", s_gd.median / sz.steps),
        info("1", "Adam: one step (the same)", s_adam.median / sz.steps),
        info("1", "compilation, GD (first call − median)", c_gd - t_gd.median),
        info("1", "compilation, Adam (first call − median)", c_adam - t_adam.median),
        check_stats(X, y, run_fit(arrays, "sgd", gd, sz.steps).theta),
    ]
    # The plain data-pass path (full batch from the rows), for losses without statistics.
    (ours, _), (x_pass, _) = race(
        sz.repeats, lambda: run_fit(arrays, "sgd", gd, sz.row_steps, stats=False), one_pass(X)
    )
    step = Stat(*(t / sz.row_steps for t in (ours.median, ours.lo, ours.hi)))
    share = 2 * x_pass.median / step.median  # a step needs to read X twice: forward, gradient
    bandwidth = f"{share:.0%} of {X.nbytes / x_pass.median / 1e9:.1f} GB/s"
    rows.append(Row("1", "plain data path: one full-batch step from the rows (2 reads of X)",
                    step, "one pass over X", x_pass, bandwidth, "≥ 50%", share >= 0.5))  # fmt: skip
    return rows


def check_stats(X: np.ndarray, y: np.ndarray, trained: np.ndarray) -> Row:
    """TSSE and gradient from the statistics against a direct float64 pass over the rows."""
    stats = layouts._stats_jit(X, y)  # as training computes them
    X64, y64 = X.astype(np.float64), y.astype(np.float64)
    worst, rng = 0.0, np.random.default_rng(1)
    for theta in (np.zeros(X.shape[1] + 1), rng.standard_normal(X.shape[1] + 1), trained):
        theta = np.asarray(theta, np.float64)
        r = theta[0] + X64 @ theta[1:] - y64
        tsse, grad = r @ r, 2.0 * np.concatenate([[r.sum()], X64.T @ r])
        value, g = jax.value_and_grad(model.tsse_stats)(jnp.asarray(theta), stats)
        g_err = np.max(np.abs(np.asarray(g) - grad)) / np.max(np.abs(grad))
        worst = max(worst, abs(float(value) - tsse) / tsse, g_err)
    what = "statistics vs rows in float64: max rel. error of TSSE, gradient (3 θ)"
    return Row("1", what, ratio=f"{worst:.2g}", target="≤ 1e-6", met=worst <= 1e-6)


# --- 2. mini-batch epochs ----------------------------------------------------------------------
def epoch_loop(
    arrays, h: fit.Hyper, batch: int, block: int = 1
) -> tuple[Callable[[], object], fit.LoopSpec]:
    """The compiled loop alone: one epoch's compiled calls, as ``fit.chunked`` cuts the loop (a
    call of ``spec.chunk`` epochs, or ``spec.split`` calls of one); rows shuffled in ``block``s."""
    spec = fit.chunked(fit.LoopSpec("sgd", "constant", batch_size=batch, epochs=10**6,
                                    block=block), *arrays[0].shape)  # fmt: skip
    key = jax.random.key(0)
    train_d, test_d = layouts.training_data(*arrays, spec=spec, dtype=jnp.float32, key=key)
    state, _ = fit._begin_jit(jnp.zeros(arrays[0].shape[1] + 1, jnp.float32), train_d, test_d, h,
                              spec=spec)  # fmt: skip

    def epoch():
        s = state
        for _ in range(spec.split):
            s = fit.run_chunk(s, train_d, test_d, h, key, spec=spec)[0]
        return jax.block_until_ready(s)

    return epoch, spec


BLOCK = 64  # rows per block for the block-shuffled epoch


def minibatch(sz: Sizes) -> list[Row]:
    arrays = regression_data(sz.n_mini, sz.m)
    n, h, e, batch = sz.n_mini, hyper("sgd", 1e-4), sz.mini_epochs, 1024
    epoch, spec = epoch_loop(arrays, h, batch)
    in_blocks, block_spec = epoch_loop(arrays, h, batch, block=BLOCK)
    (ours, first), (x_pass, _), (whole, _), (blocks, _) = race(
        sz.mid, epoch, one_pass(arrays[0]),
        lambda: run_fit(arrays, "sgd", h, e, stats=False, batch=batch), in_blocks,
    )  # fmt: skip

    def per_epoch(t: Stat, s: fit.LoopSpec) -> Stat:
        return Stat(*(v / s.chunk for v in (t.median, t.lo, t.hi)))  # chunk epochs a call

    def cut(s: fit.LoopSpec) -> str:
        if s.split > 1:
            return f"{s.split} compiled calls"
        return f"{s.chunk} epoch{'s' if s.chunk > 1 else ''} a call"

    ours = per_epoch(ours, spec)
    what = f"one epoch: n={n:.0e}, M={sz.m}, batch {batch}, shuffled row by row ({cut(spec)})"
    rows = [compare("2", what, ours, "one pass over X", x_pass, 6)]
    what = (
        f"… shuffled in blocks of {BLOCK} rows (`train.shuffle_block={BLOCK}`; from the blocks' "
        f"moments, {cut(block_spec)})"
    )
    rows.append(compare("2", what, per_epoch(blocks, block_spec), "one pass over X", x_pass, 6))
    fit_epoch = Stat(*(t / e for t in (whole.median, whole.lo, whole.hi)))
    rows.append(info("2", f"`fit.fit` of {e} epochs / {e} (setup included)", fit_epoch.median))
    Xd = jnp.asarray(arrays[0])

    def setup(s: fit.LoopSpec = spec):
        key = jax.random.key(0)
        return jax.block_until_ready(layouts.training_data(*arrays, spec=s, dtype=jnp.float32,
                                                           key=key))  # fmt: skip

    shuffle = jax.jit(data.epoch_batches, static_argnums=(1, 2))
    perm = shuffle(jax.random.key(0), n, n)[0][0]
    gather = jax.jit(lambda X, i: X[i])
    train_d, test_d = layouts.training_data(
        *arrays, spec=spec, dtype=jnp.float32, key=jax.random.key(0)
    )
    evaluate, theta = jax.jit(fit._evaluate), jnp.zeros(sz.m + 1, jnp.float32)
    (t_setup, _), (t_blocks, _), (t_shuffle, _), (t_gather, _), (t_eval, _) = race(
        sz.slow, setup, lambda: setup(block_spec),
        lambda: jax.block_until_ready(shuffle(jax.random.key(0), n, batch)),
        lambda: jax.block_until_ready(gather(Xd, perm)),
        lambda: jax.block_until_ready(evaluate(theta, train_d, test_d)),
    )  # fmt: skip
    rows += [
        info("2", "per fit: setup ([X, y] in float32 and float64 statistics)", t_setup.median),
        info(
            "2", f"per fit: setup in blocks of {BLOCK} (their layout and moments)", t_blocks.median
        ),
        info("2", "of each epoch: its order, all at once (`data.epoch_batches`)", t_shuffle.median),
        info("2", "of each epoch: gathering X in that order, alone (`X[perm]`)", t_gather.median),
        info("2", "of each epoch: the evaluation (from the statistics)", t_eval.median),
        info("2", "compilation (first call − median)", first - ours.median * spec.chunk),
    ]
    return rows


# --- 3. the tutorial protocol against its PyTorch loop -------------------------------------------
def compose(*overrides: str) -> config.Config:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(version_base="1.3", config_module="lrexp.conf"):
        return config.to_object(hydra_compose("config", overrides=list(overrides)))


def torch_tutorial(p: pipeline.Prepared, epochs: int) -> float:
    """The tutorial's loop: one Python call per sample, gradients summed over 10, momentum SGD."""
    import torch

    torch.manual_seed(0)
    test_mse = []
    for i in range(len(p.parts)):
        Xtr, ytr, Xte, yte = (torch.tensor(a, dtype=torch.float32) for a in p.arrays(i))
        net = torch.nn.Linear(Xtr.shape[1], 1)
        for w in net.parameters():
            torch.nn.init.zeros_(w)  # θ̃ from zeros, as lrexp starts
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        for _ in range(epochs):
            order = torch.randperm(len(Xtr)).tolist()
            for start in range(0, len(order), 10):
                opt.zero_grad()
                for j in order[start : start + 10]:
                    loss = (net(Xtr[j]) - ytr[j]).pow(2).sum()  # the batch TSSE, sample by sample
                    loss.backward()
                opt.step()
            with torch.no_grad():  # each epoch's train and test MSE, as lrexp records them
                float(((net(Xtr).squeeze(1) - ytr) ** 2).mean())
                mse = float(((net(Xte).squeeze(1) - yte) ** 2).mean())
        test_mse.append(mse)
    return float(np.mean(test_mse))


def tutorial(sz: Sizes) -> list[Row]:
    e = sz.tutorial_epochs  # tol off in both: both run every epoch, the same 6 × e × 30 steps
    # the PyTorch loop's protocol: independent folds from zeros, lr 0.01 on the batch TSSE of the
    # raw target, no per-step log
    p = pipeline.prepare(compose("experiment=tutorial", "tracking.enabled=false", "train.tol=null",
                              f"train.epochs={e}", "train.cv=independent", "optimizer.lr=0.01",
                              "tracking.log_steps=false", "train.reduction=sum",
                              "data.standardize_target=false"))  # fmt: skip
    lrexp_folds = functools.partial(pipeline.train_folds, p, progress=False)
    what = f"tutorial protocol: 6 folds × {e} epochs × batches of 10 (compute)"
    try:
        import torch
    except ImportError:
        ours, first = repeat(lrexp_folds, sz.repeats)
        compiled = info("3", "compilation (first call − median)", first - ours.median)
        return [Row("3", what, ours, "PyTorch loop", ratio=SKIP, target="≥ 100× faster"), compiled]
    torch.set_num_threads(1)  # per-sample calls: threads only add overhead
    (ours, first), (base, _) = race(sz.mid, lrexp_folds, lambda: torch_tutorial(p, e))
    compiled = info("3", "compilation (first call − median)", first - ours.median)
    fits = lrexp_folds()
    check = np.mean([f.history.test_mse[-1] for f in fits]), torch_tutorial(p, e)
    speedup = base.median / ours.median
    return [
        Row("3", what, ours, "PyTorch loop, per-sample calls", base, f"{speedup:.0f}× faster",
            "≥ 100× faster", speedup >= 100),
        Row("3", "check: mean test MSE of the folds, lrexp {:.4g}, PyTorch {:.4g}".format(*check)),
        compiled,
    ]  # fmt: skip


# --- 4. sweeps ---------------------------------------------------------------------------------
def sweep(sz: Sizes, tmp: Path) -> list[Row]:
    arrays = regression_data(sz.n, sz.m)
    lrs = np.geomspace(0.05, 0.5, sz.grid) / sz.n  # stable on X̃ᵀX̃ ≈ n·I for any momentum < 1
    mus = np.linspace(0.0, 0.9, sz.grid)
    hypers = [hyper("momentum", float(lr), momentum=float(mu)) for lr in lrs for mu in mus]
    keys = [jax.random.key(i) for i in range(len(hypers))]
    spec = fit.LoopSpec("momentum", "constant", epochs=sz.steps, chunk=sz.steps, stats=True)
    (one, _), (many, _) = race(
        sz.repeats,
        lambda: fit.fit(*arrays, spec=spec, hyper=hypers[0], key=keys[0]),
        lambda: fit.fit_batch(*arrays, spec=spec, hypers=hypers, keys=keys),
    )
    what = f"{len(hypers)} configs (lr × momentum) in one fit_batch, {sz.steps} steps"
    rows = [compare("4", what, many, "one config (fit)", one, 3)]
    lrs, mus = np.geomspace(0.001, 0.01, sz.grid), np.linspace(0.0, 0.9, sz.grid)
    multirun = ["-m", "hydra/launcher=vmap", "optimizer.lr=" + ",".join(f"{v:.3g}" for v in lrs),
                "optimizer.momentum=" + ",".join(f"{v:.3g}" for v in mus)]  # fmt: skip
    store(tmp)
    (many, _), (single, _) = race(  # taking turns: the machine's noise falls on both
        sz.slow, lrexp_cli(tmp, tuple(multirun)), lrexp_cli(tmp, ()), warmup=sz.warm
    )
    what = f"{sz.grid**2}-job Hydra multirun (vmap launcher), MLflow, end to end"
    rows.append(compare("4", what, many, "one default run (CLI)", single, 3))
    what = "… tracked in the launching process (`LREXP_TRACKING_PROCESS=0`)"
    if not sz.full:
        return [*rows, Row("4", what, ratio="full mode only")]
    alone = cli_time(tmp, tuple(multirun), sz, process=False)
    rows.append(compare("4", what, alone, "one default run (CLI)", single, None, "(for scale)"))
    return rows


def lrexp_cli(
    tmp: Path, args: tuple[str, ...], cache: bool = True, process: bool = True
) -> Callable[[], object]:
    """``python -m lrexp.train <args>`` on the store in ``tmp``, launched from there.

    lrexp keeps JAX's compiled programs in ``$XDG_CACHE_HOME/lrexp/jax``, here under ``tmp``;
    ``cache=False`` turns that off (``JAX_COMPILATION_CACHE_DIR=``). ``process=False`` tracks in
    the training process rather than from lrexp's tracking process (``LREXP_TRACKING_PROCESS=0``).
    """
    command = [sys.executable, "-m", "lrexp.train", *args, f"tracking.uri=sqlite:///{tmp}/m.db"]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "cache")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env.pop("LREXP_TRACKING_PROCESS", None)
    if not cache:
        env["JAX_COMPILATION_CACHE_DIR"] = ""
    if not process:
        env["LREXP_TRACKING_PROCESS"] = "0"
    return lambda: subprocess.run(command, cwd=tmp, env=env, check=True, capture_output=True)


def store(tmp: Path) -> None:
    """The CLI runs' store in ``tmp``, made once by a default run (which fills the JAX cache)."""
    if not (tmp / "m.db").exists():
        lrexp_cli(tmp, ())()


@functools.cache
def cli_time(
    tmp: Path, args: tuple[str, ...], sz: Sizes, cache: bool = True, process: bool = True
) -> Stat:
    """Wall time of a CLI run on an existing store (made once, with lrexp's JAX cache filled)."""
    store(tmp)
    return repeat(lrexp_cli(tmp, args, cache, process), sz.slow, warmup=sz.warm)[0]


# --- 5. the cost of tracking -------------------------------------------------------------------
PARTS = {  # what a tracked run adds, part by part: label → the functions timed for it
    "provenance tags (git subprocesses)": "lrexp.pipeline.provenance:tags",
    "experiment lookup, open and end the run": "lrexp.tracking.lifecycle:experiment_id "
    "mlflow:start_run mlflow.tracking.fluent:end_run",
    "params": "lrexp.tracking.writer:log_params",
    "data set (log_input)": "lrexp.tracking.writer:log_dataset",
    "metrics (sampled curves and summary, log_batch)": "lrexp.pipeline.record:log_curves",
    "figures: draw SVG": "lrexp.report.plots:loss_curve lrexp.report.plots:fitted_vs_actual",
    "artifacts: config, θ, history.csv, figures (log_files)": "lrexp.tracking.writer:log_files",
    "model (pyfunc log_model)": "lrexp.tracking.writer:log_model",
}


@contextlib.contextmanager
def timed_parts(totals: dict[str, float]):
    """Patch each function in PARTS with a timer adding to ``totals`` under its label."""

    def timer(f, label):
        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                totals[label] = totals.get(label, 0.0) + time.perf_counter() - t

        return timed

    with contextlib.ExitStack() as stack:
        for label, names in PARTS.items():
            for name in names.split():
                patch = mock.patch(name.replace(":", "."), timer(pkgutil.resolve_name(name), label))
                stack.enter_context(patch)
        yield


def tracking_cost(sz: Sizes, tmp: Path) -> list[Row]:
    from lrexp.tracking import lifecycle

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # log_model's INFO lines
    uri = f"sqlite:///{tmp / 'tracking.db'}"
    lifecycle.init_store(uri)
    common = ["optimizer=sgd", "optimizer.lr=0.001", "train.batch_size=null",
              f"train.steps={sz.steps}", f"tracking.uri={uri}"]  # fmt: skip

    def run(*more: str) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            pipeline.run(compose(*common, *more))

    def on() -> None:  # a fresh experiment in the existing store, every time
        run(f"tracking.experiment=bench-{uuid.uuid4().hex[:8]}")

    (base, _), (ours, _) = race(sz.mid, lambda: run("tracking.enabled=false"), on)
    extra = Stat(*(t - base.median for t in (ours.median, ours.lo, ours.hi)))
    what = f"{sz.steps}-step full-batch run, fully logged: time over tracking off"
    rows = [Row("5", what, extra, "the run, tracking off", base, f"+{extra.median:.3g} s",
                "≤ +0.25 s", extra.median <= 0.25)]  # fmt: skip
    totals: dict[str, float] = {}
    with timed_parts(totals):
        one, _ = repeat(on, 1, warmup=0)  # one more run, its parts timed
    rest = one.median - base.median - sum(totals.values())
    parts = sorted([*totals.items(), ("the rest", rest)], key=lambda kv: -kv[1])
    rows += [info("5", f"of which (one run): {k}", v) for k, v in parts]
    return rows


# --- 6. cold start -----------------------------------------------------------------------------
def cold_start(sz: Sizes, tmp: Path) -> list[Row]:
    imports = [sys.executable, "-c", "import jax, optax, hydra, mlflow"]
    run = functools.partial(subprocess.run, imports, check=True, capture_output=True)
    store(tmp)
    (base, _), (ours, _) = race(  # taking turns; full: 7 of each, quick: 1
        sz.slow + 4 * sz.warm, run, lrexp_cli(tmp, ()), warmup=sz.warm
    )
    name = "python -c 'import jax, optax, hydra, mlflow'"
    rows = [compare("6", "python -m lrexp.train, default run on an existing store",
                    ours, name, base, 1.5)]  # fmt: skip
    scale = {  # the same CLI run with one setting changed: full mode only
        "… tracked in the training process (`LREXP_TRACKING_PROCESS=0`)": ((), {"process": False}),
        "… with tracking.enabled=false": (("tracking.enabled=false",), {}),
        "… with JAX's compilation cache off (JAX_COMPILATION_CACHE_DIR=)": ((), {"cache": False}),
    }
    for what, (args, kw) in scale.items():
        if not sz.full:
            rows.append(Row("6", what, ratio="full mode only"))
            continue
        t = cli_time(tmp, args, sz, **kw)
        rows.append(compare("6", what, t, name, base, None, "(for scale)"))
    return [*rows, *signal_latency(sz, tmp)]


# A CLI run whose one epoch takes seconds: 1.6e6 training rows at batch 2.
LONG_EPOCH = ("data.n=2000000", "data.weights=[2.0]", "train.batch_size=2", "train.epochs=3",
              "optimizer=adamw", "train.dtype=float64", "tracking.log_model=false")  # fmt: skip


def signal_latency(sz: Sizes, tmp: Path) -> list[Row]:
    """Seconds from a SIGTERM inside a long epoch to the run's end time in the store (KILLED)."""
    from mlflow.tracking import MlflowClient

    what = "SIGTERM inside a long epoch → the run recorded KILLED (seconds after the signal)"
    if not sz.full:  # seconds of training per try
        return [Row("6", what, ratio="full mode only")]
    uri = f"sqlite:///{tmp}/signals.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "XDG_CACHE_HOME": str(tmp / "cache")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    delays = []
    for i in range(sz.slow):
        exp = f"signal-{i}"
        command = [sys.executable, "-m", "lrexp.train", *LONG_EPOCH, f"tracking.uri={uri}",
                   f"tracking.experiment={exp}"]  # fmt: skip
        proc = subprocess.Popen(command, cwd=tmp, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        for line in proc.stderr:  # progress lines start 2 s into training: inside epoch 1
            if "train MSE" in line:
                break
        sent = time.time()  # wall clock: compared with the run's end time in the store
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        client = MlflowClient(uri)
        (run,) = client.search_runs([client.get_experiment_by_name(exp).experiment_id])
        assert run.info.status == "KILLED", run.info.status
        delays.append(run.info.end_time / 1000 - sent)
    return [Row("6", what, Stat.of(delays))]


# --- 7. against scikit-learn -------------------------------------------------------------------
def sklearn_side(sz: Sizes) -> list[Row]:
    try:
        from sklearn.linear_model import LinearRegression, SGDRegressor
    except ImportError:
        return [Row("7", "LinearRegression, SGDRegressor", ratio=SKIP)]
    arrays = regression_data(sz.n, sz.m)
    X, y = arrays[:2]
    X1 = np.column_stack([np.ones(len(X)), X.astype(np.float64)])
    goal = 1.01 * np.mean((X1 @ np.linalg.lstsq(X1, y.astype(np.float64))[0] - y) ** 2)
    solve = jax.jit(lambda X, y: jnp.linalg.solve(*model.sufficient_stats(X, y)[:2]))
    (ours, _), (base, _) = race(
        sz.repeats, lambda: jax.block_until_ready(solve(X, y)), lambda: LinearRegression().fit(X, y)
    )
    rows = [compare("7", "exact θ*: statistics + solve (lrexp's maths)", ours,
                    "sklearn LinearRegression.fit", base, None, "side by side")]  # fmt: skip
    times = []
    for _ in range(sz.mid):  # partial_fit is one epoch; checking the MSE is not timed
        est, epochs, spent = SGDRegressor(penalty=None, random_state=0), 0, 0.0
        while epochs < 100 and (epochs == 0 or np.mean((est.predict(X) - y) ** 2) > goal):
            t = time.perf_counter()
            est.partial_fit(X, y)
            spent, epochs = spent + time.perf_counter() - t, epochs + 1
        times.append(spent)
    for name, opt, lr in (("GD", "sgd", 0.5 / sz.n), ("Adam", "adam", 0.05)):
        h = hyper(opt, lr)
        met = run_fit(arrays, opt, h, sz.steps).history.train_mse <= goal
        steps = max(1, int(np.argmax(met)) if met.any() else sz.steps)
        ours, _ = repeat(lambda opt=opt, h=h, s=steps: run_fit(arrays, opt, h, s), sz.repeats)
        what = f"to within 1% of the optimal MSE: lrexp {name}, {steps} step(s)"
        rows.append(compare("7", what, ours, f"SGDRegressor, {epochs} epoch(s)", Stat.of(times),
                            None, "side by side"))  # fmt: skip
    return rows


# --- 8. loading files -------------------------------------------------------------------------
LOAD_COLUMNS = [f"x{j}" for j in range(1, 11)] + ["y"]
# Full batch with Adam: the default momentum's lr diverges on 1e6 rows (TSSE grows with n), and
# the default batch of 10 would take minutes an epoch. The default run takes the same settings.
LOAD_RUN = ("train.batch_size=null", "optimizer=adam")


def load_files(sz: Sizes, tmp: Path) -> list[Row]:
    """``data.load_file`` against pyarrow's readers; a CLI run on the CSV against a default run."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    values = np.random.default_rng(0).normal(size=(sz.load_rows, len(LOAD_COLUMNS)))
    table = pa.table(dict(zip(LOAD_COLUMNS, values.T, strict=True)))
    csv_path, pq_path = tmp / "load.csv", tmp / "load.parquet"
    pacsv.write_csv(table, csv_path)
    pq.write_table(table, pq_path)
    rows, loaded = [], {}
    for fmt, path, read, name in (
        ("CSV", csv_path, lambda: pacsv.read_csv(csv_path), "pyarrow.csv.read_csv"),
        ("Parquet", pq_path, lambda: pq.read_table(pq_path), "pyarrow.parquet.read_table"),
    ):
        load = functools.partial(data.load_file, path, target="y")
        (base, _), (ours, _) = race(sz.slow, read, load)
        what = (f"{fmt} file, {sz.load_rows:.0e} rows × 11 ({path.stat().st_size / 1e6:.0f} MB) "
                "→ float64 X, y: data.load_file")  # fmt: skip
        rows.append(compare("8", what, ours, name, base, 1.5))
        loaded[fmt] = ours
    rows.append(log_input_cost(sz, data.load_file(csv_path, target="y"), tmp))
    store(tmp)
    args = ("data=csv", f"data.path={csv_path.name}", "data.target=y", *LOAD_RUN)
    (default, _), (ours, _) = race(
        sz.slow, lrexp_cli(tmp, LOAD_RUN), lrexp_cli(tmp, args), warmup=sz.warm
    )
    base = Stat(*(a + b for a, b in zip(astuple(default), astuple(loaded["CSV"]), strict=True)))
    what = f"python -m lrexp.train data=csv (the CSV above, {' '.join(LOAD_RUN)}), tracked"
    name = "default run (CLI, same settings) + the CSV's load"
    return [*rows, compare("8", what, ours, name, base, 2)]


def log_input_cost(sz: Sizes, ds: data.Dataset, tmp: Path) -> Row:
    """Seconds to record a data set of these rows as a run's input (digest, schema, log_input)."""
    import mlflow

    from lrexp.tracking import lifecycle, writer

    uri = f"sqlite:///{tmp / 'load.db'}"
    lifecycle.init_store(uri)
    client = mlflow.tracking.MlflowClient(uri)
    run_id = client.create_run(client.get_experiment_by_name("Default").experiment_id).info.run_id
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(run_id):
            kw = {"features": ds.feature_names, "target": ds.target_name, "name": ds.name}
            t, _ = repeat(lambda: writer.log_dataset(ds.X, ds.y, source=ds.source, **kw), sz.slow)
    finally:
        mlflow.set_tracking_uri(previous)
    return Row("8", f"… its data set recorded as the run's input ({len(ds.y):.0e} rows)", t,
               ratio="(for scale)")  # fmt: skip


# --- 9. many devices -------------------------------------------------------------------------
DEVICES = 4  # forced host devices: XLA_FLAGS=--xla_force_host_platform_device_count


def device_times(sz: Sizes) -> dict[str, list[float]]:
    """In a process with its devices fixed: seconds per full-batch step from the rows (a compiled
    chunk of ``row_steps``, its rows spread over the devices when there are several), and per
    ``fit_batch`` of 256 members (16 lr × 16 momentum, ``steps`` steps on statistics)."""
    from lrexp.core import devices

    devices.MIN_ROWS = 0  # every row count: timed on the bench's data alone
    arrays = regression_data(sz.n, sz.m)
    spec = fit.LoopSpec("sgd", "constant", epochs=sz.row_steps, chunk=sz.row_steps)
    h, key = hyper("sgd", 0.5 / sz.n), jax.random.key(0)
    train, test = layouts.training_data(*arrays, spec=spec, dtype=jnp.float32, shard=True)
    state, _ = fit._begin_jit(jnp.zeros(sz.m + 1), train, test, h, spec=spec)
    run = functools.partial(fit.run_chunk, state, train, test, h, key, spec=spec)
    steps = [t / sz.row_steps for t in repeat_all(lambda: jax.block_until_ready(run()), sz.repeats)]
    lrs, mus = np.geomspace(0.05, 0.5, 16) / sz.n, np.linspace(0.0, 0.9, 16)
    hypers = [hyper("momentum", float(lr), momentum=float(mu)) for lr in lrs for mu in mus]
    keys = [jax.random.key(i) for i in range(len(hypers))]
    spec = fit.LoopSpec("momentum", "constant", epochs=sz.steps, chunk=sz.steps, stats=True)
    sweep = repeat_all(lambda: fit.fit_batch(*arrays, spec=spec, hypers=hypers, keys=keys), sz.slow)
    return {"devices": [jax.device_count()], "step": steps, "sweep": sweep}


def repeat_all(fn: Callable[[], object], n: int) -> list[float]:
    """Every time of ``n`` calls after a warm-up (compiling) call."""
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def devices_side(sz: Sizes, tmp: Path) -> list[Row]:
    """The same work on 1 and on ``DEVICES`` forced host devices, one process each, in turn."""
    import json

    if not sz.full:  # subprocesses of a minute each: no smoke test of them in quick mode
        return []
    code = "import json, bench; print(json.dumps(bench.device_times(bench.FULL)))"
    got, path = {}, os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    for d in (1, DEVICES):
        flags = f"--xla_force_host_platform_device_count={d}"
        env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags, PYTHONPATH=path)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
        got[d] = json.loads(out.strip().splitlines()[-1])
        assert got[d]["devices"] == [d], got[d]
    one, many = ({k: Stat.of(v) for k, v in got[d].items()} for d in (1, DEVICES))
    what = f"full-batch step from the rows ({sz.n:.0e} × {sz.m}), rows on {DEVICES} devices"
    rows = [compare("9", what, many["step"], "1 device", one["step"], None, "(CPU: for scale)")]
    what = f"fit_batch, 256 members ({sz.steps} steps), members on {DEVICES} devices"
    rows.append(compare("9", what, many["sweep"], "1 device", one["sweep"], None, "(for scale)"))
    return rows


# --- 10. data larger than memory: one streamed pass -----------------------------------------
# A fresh interpreter per measurement: its peak RSS (ru_maxrss) is that pass's alone. It prints
# the pass's seconds and the peak, in KiB; "lrexp" sums every part, "pyarrow" only reads.
STREAM_PROBE = """
import json, re, sys, time
from pathlib import Path
import pyarrow.dataset as pads
from lrexp.core import stream
def peak_kib():  # VmHWM: the peak of this program (ru_maxrss: of the parent, if higher)
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
kind, path = sys.argv[1], Path(sys.argv[2])
source = stream.open_source(path, target="y", features=None)
before = peak_kib()
t = time.perf_counter()
if kind == "lrexp":
    stream.stream_pass(source, seed=0, test_fraction=0.2, folds=None, dropna=False)
elif kind == "dataset":
    for batch in pads.dataset(str(path), format="parquet").to_batches(columns=source.columns):
        pass
else:  # the pass's own reader, without the sums
    for Z in stream.batches(source):
        pass
seconds = time.perf_counter() - t
peak = peak_kib()
print(json.dumps({"s": seconds, "kib": peak, "before": before}))
"""


def write_parquet(path: Path, rows: int, chunk: int = 10**6) -> None:
    """A Parquet file of ``rows`` × 11 standard-normal float64 columns, written a chunk at a time
    (the writer never holds the whole table)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    schema = pa.schema([(c, pa.float64()) for c in LOAD_COLUMNS])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, chunk):
            v = rng.standard_normal((min(chunk, rows - start), len(LOAD_COLUMNS)))
            writer.write_table(pa.table(dict(zip(LOAD_COLUMNS, v.T, strict=True)), schema=schema))


def stream_probe(kind: str, path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", STREAM_PROBE, kind, str(path)], env=env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout)


def streamed(sz: Sizes, tmp: Path) -> list[Row]:
    """Peak RSS of a streamed pass as the rows grow, and its speed against pyarrow's readers."""
    rows, peaks = [], []
    for n in sz.stream_rows:
        path = tmp / f"stream-{n}.parquet"
        write_parquet(path, n)
        size = f"{n:.0e} rows × 11 ({path.stat().st_size / 1e6:.0f} MB)"
        runs: dict[str, list[dict]] = {"lrexp": [], "dataset": [], "reader": []}
        for _ in range(sz.slow):  # taking turns, so that all share the machine's noise
            for kind, seen in runs.items():
                seen.append(stream_probe(kind, path))
        path.unlink()
        ours, dataset, reader = (Stat.of([r["s"] for r in runs[k]]) for k in runs)
        what = f"streamed pass, {size}: core.stream.stream_pass"
        rows.append(compare("10", what, ours, "pyarrow.dataset(...).to_batches()", dataset, 1.3))
        rows.append(compare("10", "… the same pass", ours, "its reader alone (stream.batches)",
                            reader, None, "(for scale)"))  # fmt: skip
        peak = max(r["kib"] for r in runs["lrexp"]) / 1024
        before = max(r["before"] for r in runs["lrexp"]) / 1024
        read = max(r["kib"] for r in runs["dataset"]) / 1024
        peaks.append(peak)
        rows.append(Row("10", f"… its peak RSS, {size}", ratio=f"{peak:.0f} MiB (imports "
                        f"{before:.0f} MiB; pyarrow.dataset alone {read:.0f} MiB)"))  # fmt: skip
    rows.append(host_epoch(sz, tmp))
    flat = max(peaks) / min(peaks)
    what = f"peak RSS from {sz.stream_rows[0]:.0e} to {sz.stream_rows[-1]:.0e} rows: max / min"
    rows.append(Row("10", what, ratio=f"{flat:.2f}×", target="≤ 1.3× (flat)", met=flat <= 1.3))
    return rows


def host_epoch(sz: Sizes, tmp: Path) -> Row:
    """A mini-batch epoch (batch 1024) gathered per call from a memory-mapped float32 row file
    on the host, against the same epoch from the rows held on the device."""
    n, m = sz.stream_rows[0], sz.m
    X, y = regression_data(n, m)[:2]
    path = tmp / "rows.npy"
    rows = np.lib.format.open_memmap(path, "w+", np.float32, (n, m + 1))
    rows[:, :m], rows[:, m] = X, y
    rows.flush()
    spec = fit.LoopSpec("sgd", "constant", batch_size=1024, epochs=1)
    stats = layouts._stats_jit(X, y)
    host = layouts.HostRows(np.load(path, mmap_mode="r"), np.zeros(m + 1), np.ones(m + 1), stats)
    h = hyper("sgd", 1e-4)
    host_spec = fit.chunked(spec, n, m)
    host_spec = replace(host_spec, chunk=1, split=max(host_spec.split, -(-n // 2**20)))
    memory_spec = fit.chunked(spec, n, m)
    arrays = (X, y, *regression_data(n, m)[2:])
    (ours, _), (base, _) = race(
        sz.slow,
        lambda: fit.fit(host, None, stats, None, spec=host_spec, hyper=h, key=jax.random.key(0)),
        lambda: fit.fit(*arrays, spec=memory_spec, hyper=h, key=jax.random.key(0)),
    )
    path.unlink()
    what = f"mini-batch epoch, {n:.0e} rows × {m}, batch 1024, from a memory-mapped row file"
    base_what = "the same epoch, rows on the device"
    return compare("10", what, ours, base_what, base, None, "(for scale)")


# --- the table ---------------------------------------------------------------------------------
SECTIONS = {
    "full_batch": lambda sz, tmp: full_batch(sz),
    "minibatch": lambda sz, tmp: minibatch(sz),
    "tutorial": lambda sz, tmp: tutorial(sz),
    "sweep": sweep,
    "tracking": tracking_cost,
    "cold_start": cold_start,
    "sklearn": lambda sz, tmp: sklearn_side(sz),
    "load": load_files,
    "devices": devices_side,
    "stream": streamed,
}
HEADER = ["#", "what", "lrexp median", "min – max", "baseline", "baseline median", "ratio",
          "target", "met"]  # fmt: skip


def fmt(s: float) -> str:
    scale, unit = next((u for u in ((1.0, "s"), (1e-3, "ms")) if abs(s) >= u[0]), (1e-6, "µs"))
    return f"{s / scale:.3g} {unit}"


def cells(r: Row) -> list[str]:
    s = r.lrexp
    spread = f"{fmt(s.lo)} – {fmt(s.hi)}" if s and s.lo != s.hi else ""
    met = {None: "", True: "yes", False: "no"}[r.met]
    return [r.section, r.what, fmt(s.median) if s else "", spread, r.baseline_name,
            fmt(r.baseline.median) if r.baseline else "", r.ratio, r.target, met]  # fmt: skip


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), "?")
    jax_version = f"Python {platform.python_version()}, JAX {jax.__version__}"
    return f"{platform.platform()}, {os.cpu_count()} cores ({cpu}), {jax_version}"


NOTES = {
    "1": "lrexp: `fit.fit(stats=True)` from the float32 rows (a float64 statistics pass, then "
    "the compiled steps); baseline: numpy `X.T @ X`, `X.T @ y` on the same rows and a float64 "
    "solve. One step: a compiled chunk on ready statistics / steps. The error check compares TSSE "
    "and gradient from the statistics with a float64 pass over the rows at θ = 0, a random θ and "
    "the trained θ. Plain path: `stats=False`, time per step against one read of X (a jitted "
    "column sum); a step needs two reads (forward, gradient).",
    "2": "lrexp: the compiled chunks of one epoch, batch 1024 (each step computes its rows' "
    "indices from a keyed bijection, gathers them and steps; the evaluation uses statistics); "
    "with `shuffle_block`, the bijection orders blocks of rows stored contiguously, a batch is "
    "whole blocks, and its gradient comes from the blocks' moments X̃ᵀ[X̃, y] (made once per fit, "
    "timed on their own line); baseline: one read of X (jitted column sum). The parts are timed "
    "alone, for comparison.",
    "3": "lrexp: `pipeline.train_folds` of `experiment=tutorial` (tol off: both run every epoch); "
    "baseline: PyTorch CPU, `nn.Linear` from zeros, one forward/backward call per sample, "
    "gradients summed over 10, `SGD(lr=0.01, momentum=0.9)`, the same folds, one thread.",
    "4": "`fit.fit_batch` over 8 lr × 8 momentum against `fit.fit` of one config, same data; "
    "then wall times of `python -m lrexp.train -m hydra/launcher=vmap optimizer.lr=… "
    "optimizer.momentum=…` against `python -m lrexp.train`, taking turns, on one existing SQLite "
    "store; the multirun logs its children from two tracking processes "
    "(`lrexp.tracking.client.writers`).",
    "5": "`pipeline.run` (`optimizer=sgd train.batch_size=null train.steps=1000`) with tracking "
    "on, a new experiment in an existing store each time, minus tracking off; the parts are timed "
    "by wrapping lrexp's tracking functions during one more run.",
    "6": "subprocess wall times on an existing store (the default run taking turns with the "
    "baseline), lrexp's JAX compilation cache filled by an earlier run (the cache-off row sets "
    "`JAX_COMPILATION_CACHE_DIR=`). A tracked run logs "
    "from lrexp's tracking process, started before JAX is imported (`lrexp.tracker`).",
    "7": "same data as 1; `SGDRegressor(penalty=None)`, one `partial_fit` epoch at a time until "
    "the train MSE is within 1% of the lstsq optimum (checks not timed); lrexp: the fewest steps "
    "that reach it, timed as a warm fit.",
    "8": "a table of standard-normal float64 columns x1..x10, y written by pyarrow as CSV and "
    "Parquet; lrexp: `data.load_file(path, target='y')` (header checked, columns read by pyarrow, "
    "stacked into a C-ordered float64 X and y, every cell checked finite), taking turns with "
    "pyarrow's reader alone (a pyarrow Table, no checks, no NumPy). The data set's input record: "
    "`tracking.writer.log_dataset` (MLflow's digest and schema from the dtypes) in an open run. "
    "End to end: `python -m lrexp.train data=csv data.path=load.csv data.target=y` with tracking "
    "on (an existing SQLite store, the JAX cache filled by a warm-up run) taking turns with a "
    "default run with the same settings; the baseline adds the CSV's `load_file` median.",
    "9": f"one subprocess with 1 CPU device, then one with {DEVICES} "
    "(`XLA_FLAGS=--xla_force_host_platform_device_count`), the same work in each: a compiled "
    "chunk of full-batch GD steps from the rows (`stats=False`; on several devices the rows are "
    "sharded, `jit` partitions the step, its sums are all-reduced), per step; `fit.fit_batch` of "
    "256 members (16 lr × 16 momentum) on statistics, the members sharded over the devices. "
    "Forced host devices share this machine's cores: this measures the overhead of spreading, "
    "not a speed-up.",
    "10": "a Parquet file of standard-normal float64 columns x1..x10, y written a million rows "
    "at a time (`--stream-large` adds 5e7 rows, 4.4 GB; each file is deleted after its rows); "
    "lrexp: `core.stream.stream_pass` (float64 sums of [1, x, y] per part of a 20 % held-out "
    "split, the split rule per row) in a fresh interpreter, taking turns with one reading the "
    "same columns by `pyarrow.dataset(...).to_batches()` alone (pyarrow's defaults) and one by "
    "the pass's own reader (`ParquetFile.iter_batches`, no pre-buffering) alone; peak RSS: that "
    "interpreter's peak (`VmHWM`: imports included, their part shown). The mini-batch epoch: "
    "`fit.fit` on `layouts.HostRows` (a float32 `.npy` memmap; each call's batches gathered on "
    "the host, at most 2^20 rows a call) against `fit.fit` on the same rows in memory.",
}


def load() -> str:
    return "load average " + ", ".join(f"{v:.1f}" for v in os.getloadavg())


def markdown(rows: list[Row], mode: str) -> str:
    lines = [f"Machine: {machine()}  ", f"Date: {datetime.date.today()}, {mode} mode, {load()}", ""]
    for r in [HEADER, ["---"] * len(HEADER), *map(cells, rows)]:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    lines += ["", "How each number is reached (ratios are lrexp / baseline):", ""]
    lines += [f"{k}. {v}" for k, v in NOTES.items() if any(r.section == k for r in rows)]
    return "\n".join(lines) + "\n"


def print_table(rows: list[Row]) -> None:
    table = [HEADER, *map(cells, rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test for CI")
    parser.add_argument("--markdown", type=Path, help="also write the table as markdown here")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run this section")
    parser.add_argument("--stream-large", action="store_true", help="section 9 with 5e7 rows too")
    args = parser.parse_args(argv)
    lrexp.quiet_libraries()
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    sz, rows = (QUICK if args.quick else FULL), []
    if args.stream_large:
        sz = replace(sz, stream_rows=(*sz.stream_rows, 5 * 10**7))
    with tempfile.TemporaryDirectory(prefix="lrexp-bench-") as tmp:
        for name, section in SECTIONS.items():
            if args.only is None or name in args.only:
                start = time.perf_counter()
                rows += section(sz, Path(tmp))
                print(f"[{name}: {time.perf_counter() - start:.0f} s]", file=sys.stderr)
    print(f"\n{machine()}, {datetime.date.today()}, {load()}\n")
    print_table(rows)
    if args.markdown:
        args.markdown.write_text(markdown(rows, "quick" if args.quick else "full"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
