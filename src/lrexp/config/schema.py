"""The config's schemas: dataclasses that Hydra composes into, stored in its ConfigStore.

The dataclasses hold the types; the YAML files under ``conf/`` hold the values and extend these
schemas (``defaults: [<name>_schema]``), so a wrong type or an unknown key fails while Hydra
composes the config, with the key named. Ranges cannot be expressed as types: :mod:`.checks`
checks them after composition and before anything is created.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


# --- data ----------------------------------------------------------------------------------------
@dataclass
class LinearData:
    name: str = MISSING
    n: int = MISSING
    noise: float = MISSING
    bias: float = MISSING
    weights: list[float] = MISSING
    standardize: bool = MISSING  # the features
    standardize_target: bool = True  # train on (y − ȳ)/σ_y; θ and metrics stay in y's units


@dataclass
class CollinearData(LinearData):
    collinearity: float = MISSING


@dataclass
class FileData:
    """A table in a file (``data=csv`` or ``data=file``: the same keys, read the same way).

    The keys added after ``data=csv`` first shipped have defaults, so that a run stored before
    them is rebuilt as it ran."""

    name: str = MISSING
    path: str = MISSING
    target: str = MISSING
    features: list[str] | None = None
    format: str | None = None  # csv, tsv, parquet, feather; null: by the file's extension
    delimiter: str | None = None  # csv and tsv only; null: sniffed from the file's first lines
    categorical: str = "error"  # a text column: "error", or "onehot" to one-hot encode it
    dropna: bool = False  # drop the rows with a missing cell, rather than refuse the file
    standardize: bool = MISSING  # the features
    standardize_target: bool = True  # train on (y − ȳ)/σ_y; θ and metrics stay in y's units
    # Parquet larger than memory: "auto" streams it above a size threshold, "true" always
    # ("false" never); a string, so that true/false/auto all compose (Hydra reads true as a bool)
    stream: str = "auto"


CsvData = FileData  # its name before data=file


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


@dataclass
class Lion(Sgd):
    b1: float = MISSING
    b2: float = MISSING
    weight_decay: float = MISSING


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
    cv: str = "independent"  # with folds: "independent" (a model per fold) or "sequential"
    reduction: str = "mean"  # a step descends the batch's mean squared error, or its TSSE ("sum")


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
    log_steps: bool = False  # also log every optimizer step's batch MSE and θ (history_steps.csv)


# A group's schema is one of its options' dataclasses, picked by the YAML file Hydra composes.
# OmegaConf 2.3 cannot hold a union of dataclasses, so it sees Any; type checkers see the union.
if TYPE_CHECKING:
    DataSchema = LinearData | CollinearData | FileData
    OptimizerSchema = Sgd | Momentum | Adam | AdamW | RmsProp | Adagrad | Lion | Lbfgs
    ScheduleSchema = Constant | Exponential | Cosine | WarmupCosine
else:
    DataSchema = OptimizerSchema = ScheduleSchema = Any


@dataclass
class Config:
    data: DataSchema = MISSING
    optimizer: OptimizerSchema = MISSING
    schedule: ScheduleSchema = MISSING
    train: TrainConfig = MISSING
    tracking: TrackingConfig = MISSING


SCHEMAS: dict[str, dict[str, type]] = {
    "data": {"linear": LinearData, "collinear": CollinearData, "csv": FileData, "file": FileData},
    "optimizer": {
        "sgd": Sgd,
        "momentum": Momentum,
        "nesterov": Momentum,
        "adam": Adam,
        "adamw": AdamW,
        "rmsprop": RmsProp,
        "adagrad": Adagrad,
        "lion": Lion,
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
