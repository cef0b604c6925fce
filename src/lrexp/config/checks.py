"""Value checks of a composed config: ranges the schema's types cannot express, the names of
options against the optimizer and schedule registry, and sizes that depend on the loaded data."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from os.path import abspath
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import lrexp.config.limits as limits
import lrexp.config.sizes as sizes
from lrexp.config.errors import ConfigError
from lrexp.config.limits import INT32_MAX
from lrexp.config.schema import SCHEMAS, Config, FileData, LinearData, TrainConfig
from lrexp.core import optim


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _rule(test: Callable[[Any], bool], allowed: str) -> tuple[Callable[[Any], bool], str]:
    return test, allowed


_UNIT = _rule(lambda v: _finite(v) and 0 <= v < 1, "must be a number in [0, 1)")
_POSITIVE = _rule(lambda v: _finite(v) and v > 0, "must be a finite number > 0")
_NON_NEGATIVE = _rule(lambda v: _finite(v) and v >= 0, "must be a finite number >= 0")


def _int(v: Any, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= INT32_MAX


def _count(low: int, null: str = "", note: str = "") -> tuple[Callable[[Any], bool], str]:
    """An integer from ``low`` to int32's largest (the loop counts in int32); null where ``null``
    says what null means."""
    test = (lambda v: v is None or _int(v, low)) if null else (lambda v: _int(v, low))
    allowed = f"an integer >= {low}{note} and <= {INT32_MAX}"
    return _rule(test, f"must be null ({null}) or {allowed}" if null else f"must be {allowed}")


_COUNT = _count(1)
LBFGS_MEMORY = 10_000  # the most past steps L-BFGS keeps (optimizer.memory_size)

# One rule per field name, wherever the field appears: the same knob means the same thing in
# every optimizer (Optax's naming), so it is checked the same way.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "lr": _POSITIVE,
    "momentum": _UNIT,
    "b1": _UNIT,
    "b2": _UNIT,
    "decay": _UNIT,
    "eps": _POSITIVE,
    "weight_decay": _NON_NEGATIVE,
    "initial_accumulator_value": _NON_NEGATIVE,
    "memory_size": _rule(  # Optax's default is 10; past the run's steps more only costs memory
        lambda v: _int(v, 1) and v <= LBFGS_MEMORY, f"must be an integer >= 1 and <= {LBFGS_MEMORY}"
    ),
    "transition_steps": _COUNT,
    "decay_rate": _POSITIVE,
    "decay_steps": _count(1, "all steps"),
    "alpha": _rule(lambda v: _finite(v) and 0 <= v <= 1, "must be a number in [0, 1]"),
    "warmup_steps": _count(0),
    "n": _count(2),
    "noise": _NON_NEGATIVE,
    "bias": _rule(_finite, "must be a finite number"),
    "weights": _rule(
        lambda v: len(v) >= 1 and all(_finite(w) for w in v),
        "must be a non-empty list of finite numbers",
    ),
    "collinearity": _UNIT,
    "target": _rule(lambda v: bool(v), "must name the target column"),
    "delimiter": _rule(
        lambda v: v is None or v == "\\t" or (len(v) == 1 and v not in '"\r\n'),
        "must be null (sniffed) or one character, no quote or newline (';', '|', or \\t: tab)",
    ),
    "features": _rule(
        lambda v: v is None or (len(v) >= 1 and len(set(v)) == len(v)),
        "must be null (all other columns) or a non-empty list of distinct names",
    ),
    "epochs": _COUNT,
    "max_curve_points": _count(3, note=" (first, best, last)"),
    "sweep_model": _rule(lambda v: v in ("best", "every"), "must be one of: best, every"),
    "cv": _rule(
        lambda v: v in ("independent", "sequential"),
        "must be one of: independent (a model per fold, from zeros), "
        "sequential (one model through the folds in turn)",
    ),
    "batch_size": _count(1, "full batch"),
    "steps": _count(1, "use train.epochs"),
    "shuffle_block": _count(1, note=" (1: rows shuffled one by one)"),
    "tol": _rule(
        lambda v: v is None or (_finite(v) and v >= 0), "must be null (off) or a finite number >= 0"
    ),
    "test_fraction": _rule(lambda v: _finite(v) and 0 < v < 1, "must be a number in (0, 1)"),
    "folds": _count(2, "single split"),
    "dtype": _rule(lambda v: v in ("float32", "float64"), "must be one of: float32, float64"),
    "reduction": _rule(
        lambda v: v in ("mean", "sum"),
        "must be one of: mean (steps on the batch's MSE), sum (on its TSSE)",
    ),
    "seed": _rule(
        lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63,
        f"must be an integer >= 0 and <= {2**63 - 1}",
    ),
    "experiment": _rule(lambda v: bool(v.strip()), "must be a non-empty experiment name"),
}


def to_object(cfg: DictConfig) -> Config:
    """Convert a composed DictConfig into typed dataclasses: the edge between Hydra and the core."""
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, Config)
    # Keys added with Hydra's `+` (`+optimizer.foo=1`, `+optimizer._target_=…`) compose, and
    # to_object would drop them silently: an unknown key is an error wherever it comes from.
    _no_unknown_keys(cfg, obj, "")
    return obj


def _no_unknown_keys(node: DictConfig, obj: Any, prefix: str) -> None:
    allowed = [f.name for f in fields(obj)]
    for key in node:
        if key == "hydra" and not prefix:
            continue
        if key not in allowed:
            raise ConfigError(
                f"{prefix}{key}", node[key], f"unknown key; allowed: {', '.join(allowed)}"
            )
        if is_dataclass(getattr(obj, key)):
            _no_unknown_keys(node[key], getattr(obj, key), f"{prefix}{key}.")


def _names(group: str) -> Any:
    """The options of a group: the registry's optimizers and schedules, the data schemas."""
    return {"optimizer": optim.OPTIMIZERS, "schedule": optim.SCHEDULES}.get(group, SCHEMAS[group])


