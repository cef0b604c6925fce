"""Typed configuration: dataclass schemas in Hydra's ConfigStore, and value checks.

The dataclasses hold the types; the YAML files under ``conf/`` hold the values and extend these
schemas (``defaults: [<name>_schema]``), so a wrong type or an unknown key fails while Hydra
composes the config, with the key named. Ranges cannot be expressed as types, so :func:`validate`
checks them after composition and before anything is created.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


class ConfigError(ValueError):
    """A configuration value that is not allowed: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r}: {allowed}")


# --- data ----------------------------------------------------------------------------------------
@dataclass
class LinearData:
    name: str = MISSING
    n: int = MISSING
    noise: float = MISSING
    bias: float = MISSING
    weights: list[float] = MISSING
    standardize: bool = MISSING


@dataclass
class CollinearData(LinearData):
    collinearity: float = MISSING


@dataclass
class CsvData:
    name: str = MISSING
    path: str = MISSING
    target: str = MISSING
    features: list[str] | None = None
    standardize: bool = MISSING


# --- optimizers: knobs named as Optax names them -----------------------------------------------
@dataclass
class Sgd:
    name: str = MISSING
    lr: float = MISSING


@dataclass
class Momentum(Sgd):
    momentum: float = MISSING


@dataclass
class Adam(Sgd):
    b1: float = MISSING
    b2: float = MISSING
    eps: float = MISSING


@dataclass
class AdamW(Adam):
    weight_decay: float = MISSING


@dataclass
class RmsProp(Sgd):
    decay: float = MISSING
    eps: float = MISSING
    momentum: float = MISSING
    centered: bool = MISSING


@dataclass
class Adagrad(Sgd):
    initial_accumulator_value: float = MISSING
    eps: float = MISSING


@dataclass
class Lbfgs(Sgd):
    memory_size: int = MISSING


# --- learning-rate schedules: multipliers of optimizer.lr --------------------------------------
@dataclass
class Constant:
    name: str = MISSING


@dataclass
class Exponential(Constant):
    transition_steps: int = MISSING
    decay_rate: float = MISSING
    staircase: bool = MISSING


@dataclass
class Cosine(Constant):
    decay_steps: int | None = None
    alpha: float = MISSING


@dataclass
class WarmupCosine(Cosine):
    warmup_steps: int = MISSING


# --- training and tracking -----------------------------------------------------------------------
@dataclass
class TrainConfig:
    epochs: int = MISSING
    batch_size: int | None = None
    steps: int | None = None
    tol: float | None = None
    test_fraction: float = MISSING
    folds: int | None = None
    dtype: str = MISSING
    seed: int = MISSING
    sufficient_stats: bool = True
    shuffle_block: int = 1


@dataclass
class TrackingConfig:
    uri: str = MISSING
    experiment: str = MISSING
    run_name: str | None = None
    enabled: bool = MISSING
    log_model: bool = MISSING
    skip_finished: bool = False
    max_curve_points: int = 100  # MLflow metric points per curve; history.csv keeps every epoch
    sweep_model: str = "best"  # in a multirun: the model of the best child only, or of "every"


@dataclass
class Config:
    data: Any = MISSING
    optimizer: Any = MISSING
    schedule: Any = MISSING
    train: TrainConfig = MISSING
    tracking: TrackingConfig = MISSING


SCHEMAS: dict[str, dict[str, type]] = {
    "data": {"linear": LinearData, "collinear": CollinearData, "csv": CsvData},
    "optimizer": {
        "sgd": Sgd,
        "momentum": Momentum,
        "nesterov": Momentum,
        "adam": Adam,
        "adamw": AdamW,
        "rmsprop": RmsProp,
        "adagrad": Adagrad,
        "lbfgs": Lbfgs,
    },
    "schedule": {
        "constant": Constant,
        "exponential": Exponential,
        "cosine": Cosine,
        "warmup_cosine": WarmupCosine,
    },
    "train": {"default": TrainConfig},
    "tracking": {"default": TrackingConfig, "server": TrackingConfig},
}


