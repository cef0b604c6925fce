"""Hydra entry point: compose the config, then data → fit → track, and print a summary.

python -m lrexp.train optimizer=adam
python -m lrexp.train experiment=tutorial
python -m lrexp.train data=csv data.path=houses.csv data.target=price
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if __name__ == "__main__":  # the CLI: MLflow's process starts before JAX is imported (tracker)
    from lrexp.tracking import client as tracker

    tracker.start_for(sys.argv[1:])

import hydra
import jax
import jax.numpy as jnp
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from lrexp import config
from lrexp.config import Config, ConfigError
from lrexp.core import data, diagnostics, fit, optim, results
from lrexp.core.data import DataError, Dataset
from lrexp.tracking import signals

if TYPE_CHECKING:
    from lrexp.sweeps.callback import SweepJob

log = logging.getLogger("lrexp")
PROGRESS_AFTER_S = 2.0  # runs shorter than this print no progress lines


class Diverged(RuntimeError):
    """Training left θ non-finite; the run keeps the last finite θ and the curve up to there."""

    def __init__(self, step: int, fold: int | None, stable_lr: float):
        where = f" (fold {fold})" if fold is not None else ""
        super().__init__(
            f"diverged at step {step}{where}: lower optimizer.lr (plain gradient "
            f"descent is stable below {stable_lr:.3g} on this data and batch size)"
        )


@dataclass(frozen=True)
class Outcome:
    """What a run produced: the id of its MLflow run (None with tracking off) and its results."""

    run_id: str | None
    summary: dict
    names: list[str]  # bias, theta_1..theta_M
    theta: np.ndarray  # original units; with folds, the mean of the fold models
    theta_star: np.ndarray  # least squares on the training rows (with folds: on all rows)
    folds: list[results.FoldResult]
    dataset: Dataset
    skipped_for: str | None = None  # the FINISHED run this one was skipped for


def build_dataset(d: config.LinearData | config.CsvData, key: jax.Array, base_dir: Path) -> Dataset:
    """Make or load the configured data set."""
    if isinstance(d, config.CsvData):
        return data.load_csv(base_dir / d.path, target=d.target, features=d.features)
    collinearity = d.collinearity if isinstance(d, config.CollinearData) else 0.0
    return data.make_linear(
        key, n=d.n, bias=d.bias, weights=list(d.weights), noise=d.noise, collinearity=collinearity
    )


def loop_spec(cfg: Config, n_train: int, n_features: int = 1) -> fit.LoopSpec:
    """The static shape of the training loop; line-search optimizers always take full batches."""
    batch_size = cfg.train.batch_size
    if cfg.optimizer.name in optim.LINE_SEARCH and batch_size is not None:
        log.warning(
            "optimizer=%s works on the full batch: train.batch_size=%s is ignored",
            cfg.optimizer.name,
            batch_size,
        )
        batch_size = None
    epochs = cfg.train.steps if (batch_size is None and cfg.train.steps) else cfg.train.epochs
    spec = fit.LoopSpec(
        optimizer=cfg.optimizer.name,
        schedule=cfg.schedule.name,
        optimizer_static=optim.split_knobs(asdict(cfg.optimizer))[1],
        schedule_static=optim.split_knobs(asdict(cfg.schedule))[1],
        batch_size=batch_size,
        epochs=epochs,
        stats=batch_size is None and cfg.train.sufficient_stats,
        block=cfg.train.shuffle_block if batch_size is not None else 1,
    )
    return fit.chunked(spec, n_train, n_features)  # compiled calls of a fraction of a second


def progress(line: Callable[[int, fit.History], str], file=None):
    """An ``on_chunk`` callback printing ``line(epochs_done, rows)`` once a run has taken
    PROGRESS_AFTER_S, then at most once a second (the loop calls back every ~0.1 s), to ``file``
    (default: stderr)."""
    start = time.perf_counter()
    last = [start]

    def on_chunk(epochs_done: int, rows: fit.History) -> None:
        now = time.perf_counter()
        if now - start > PROGRESS_AFTER_S and now - last[0] >= 1.0:
            last[0] = now
            print(line(epochs_done, rows), file=file or sys.stderr, flush=True)

    return on_chunk


def _progress(total: int, fold: str):
    return progress(
        lambda done, rows: (
            f"  {fold}epoch {done}/{total}  train MSE {rows.train_mse[-1]:.6g}  "
            f"test MSE {rows.test_mse[-1]:.6g}"
        )
    )


def run_name(cfg: Config, overrides: list[str]) -> str:
    """The MLflow run name: the configured one, else the overrides, else optimizer-data."""
    if cfg.tracking.run_name:
        return cfg.tracking.run_name
    from lrexp.sweeps.callback import describe

    return describe(overrides) or f"{cfg.optimizer.name}-{cfg.data.name}"


@dataclass(frozen=True)
class Prepared:
    """Everything a run needs before training starts; building it checks all of the input."""

    cfg: Config
    base_dir: Path
    dataset: Dataset
    parts: list[tuple[np.ndarray, np.ndarray]]  # (train rows, test rows) of each split
    scalers: list[data.Standardizer]  # fitted on each split's training rows
    spec: fit.LoopSpec
    hyper: fit.Hyper
    shuffle_key: jax.Array
    title: str
    checks: diagnostics.Diagnostics

    def arrays(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Split ``i`` as standardized (X_train, y_train, X_test, y_test)."""
        (tr, te), st, ds = self.parts[i], self.scalers[i], self.dataset
        return st.apply(ds.X[tr]), ds.y[tr], st.apply(ds.X[te]), ds.y[te]