def validate(cfg: Config, base_dir: str | Path = ".") -> None:
    """Check every value against its rule; raise :class:`ConfigError` on the first bad one."""
    for group in ("data", "optimizer", "schedule", "train", "tracking"):
        node: Any = getattr(cfg, group)
        assert is_dataclass(node)
        if group in ("data", "optimizer", "schedule") and node.name not in _names(group):
            allowed = f"must be one of: {', '.join(sorted(_names(group)))}"
            raise ConfigError(f"{group}.name", node.name, allowed)
        for f in fields(node):
            value = getattr(node, f.name)
            if f.name in RULES:
                test, allowed = RULES[f.name]
                if not test(value):
                    raise ConfigError(f"{group}.{f.name}", value, allowed)
    _check_data(cfg.data, base_dir)
    _check_train(cfg.train, cfg.optimizer.name)
    _check_log_steps(cfg)
    if isinstance(cfg.data, LinearData):  # its size is known before the data is made
        sizes.check_memory(cfg, n_rows=cfg.data.n, n_features=len(cfg.data.weights))


def _check_data(data: Any, base_dir: str | Path) -> None:
    """Check what ties the data's values together, and that a data file exists."""
    if isinstance(data, LinearData) and data.n < len(data.weights) + 2:
        raise ConfigError(
            "data.n",
            data.n,
            f"must exceed the number of features + 1 "
            f"({len(data.weights) + 1}) so that the least-squares fit is determined",
        )
    if isinstance(data, FileData):
        _check_file(data, base_dir)


# The file's kind, as the message that asks for one names it.
_KINDS = {"csv": "CSV", "tsv": "TSV", "parquet": "Parquet", "feather": "Feather"}


def _check_file(data: FileData, base_dir: str | Path) -> None:
    """Check a data file's options against the loader's, and that the file exists."""
    from lrexp.core import tables  # pyarrow: imported only for data read from a file

    if data.format is not None and data.format not in tables.FORMATS:
        allowed = f"must be null (by the extension) or one of: {', '.join(tables.FORMATS)}"
        raise ConfigError("data.format", data.format, allowed)
    if data.categorical not in tables.CATEGORICAL:
        allowed = f"must be one of: {', '.join(tables.CATEGORICAL)}"
        raise ConfigError("data.categorical", data.categorical, allowed)
    fmt = data.format or tables.format_of(data.path) or data.name  # data=csv: "CSV" file
    kind = _KINDS.get(fmt, "data")
    if not data.path:
        raise ConfigError("data.path", data.path, f"must name a {kind} file")
    path = Path(base_dir, data.path)
    # abspath, not resolve: a symlink loop is no file, not a crash
    if not (path.is_file() or _parquet_dir(path)):
        raise ConfigError(
            "data.path", data.path, f"must be an existing {kind} file (looked for {abspath(path)})"
        )
    size = path.stat().st_size if fmt in ("csv", "tsv") else 0  # Parquet can be read streamed
    if size > limits.SHARE * (memory := limits.machine_memory()):
        allowed = f"is {limits.gigabytes(size)}, this machine has {limits.gigabytes(memory)}"
        raise ConfigError("data.path", data.path, allowed)
    if data.features and data.target in data.features:
        raise ConfigError(
            "data.features",
            data.features,
            f"must not contain the target column {data.target!r}",
        )


def _parquet_dir(path: Path) -> bool:
    """Whether ``path`` is a directory holding Parquet files (read streamed: lrexp.core.stream)."""
    return path.is_dir() and any(next(path.rglob(f"*{ext}"), None) for ext in (".parquet", ".pq"))


def _check_train(train: TrainConfig, optimizer: str) -> None:
    """Check what ties the training values together (and to the optimizer)."""
    if train.shuffle_block > 1 and (
        train.batch_size is None or train.batch_size % train.shuffle_block
    ):
        raise ConfigError(
            "train.shuffle_block",
            train.shuffle_block,
            "must divide train.batch_size "
            f"({'null: full batch' if train.batch_size is None else train.batch_size}), "
            "or be 1",
        )
    line_search = optim.OPTIMIZERS[optimizer].line_search  # always full batch: steps apply
    if train.steps is not None and train.batch_size is not None and not line_search:
        raise ConfigError(
            "train.steps",
            train.steps,
            "applies to full-batch training only "
            "(train.batch_size=null) and to line-search optimizers "
            f"({', '.join(n for n, o in optim.OPTIMIZERS.items() if o.line_search)}); "
            "with mini-batches use train.epochs",
        )


def _check_log_steps(cfg: Config) -> None:
    """Per-step rows need each batch's rows: blocks of rows may be stored as their moments."""
    if cfg.tracking.log_steps and cfg.train.shuffle_block > 1:
        raise ConfigError(
            "train.shuffle_block",
            cfg.train.shuffle_block,
            "must be 1 with tracking.log_steps=true (a batch's MSE is taken on its rows)",
        )