def register() -> None:
    """Store every schema in Hydra's ConfigStore as ``<group>/<option>_schema``."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, options in SCHEMAS.items():
        for option, schema in options.items():
            cs.store(group=group, name=f"{option}_schema", node=schema)


register()


# --- value checks --------------------------------------------------------------------------------
def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _rule(test: Callable[[Any], bool], allowed: str) -> tuple[Callable[[Any], bool], str]:
    return test, allowed


_UNIT = _rule(lambda v: _finite(v) and 0 <= v < 1, "must be a number in [0, 1)")
_POSITIVE = _rule(lambda v: _finite(v) and v > 0, "must be a finite number > 0")
_NON_NEGATIVE = _rule(lambda v: _finite(v) and v >= 0, "must be a finite number >= 0")
_COUNT = _rule(lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1")

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
    "memory_size": _COUNT,
    "transition_steps": _COUNT,
    "decay_rate": _POSITIVE,
    "decay_steps": _rule(
        lambda v: v is None or (isinstance(v, int) and v >= 1),
        "must be null (all steps) or an integer >= 1",
    ),
    "alpha": _rule(lambda v: _finite(v) and 0 <= v <= 1, "must be a number in [0, 1]"),
    "warmup_steps": _rule(lambda v: isinstance(v, int) and v >= 0, "must be an integer >= 0"),
    "n": _rule(lambda v: isinstance(v, int) and v >= 2, "must be an integer >= 2"),
    "noise": _NON_NEGATIVE,
    "bias": _rule(_finite, "must be a finite number"),
    "weights": _rule(
        lambda v: len(v) >= 1 and all(_finite(w) for w in v),
        "must be a non-empty list of finite numbers",
    ),
    "collinearity": _UNIT,
    "path": _rule(lambda v: bool(v), "must name a CSV file"),
    "target": _rule(lambda v: bool(v), "must name the target column"),
    "features": _rule(
        lambda v: v is None or (len(v) >= 1 and len(set(v)) == len(v)),
        "must be null (all other columns) or a non-empty list of distinct names",
    ),
    "epochs": _COUNT,
    "max_curve_points": _rule(
        lambda v: isinstance(v, int) and v >= 3, "must be an integer >= 3 (first, best, last)"
    ),
    "sweep_model": _rule(lambda v: v in ("best", "every"), "must be one of: best, every"),
    "batch_size": _rule(
        lambda v: v is None or (isinstance(v, int) and v >= 1),
        "must be null (full batch) or an integer >= 1",
    ),
    "steps": _rule(
        lambda v: v is None or (isinstance(v, int) and v >= 1),
        "must be null (use train.epochs) or an integer >= 1",
    ),
    "shuffle_block": _rule(
        lambda v: isinstance(v, int) and v >= 1,
        "must be an integer >= 1 (1: rows shuffled one by one)",
    ),
    "tol": _rule(
        lambda v: v is None or (_finite(v) and v >= 0), "must be null (off) or a finite number >= 0"
    ),
    "test_fraction": _rule(lambda v: _finite(v) and 0 < v < 1, "must be a number in (0, 1)"),
    "folds": _rule(
        lambda v: v is None or (isinstance(v, int) and v >= 2),
        "must be null (single split) or an integer >= 2",
    ),
    "dtype": _rule(lambda v: v in ("float32", "float64"), "must be one of: float32, float64"),
    "seed": _rule(lambda v: isinstance(v, int) and 0 <= v < 2**63, "must be an integer >= 0"),
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


def validate(cfg: Config, base_dir: str | Path = ".") -> None:
    """Check every value against its rule; raise :class:`ConfigError` on the first bad one."""
    for group in ("data", "optimizer", "schedule", "train", "tracking"):
        node = getattr(cfg, group)
        assert is_dataclass(node)
        if group in ("data", "optimizer", "schedule") and node.name not in SCHEMAS[group]:
            raise ConfigError(
                f"{group}.name", node.name, f"must be one of: {', '.join(sorted(SCHEMAS[group]))}"
            )
        for f in fields(node):
            value = getattr(node, f.name)
            if f.name in RULES:
                test, allowed = RULES[f.name]
                if not test(value):
                    raise ConfigError(f"{group}.{f.name}", value, allowed)
    data, train = cfg.data, cfg.train
    if isinstance(data, LinearData) and data.n < len(data.weights) + 2:
        raise ConfigError(
            "data.n",
            data.n,
            f"must exceed the number of features + 1 "
            f"({len(data.weights) + 1}) so that the least-squares fit is determined",
        )
    if isinstance(data, CsvData):
        path = Path(base_dir, data.path)
        if not path.is_file():
            raise ConfigError(
                "data.path",
                data.path,
                f"must be an existing CSV file (looked for {path.resolve()})",
            )
        if data.features and data.target in data.features:
            raise ConfigError(
                "data.features",
                data.features,
                f"must not contain the target column {data.target!r}",
            )
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
    if train.steps is not None and train.batch_size is not None:
        raise ConfigError(
            "train.steps",
            train.steps,
            "applies to full-batch training only "
            "(train.batch_size=null); with mini-batches use train.epochs",
        )


def validate_sizes(cfg: Config, *, n_rows: int, n_features: int, n_train: int) -> None:
    """Check the values that depend on the loaded data's size."""
    if n_rows < n_features + 2:
        key, value = (
            ("data.path", cfg.data.path) if isinstance(cfg.data, CsvData) else ("data.n", n_rows)
        )
        raise ConfigError(
            key,
            value,
            f"has {n_rows} rows for {n_features} features; needs at "
            f"least {n_features + 2} (the least-squares fit must be determined)",
        )
    if cfg.train.folds is not None and cfg.train.folds > n_rows:
        raise ConfigError(
            "train.folds", cfg.train.folds, f"must be <= the number of rows ({n_rows})"
        )
    if n_train < n_features + 1:
        raise ConfigError(
            "train.test_fraction" if cfg.train.folds is None else "train.folds",
            cfg.train.test_fraction if cfg.train.folds is None else cfg.train.folds,
            f"leaves {n_train} training rows; at least {n_features + 1} are needed",
        )
    if cfg.train.batch_size is not None and cfg.train.batch_size > n_train:
        raise ConfigError(
            "train.batch_size",
            cfg.train.batch_size,
            f"must be <= the number of training rows ({n_train}), or null",
        )


