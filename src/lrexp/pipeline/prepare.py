"""Before training: check the whole input, make or load the data, split and standardize it.

Everything that can be wrong with a run's input is found here, before any MLflow run exists.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import jax

import lrexp.pipeline.streamed as streamed
from lrexp import config
from lrexp.config import Config
from lrexp.core import data, diagnostics
from lrexp.core.data import Dataset
from lrexp.pipeline.prepared import (  # noqa: F401  (re-exported: their users import them here)
    LINE_SEARCH_RTOL,
    Prepared,
    _in_loop_units,
    _once,
    checked,
    hyper_for,
    log,
    loop_spec,
)


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


def prepare(cfg: Config, base_dir: str | Path = ".", *, shared: dict | None = None) -> Prepared:
    """Validate the config, make or load the data, split it: raise on any bad input.

    Runs prepared with the same ``shared`` dict (a sweep's jobs) make each data set, split and
    standardization once, for every run with the same data config, seed and split.
    """
    base_dir = Path(base_dir).resolve()
    config.validate(cfg, base_dir)
    cache = shared if shared is not None else {}
    if streamed.streams(cfg, base_dir):  # Parquet larger than memory: one pass, no rows held
        return streamed.prepare_streamed(cfg, base_dir, cache)
    k_data, k_split, k_shuffle = jax.random.split(jax.random.key(cfg.train.seed), 3)
    t = cfg.train
    ds = _once(cache, ("data", asdict(cfg.data), t.seed, str(base_dir)), build_dataset, cfg.data,
               k_data, base_dir)  # fmt: skip
    n, m = ds.X.shape
    n_train = data.min_train_rows(n, t.test_fraction, t.folds)
    largest = float(abs(ds.y).max())  # its squares must sum in float64
    config.validate_sizes(cfg, n_rows=n, n_features=m, n_train=n_train, largest_target=largest)
    split_key = ("split", asdict(cfg.data), t.seed, t.folds, t.test_fraction, str(base_dir))
    parts, scalers, spread = _once(cache, split_key, _splits, cfg, ds, k_split)
    spec = loop_spec(cfg, n_train=len(parts[0][0]), n_features=m)
    checks, hyper, title = checked(cfg, spread, spec, scalers[0], name=ds.name, rows=n, m=m)
    return Prepared(cfg, base_dir, ds, parts, scalers, spec, hyper, k_shuffle, title, checks)


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