def prepare(cfg: Config, base_dir: str | Path = ".", *, shared: dict | None = None) -> Prepared:
    """Validate the config, make or load the data, split it: raise on any bad input.

    Runs prepared with the same ``shared`` dict (a sweep's jobs) make each data set, split and
    standardization once, for every run with the same data config, seed and split.
    """
    base_dir = Path(base_dir).resolve()
    config.validate(cfg, base_dir)
    k_data, k_split, k_shuffle = jax.random.split(jax.random.key(cfg.train.seed), 3)
    t = cfg.train
    key = repr((asdict(cfg.data), t.seed, t.folds, t.test_fraction, str(base_dir)))
    made = shared.get(key) if shared is not None else None
    if made is None:
        made = _data_parts(cfg, k_data, k_split, base_dir)
        if shared is not None:
            shared[key] = made
    ds, parts, scalers, spread = made
    n, m = ds.X.shape
    n_train = data.min_train_rows(n, t.test_fraction, t.folds)
    config.validate_sizes(cfg, n_rows=n, n_features=m, n_train=n_train)  # batch size, too
    spec = loop_spec(cfg, n_train=len(parts[0][0]), n_features=m)
    checks = diagnostics.check(
        spread,
        batch_size=spec.batch_size,
        optimizer=cfg.optimizer.name,
        lr=cfg.optimizer.lr,
        momentum=getattr(cfg.optimizer, "momentum", None),
        dtype=cfg.train.dtype,
    )
    for warning in checks.warnings:
        log.warning(warning)
    floats = optim.split_knobs(asdict(cfg.optimizer))[0]
    schedule_floats = optim.split_knobs(asdict(cfg.schedule))[0]
    hyper = fit.make_hyper(floats, schedule_floats, cfg.train.tol, jnp.dtype(cfg.train.dtype))
    batch = "full batch" if spec.batch_size is None else f"batch {spec.batch_size}"
    title = (
        f"lrexp: {cfg.optimizer.name} (lr {cfg.optimizer.lr:g}, {cfg.schedule.name}) on "
        f"{ds.name} [{n} rows × {m} features], {batch}, {cfg.train.dtype}"
    )
    return Prepared(cfg, base_dir, ds, parts, scalers, spec, hyper, k_shuffle, title, checks)