# --- a config read back from storage (untrusted) -------------------------------------------------
def _no_interpolation(value: Any, key: str) -> None:
    """Refuse ``${...}`` anywhere: OmegaConf would resolve it (``oc.env`` reads the environment)."""
    if isinstance(value, str) and "${" in value:
        raise ConfigError(key, value, "interpolations are not allowed in a stored config")
    if isinstance(value, dict):
        for k, v in value.items():
            _no_interpolation(v, f"{key}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_interpolation(v, f"{key}[{i}]")


def _at(values: dict, dotted: str) -> Any:
    """The value at ``dotted`` (``weights[1]``) in nested plain values, or None."""
    node: Any = values
    for part in dotted.replace("[", ".").replace("]", "").split("."):
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, TypeError, ValueError):
            return None
    return node


def from_container(d: dict) -> Config:
    """Rebuild the typed config from plain (untrusted) values through the command line's schemas.

    Each group's values are merged into its dataclass schema, picked by the group's ``name``, so an
    unknown key (``_target_`` included), a wrong type or a missing value raises
    :class:`ConfigError`; nothing is instantiated. :func:`validate` then checks the ranges.
    """
    from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

    if not isinstance(d, dict):
        raise ConfigError("config", type(d).__name__, "must be a mapping of config groups")
    for key in d:
        if key not in SCHEMAS:
            raise ConfigError(str(key), d[key], f"unknown group; allowed: {', '.join(SCHEMAS)}")
    groups: dict[str, Any] = {}
    for group, options in SCHEMAS.items():
        values = d.get(group)
        if not isinstance(values, dict):
            raise ConfigError(group, values, "must be a mapping of the group's keys")
        if len(set(options.values())) == 1:  # one schema for every option (train, tracking)
            (schema,) = set(options.values())
        elif values.get("name") in options:
            schema = options[values["name"]]
        else:
            allowed = f"must be one of: {', '.join(sorted(options))}"
            raise ConfigError(f"{group}.name", values.get("name"), allowed)
        _no_interpolation(values, group)
        try:
            node = OmegaConf.merge(OmegaConf.structured(schema), values)
            groups[group] = OmegaConf.to_object(node)
        except OmegaConfBaseException as e:
            key = f"{group}.{e.full_key}" if e.full_key else group
            value = _at(values, str(e.full_key))
            if isinstance(e, ConfigKeyError):
                keys = ", ".join(f.name for f in fields(schema))
                raise ConfigError(key, value, f"unknown key; allowed: {keys}") from None
            if isinstance(e, MissingMandatoryValue):
                raise ConfigError(key, "???", "is required") from None
            raise ConfigError(key, value, str(e).splitlines()[0]) from None
    return Config(**groups)
