"""Hydra entry point: compose the config, then data → fit → track, and print a summary.

python -m lrexp.train optimizer=adam
python -m lrexp.train experiment=tutorial
python -m lrexp.train data=csv data.path=houses.csv data.target=price
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import hydra
import jax
import jax.numpy as jnp
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from lrexp import config, data, fit, optim, results
from lrexp.config import Config, ConfigError
from lrexp.data import DataError, Dataset

log = logging.getLogger("lrexp")
PROGRESS_AFTER_S = 2.0  # runs shorter than this print no progress lines


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


def build_dataset(d: config.LinearData | config.CsvData, key: jax.Array, base_dir: Path) -> Dataset:
    """Make or load the configured data set."""
    if isinstance(d, config.CsvData):
        return data.load_csv(base_dir / d.path, target=d.target, features=d.features)
    collinearity = d.collinearity if isinstance(d, config.CollinearData) else 0.0
    return data.make_linear(
        key, n=d.n, bias=d.bias, weights=list(d.weights), noise=d.noise, collinearity=collinearity
    )


def loop_spec(cfg: Config, n_train: int) -> fit.LoopSpec:
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
    )
    chunk = fit.chunk_epochs(n_train, spec.steps_per_epoch(n_train), epochs)
    return fit.LoopSpec(**{**asdict(spec), "chunk": chunk})


def _progress(total: int, fold: str):
    start = time.perf_counter()

    def on_chunk(epochs_done: int, rows: fit.History) -> None:
        if time.perf_counter() - start > PROGRESS_AFTER_S:
            print(
                f"  {fold}epoch {epochs_done}/{total}  train MSE {rows.train_mse[-1]:.6g}  "
                f"test MSE {rows.test_mse[-1]:.6g}",
                file=sys.stderr,
                flush=True,
            )

    return on_chunk


def run_name(cfg: Config, overrides: list[str]) -> str:
    """The MLflow run name: the configured one, else the overrides, else optimizer-data."""
    if cfg.tracking.run_name:
        return cfg.tracking.run_name
    chosen = [o for o in overrides if not o.lstrip("+~").startswith(("tracking.", "hydra"))]
    return ",".join(chosen) if chosen else f"{cfg.optimizer.name}-{cfg.data.name}"


def run(cfg: Config, *, base_dir: str | Path = ".", overrides: list[str] | None = None) -> Outcome:
    """Validate, load data, train on every split, log the run to MLflow; return the outcome."""
    base_dir, overrides = Path(base_dir).resolve(), list(overrides or [])
    config.validate(cfg, base_dir)
    dtype = jnp.dtype(cfg.train.dtype)
    k_data, k_split, k_shuffle = jax.random.split(jax.random.key(cfg.train.seed), 3)
    ds = build_dataset(cfg.data, k_data, base_dir)
    n, m = ds.X.shape
    config.validate_sizes(
        cfg,
        n_rows=n,
        n_features=m,
        n_train=data.min_train_rows(n, cfg.train.test_fraction, cfg.train.folds),
    )
    parts = (
        data.fold_indices(k_split, n, cfg.train.folds)
        if cfg.train.folds
        else [data.split_indices(k_split, n, cfg.train.test_fraction)]
    )
    spec = loop_spec(cfg, n_train=len(parts[0][0]))
    floats = optim.split_knobs(asdict(cfg.optimizer))[0]
    hyper = fit.make_hyper(floats, optim.split_knobs(asdict(cfg.schedule))[0], cfg.train.tol, dtype)
    names = results.theta_names(m)
    title = (
        f"lrexp: {cfg.optimizer.name} (lr {cfg.optimizer.lr:g}, {cfg.schedule.name}) on "
        f"{ds.name} [{n} rows × {m} features], "
        f"{'full batch' if spec.batch_size is None else f'batch {spec.batch_size}'}, "
        f"{cfg.train.dtype}"
    )

    # Fitted before any run exists: a constant column is bad input, not a failed run.
    scalers = [
        data.Standardizer.fit(ds.X[tr], ds.feature_names, enabled=cfg.data.standardize)
        for tr, _ in parts
    ]
    if cfg.tracking.enabled:
        from lrexp import record  # deferred: mlflow's import is the slowest of all

        ctx = record.start(cfg, base_dir, run_name(cfg, overrides))
    else:
        ctx = contextlib.nullcontext(None)
    with ctx as run_id:
        if run_id is not None:
            record.log_inputs(cfg, ds, spec, overrides, parts)
        folds = []
        for i, ((tr, te), st) in enumerate(zip(parts, scalers, strict=True)):
            label = f"fold {i + 1}/{len(parts)}: " if len(parts) > 1 else ""
            result = fit.fit(
                st.apply(ds.X[tr]),
                ds.y[tr],
                st.apply(ds.X[te]),
                ds.y[te],
                spec=spec,
                hyper=hyper,
                key=jax.random.fold_in(k_shuffle, i),
                dtype=dtype,
                on_chunk=_progress(spec.epochs, label),
            )
            folds.append(results.evaluate(result, st, ds.X[tr], ds.y[tr], ds.X[te], ds.y[te]))
        summary = results.summary(folds, ds.true_theta)
        theta = np.mean([f.theta for f in folds], axis=0)
        theta_star = (
            folds[0].theta_star
            if len(folds) == 1
            else results.optimum(
                data.Standardizer.fit(ds.X, ds.feature_names, enabled=cfg.data.standardize),
                ds.X,
                ds.y,
            )
        )
        outcome = Outcome(run_id, summary, names, theta, theta_star, folds, ds)
        if run_id is not None:
            record.log_outputs(outcome, parts, title, log_model=cfg.tracking.log_model)
    _print_summary(cfg, outcome, title, base_dir)
    return outcome


def _print_summary(cfg: Config, outcome: Outcome, title: str, base_dir: Path) -> None:
    from lrexp import report

    ui = None
    if outcome.run_id is not None:
        uri = cfg.tracking.uri
        if uri.startswith("sqlite:///"):
            db = Path(base_dir, uri[len("sqlite:///") :]).resolve()
            ui = f"mlflow ui --backend-store-uri sqlite:///{db}  (then http://127.0.0.1:5000)"
        else:
            ui = f"open {uri} in a browser"
    print(
        report.summary_text(
            title=title,
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
    """Run one job; return the test MSE (the objective a Hydra sweeper minimizes)."""
    overrides = list(HydraConfig.get().overrides.task)
    for noisy in ("jax._src.xla_bridge", "matplotlib", "mlflow.store.db.utils", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        typed = config.to_object(cfg)
        outcome = run(typed, base_dir=hydra.utils.get_original_cwd(), overrides=overrides)
    except MissingMandatoryValue as e:
        _fail(ConfigError(e.full_key, "???", "is required: set it on the command line"))
    except (ConfigError, DataError) as e:
        _fail(e)
    s = outcome.summary
    return float(s.get("cv_test_mse_mean", s["final_test_mse"]))


def _fail(error: Exception) -> None:
    print(f"lrexp: error: {error}", file=sys.stderr, flush=True)
    sys.exit(2)


if __name__ == "__main__":
    main()