def _data_parts(cfg: Config, k_data: jax.Array, k_split: jax.Array, base_dir: Path) -> tuple:
    """The data set, its splits, their standardizers and the first one's spectrum."""
    ds = build_dataset(cfg.data, k_data, base_dir)
    n, m = ds.X.shape
    n_train = data.min_train_rows(n, cfg.train.test_fraction, cfg.train.folds)
    config.validate_sizes(cfg, n_rows=n, n_features=m, n_train=n_train)
    if cfg.train.folds:
        parts = data.fold_indices(k_split, n, cfg.train.folds)
    else:
        parts = [data.split_indices(k_split, n, cfg.train.test_fraction)]
    # Fitted before any run exists: a constant column is bad input, not a failed run.
    scalers = [
        data.Standardizer.fit(ds.X[tr], ds.feature_names, enabled=cfg.data.standardize)
        for tr, _ in parts
    ]
    return ds, parts, scalers, diagnostics.spectrum(scalers[0].apply(ds.X[parts[0][0]]))


def train_folds(p: Prepared, *, progress: bool = True) -> list[fit.FitResult]:
    """Train on every split, one after the other, reusing one compiled program.

    Interrupted (Ctrl-C, SIGTERM), the exception carries ``partial_fits``: the splits trained so
    far and the one in progress, up to its last finished chunk.
    """
    fits: list[fit.FitResult] = []
    for i in range(len(p.parts)):
        label = f"fold {i + 1}/{len(p.parts)}: " if len(p.parts) > 1 else ""
        try:
            fits.append(
                fit.fit(
                    *p.arrays(i),
                    spec=p.spec,
                    hyper=p.hyper,
                    key=jax.random.fold_in(p.shuffle_key, i),
                    dtype=jnp.dtype(p.cfg.train.dtype),
                    on_chunk=_progress(p.spec.epochs, label) if progress else None,
                )
            )
        except BaseException as e:
            e.partial_fits = [*fits, *([e.partial_fit] if hasattr(e, "partial_fit") else [])]
            raise
    return fits


def conclude(p: Prepared, fits: list[fit.FitResult], run_id: str | None) -> Outcome:
    """Score the fits in original units and summarize them."""
    ds = p.dataset
    folds = [
        results.evaluate(f, st, ds.X[tr], ds.y[tr], ds.X[te], ds.y[te])
        for f, st, (tr, te) in zip(fits, p.scalers, p.parts, strict=True)
    ]
    theta = np.mean([f.theta for f in folds], axis=0)
    if len(folds) == 1:
        theta_star = folds[0].theta_star
    else:
        everything = data.Standardizer.fit(ds.X, ds.feature_names, enabled=p.cfg.data.standardize)
        theta_star = results.optimum(everything, ds.X, ds.y)
    names = results.theta_names(ds.X.shape[1])
    summary = results.summary(folds, ds.true_theta)
    summary.update(stable_lr_gd=p.checks.stable_lr, hessian_condition=p.checks.hessian_condition)
    return Outcome(run_id, summary, names, theta, theta_star, folds, ds)


def tracked(p: Prepared, overrides: list[str], sweep: SweepJob | None = None):
    """The context of the run's MLflow run: yields its id, or None with tracking off."""
    if not p.cfg.tracking.enabled:
        return contextlib.nullcontext(None)
    from lrexp.pipeline import record  # deferred: mlflow's import is the slowest of all

    name = run_name(p.cfg, overrides if sweep is None else sweep.varying(overrides))
    return record.start(p.cfg, p.base_dir, name, overrides, sweep)


