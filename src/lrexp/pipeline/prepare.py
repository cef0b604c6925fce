"""Before training: check the whole input, make or load the data, split and standardize it.

Everything that can be wrong with a run's input is found here, before any MLflow run exists.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import lrexp.pipeline.outcome as outcome
from lrexp import config
from lrexp.config import Config
from lrexp.core import data, diagnostics, fit, optim, results
from lrexp.core.data import Dataset

log = logging.getLogger("lrexp")

# Line-search optimizers (L-BFGS) stop once the train MSE improves by at most this share of itself
# (in float32, a few units of its last place): they converge in a few dozen steps, then stall.
LINE_SEARCH_RTOL = {"float32": 1e-6, "float64": 1e-10}


@dataclass(frozen=True)
class Prepared:
    """Everything a run needs before training starts; building it checks all of the input."""

    cfg: Config
    base_dir: Path
    dataset: Dataset
    parts: list[tuple[np.ndarray, np.ndarray]]  # (train rows, test rows) of each split
    scalers: list[data.Standardizer]  # fitted on each split's training rows
    spec: fit.LoopSpec
    hyper: fit.Hyper  # split 0's (the splits differ only in ``train.tol`` in the loop's units)
    shuffle_key: jax.Array
    title: str
    checks: diagnostics.Diagnostics

    @property
    def sequential(self) -> bool:
        """Whether one model trains through the folds in turn (``train.cv=sequential``)."""
        return self.cfg.train.cv == "sequential" and len(self.parts) > 1

    def arrays(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Split ``i`` as the loop takes it, standardized: (X_train, y_train, X_test, y_test)."""
        (tr, te), st, ds = self.parts[i], self.scalers[i], self.dataset
        return (
            st.apply(ds.X[tr]),
            st.apply_target(ds.y[tr]),
            st.apply(ds.X[te]),
            st.apply_target(ds.y[te]),
        )

    def hyper_of(self, i: int) -> fit.Hyper:
        """Split ``i``'s hyperparameters: ``train.tol`` (in the target's units, squared) in the
        units of split ``i``'s standardized target, ỹ = (y − ȳ) / σ_y."""
        tol = self.cfg.train.tol
        if tol is None:
            return self.hyper
        dtype = jnp.dtype(self.cfg.train.dtype)
        return self.hyper._replace(tol=jnp.asarray(_in_loop_units(tol, self.scalers[i]), dtype))

    def divergence_advice(self) -> str:
        """What to tell a run that diverged (:func:`outcome.advice`)."""
        X, y, X_test, y_test = self.arrays(0)
        with np.errstate(invalid="ignore"):
            largest = float(max(np.max(np.abs(a), initial=0.0) for a in (X, y, X_test, y_test)))
        d = self.cfg.data
        return outcome.advice(
            self.checks,
            lr=self.cfg.optimizer.lr,
            dtype=self.cfg.train.dtype,
            largest=largest,
            rows=len(y),
            standardized=d.standardize and d.standardize_target,
            mini_batches=self.spec.batch_size is not None,
        )

    def evaluate(self, fits: list[fit.FitResult]) -> list[results.FoldResult]:
        """Score each split's fit in original units (the splits trained so far, if fewer)."""
        ds = self.dataset
        return [
            results.evaluate(f, st, ds.X[tr], ds.y[tr], ds.X[te], ds.y[te])
            for f, st, (tr, te) in zip(fits, self.scalers, self.parts, strict=False)
        ]


def build_dataset(d: config.DataSchema, key: jax.Array, base_dir: Path) -> Dataset:
    """Make or load the configured data set."""
    if isinstance(d, config.FileData):
        ds = data.load_file(
            base_dir / d.path,
            target=d.target,
            features=d.features,
            fmt=d.format,
            delimiter="\t" if d.delimiter == "\\t" else d.delimiter,  # \t typed in a shell
            categorical=d.categorical,
            dropna=d.dropna,
        )
        if ds.dropped_rows:
            total = ds.dropped_rows + len(ds.y)
            log.warning("data.dropna=true: left out %d of %d rows", ds.dropped_rows, total)
        return ds
    collinearity = d.collinearity if isinstance(d, config.CollinearData) else 0.0
    return data.make_linear(
        key, n=d.n, bias=d.bias, weights=list(d.weights), noise=d.noise, collinearity=collinearity
    )


def loop_spec(cfg: Config, n_train: int, n_features: int = 1) -> fit.LoopSpec:
    """The static shape of the training loop. Line-search optimizers always take full batches
    (one step an epoch: at most ``train.steps``, else ``train.epochs``), and stop once they
    converge (:data:`LINE_SEARCH_RTOL`)."""
    batch_size = cfg.train.batch_size
    if optim.OPTIMIZERS[cfg.optimizer.name].line_search and batch_size is not None:
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
        log_steps=cfg.tracking.log_steps,
        reduction=cfg.train.reduction,
    )
    return fit.chunked(spec, n_train, n_features)  # compiled calls of a fraction of a second