def run(
    cfg: Config,
    *,
    base_dir: str | Path = ".",
    overrides: list[str] | None = None,
    sweep: SweepJob | None = None,
) -> Outcome:
    """Validate, load data, train on every split, log the run to MLflow; return the outcome."""
    overrides = list(overrides or [])
    p = prepare(cfg, base_dir)
    if cfg.tracking.enabled and cfg.tracking.skip_finished:
        skipped = skip_if_finished(p, overrides, sweep)
        if skipped is not None:
            return skipped
    with tracked(p, overrides, sweep) as run_id:
        if run_id is not None:
            from lrexp.pipeline import record

            record.log_inputs(p, overrides)
        try:
            fits = train_folds(p)
        except BaseException as e:  # keep the curve up to the interruption
            if run_id is not None and getattr(e, "partial_fits", None):
                record.log_partial(p, run_id, e.partial_fits)
            raise
        if run_id is not None:
            run_id = record.resolve_run_id(run_id)
        outcome = conclude(p, fits, run_id)
        if run_id is not None:
            record.log_outputs(p, outcome, sweep)
        raise_if_diverged(p, outcome)  # inside the run: it ends FAILED with this reason
    print_summary(p, outcome)
    return outcome


def raise_if_diverged(p: Prepared, outcome: Outcome) -> None:
    for i, f in enumerate(outcome.folds):
        if f.fit.diverged_step is not None:
            print_summary(p, outcome)
            raise Diverged(
                f.fit.diverged_step, i + 1 if len(outcome.folds) > 1 else None, p.checks.stable_lr
            )


def skip_if_finished(p: Prepared, overrides: list[str], sweep: SweepJob | None) -> Outcome | None:
    from lrexp.pipeline import record

    done = record.find_finished(p)
    if done is None:
        return None
    name = run_name(p.cfg, overrides if sweep is None else sweep.varying(overrides))
    run_id = record.record_skipped(p, name, overrides, sweep, done)
    print(
        f"lrexp: skipped: this config already FINISHED as run {done['run_id']} "
        f"({done['name']}); test MSE {objective_of(done['metrics']):.6g}",
        flush=True,
    )
    empty = np.empty(0)
    return Outcome(
        run_id, done["metrics"], [], empty, empty, [], p.dataset, skipped_for=done["run_id"]
    )


def objective(outcome: Outcome) -> float:
    """What a sweeper minimizes: the test MSE (cross-validated where there are folds)."""
    return objective_of(outcome.summary)


def objective_of(summary: dict) -> float:
    return float(summary.get("cv_test_mse_mean", summary.get("final_test_mse", float("nan"))))


def print_summary(p: Prepared, outcome: Outcome) -> None:
    from lrexp.report import text as report

    ui = None
    if outcome.run_id is not None:
        uri = p.cfg.tracking.uri
        if uri.startswith("sqlite:///"):
            db = Path(p.base_dir, uri[len("sqlite:///") :]).resolve()
            ui = f"mlflow ui --backend-store-uri sqlite:///{db}  (then http://127.0.0.1:5000)"
        else:
            ui = f"open {uri} in a browser"
    print(
        report.summary_text(
            title=p.title,
            summary=outcome.summary,
            names=outcome.names,
            theta=outcome.theta,
            theta_star=outcome.theta_star,
            true_theta=outcome.dataset.true_theta,
            folds=len(outcome.folds),
            run_id=outcome.run_id,
            ui_command=ui,
        ),
        flush=True,
    )


@hydra.main(version_base="1.3", config_path="pkg://lrexp.conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one job; return the test MSE (the objective a Hydra sweeper minimizes).

    In a multirun a failing job does not stop the sweep: its run is FAILED with the reason, and
    the job returns NaN, which sweepers rank last.
    """
    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    quiet_libraries()
    use_compilation_cache()
    sweep = None
    if hc.mode == RunMode.MULTIRUN and cfg.tracking.enabled:
        from lrexp.sweeps import callback as sweep_mod
        from lrexp.tracking.store import resolve_uri

        uri = resolve_uri(cfg.tracking.uri, hydra.utils.get_original_cwd())
        sweep = sweep_mod.job_context(hc.job.num, uri, cfg.tracking.experiment)
    try:
        typed = config.to_object(cfg)
        with signals.sigterm_raises():
            outcome = run(
                typed, base_dir=hydra.utils.get_original_cwd(), overrides=overrides, sweep=sweep
            )
        return objective(outcome)
    except (ConfigError, DataError, MissingMandatoryValue) as e:
        error = (
            ConfigError(e.full_key, "???", "is required: set it on the command line")
            if isinstance(e, MissingMandatoryValue)
            else e
        )
        if sweep is None:
            _fail(error)
        from lrexp.sweeps import callback as sweep_mod

        sweep_mod.record_bad_job(overrides, sweep, error)
    except Diverged as e:
        if sweep is None:
            print(f"lrexp: error: {e}", file=sys.stderr, flush=True)
            sys.exit(3)
        log.error("job %d %s", hc.job.num, e)
        return float("inf")  # a sweeper can rank it: worse than any finite result
    except Exception as e:
        if sweep is None:
            if type(e).__name__ == "StoreLocked":  # tracking.StoreLocked (mlflow loads lazily)
                print(
                    f"lrexp: error: tracking.uri={cfg.tracking.uri!r}: {e}",
                    file=sys.stderr,
                    flush=True,
                )
                sys.exit(4)
            raise
        log.exception("job %d failed: %s", hc.job.num, e)  # its run is already FAILED
    return float("nan")


def use_compilation_cache() -> None:
    """Keep XLA's compiled programs on disk across runs (JAX's persistent compilation cache).

    A short run spends most of its time compiling about 70 small programs (the training loop, the
    data generator, the metrics); loading them back takes a few milliseconds each. The cache lives
    in ``$XDG_CACHE_HOME/lrexp/jax`` (``~/.cache/lrexp/jax``); ``JAX_COMPILATION_CACHE_DIR`` picks
    another directory, and set empty it turns the cache off.
    """
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        jax.config.update("jax_compilation_cache_dir", str(Path(home, "lrexp", "jax")))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        # JAX's default (1 s) caches none of lrexp's programs: each compiles in 5-900 ms.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def quiet_libraries() -> None:
    """Keep the libraries' INFO chatter (JAX's TPU probe, MLflow's table set-up) off the console."""
    for noisy in (
        "jax._src.xla_bridge",
        "matplotlib",
        "mlflow.store.db.utils",
        "alembic",
        "mlflow.pyfunc",
        "mlflow.models",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(error: Exception) -> None:
    print(f"lrexp: error: {error}", file=sys.stderr, flush=True)
    sys.exit(2)


def cli() -> None:
    """``python -m lrexp.train``: check a single run's overrides in one line, then run Hydra."""
    from lrexp import preflight
    from lrexp.tracking import client as tracker

    try:
        use_compilation_cache()
        problem = preflight.check(sys.argv[1:])
        if problem is not None:
            print(f"lrexp: error: {problem}", file=sys.stderr, flush=True)
            sys.exit(2)
        main()
    finally:
        tracker.stop()  # returns once the tracking process has stored the run


def exit_now(code: int | str | None) -> None:
    """Exit a single run as ``sys.exit(code)`` would, without the interpreter's teardown.

    Everything is stored by now; tearing down JAX's and Hydra's modules object by object would
    take another 0.5 s of every run. Output and log files are flushed first. (Not after a
    multirun with workers: its launcher's worker processes end at the interpreter's exit.)
    """
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code or 0)


if __name__ == "__main__":
    try:
        cli()
    except SystemExit as e:
        code = e.code
    else:
        code = 0
    argv = sys.argv[1:]
    if not (tracker.single_run(argv) or (tracker.batched_sweep(argv) and code == 0)):
        # a multirun's launchers (joblib's workers, submitit) shut down at exit, and a sweep
        # that failed ends its parent run then; lrexp's batched launcher has no workers
        sys.exit(code)
    exit_now(code)