def prepare(cfg: Config, base_dir: str | Path = ".", *, shared: dict | None = None) -> Prepared:
    """Validate the config, make or load the data, split it: raise on any bad input.

    Runs prepared with the same ``shared`` dict (a sweep's jobs) make each data set, split and
    standardization once, for every run with the same data config, seed and split.
    """
    base_dir = Path(base_dir).resolve()
    config.validate(cfg, base_dir)
    k_data, k_split, k_shuffle = jax.random.split(jax.random.key(cfg.train.seed), 3)
    t = cfg.train
    cache = shared if shared is not None else {}
    ds = _once(cache, ("data", asdict(cfg.data), t.seed, str(base_dir)), build_dataset, cfg.data,
               k_data, base_dir)  # fmt: skip
    n, m = ds.X.shape
    n_train = data.min_train_rows(n, t.test_fraction, t.folds)
    largest = float(np.max(np.abs(ds.y)))  # its squares must sum in float64
    config.validate_sizes(cfg, n_rows=n, n_features=m, n_train=n_train, largest_target=largest)
    split_key = ("split", asdict(cfg.data), t.seed, t.folds, t.test_fraction, str(base_dir))
    parts, scalers, spread = _once(cache, split_key, _splits, cfg, ds, k_split)
    spec = loop_spec(cfg, n_train=len(parts[0][0]), n_features=m)
    floats = optim.split_knobs(asdict(cfg.optimizer))[0]
    checks = diagnostics.check(
        spread,
        batch_size=spec.batch_size,
        optimizer=cfg.optimizer.name,
        knobs=floats,
        dtype=cfg.train.dtype,
        reduction=spec.reduction,
    )
    for warning in checks.warnings:
        log.warning(warning)
    schedule_floats = optim.split_knobs(asdict(cfg.schedule))[0]
    rtol = LINE_SEARCH_RTOL[t.dtype] if optim.OPTIMIZERS[cfg.optimizer.name].line_search else None
    tol = None if t.tol is None else _in_loop_units(t.tol, scalers[0])
    hyper = fit.make_hyper(floats, schedule_floats, tol, jnp.dtype(t.dtype), rtol=rtol)
    batch = "full batch" if spec.batch_size is None else f"batch {spec.batch_size}"
    title = (
        f"lrexp: {cfg.optimizer.name} (lr {cfg.optimizer.lr:g}, {cfg.schedule.name}) on "
        f"{ds.name} [{n} rows × {m} features], {batch}, {cfg.train.dtype}"
    )
    return Prepared(cfg, base_dir, ds, parts, scalers, spec, hyper, k_shuffle, title, checks)


def _once(cache: dict, key: tuple, make, *args):
    """``make(*args)``, once per ``key`` in ``cache`` (a sweep's jobs share their data)."""
    key = repr(key)
    if key not in cache:
        cache[key] = make(*args)
    return cache[key]


def _splits(cfg: Config, ds: Dataset, k_split: jax.Array) -> tuple:
    """The splits of ``ds``, their standardizers and the first one's spectrum."""
    n = len(ds.y)
    if cfg.train.folds:
        parts = data.fold_indices(k_split, n, cfg.train.folds)
    else:
        parts = [data.split_indices(k_split, n, cfg.train.test_fraction)]
    for _, te in parts:  # the split functions keep a row; an empty test set cannot be scored
        if len(te) == 0:
            key = "train.test_fraction" if not cfg.train.folds else "train.folds"
            value = cfg.train.test_fraction if not cfg.train.folds else cfg.train.folds
            raise config.ConfigError(key, value, "leaves no test rows: at least one is needed")
    # Fitted before any run exists: a constant column or target is bad input, not a failed run.
    key, value = _target_key(cfg.data)
    scalers = [
        data.Standardizer.fit(ds.X[tr], ds.feature_names, enabled=cfg.data.standardize).with_target(
            ds.y[tr], key=key, value=value, enabled=cfg.data.standardize_target
        )
        for tr, _ in parts
    ]
    return parts, scalers, diagnostics.spectrum(scalers[0].apply(ds.X[parts[0][0]]))


def _target_key(d: config.DataSchema) -> tuple[str, object]:
    """The key to name where the target is constant: a CSV's target column; for generated data,
    the weights and noise if they are all zero, else the bias that swamps them in float64."""
    if isinstance(d, config.CsvData):
        return "data.target", d.target
    if d.noise == 0 and not any(d.weights):
        return "data.weights", list(d.weights)
    return "data.bias", d.bias


def _in_loop_units(tol: float, st: data.Standardizer) -> float:
    """``train.tol``, an improvement of the MSE in the target's units², on ỹ = (y − ȳ) / σ_y."""
    with np.errstate(over="ignore", under="ignore"):
        return float(np.float64(tol) / np.float64(st.y_scale) / np.float64(st.y_scale))
