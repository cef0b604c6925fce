"""Typed configuration: the dataclass schemas Hydra composes into, and the checks of values.

:mod:`.schema` holds the dataclasses (stored in Hydra's ConfigStore on import), :mod:`.checks` the
value checks and the conversion of a composed config, :mod:`.sizes` the checks that depend on the
data's size and :mod:`.limits` the machine's (int32 counts, memory), :mod:`.stored` the rebuilding
of a config read back from storage.
"""

from lrexp.config.checks import RULES, ConfigError, to_object, validate
from lrexp.config.schema import (
    SCHEMAS,
    Adagrad,
    Adam,
    AdamW,
    CollinearData,
    Config,
    Constant,
    Cosine,
    CsvData,
    DataSchema,
    Exponential,
    FileData,
    Lbfgs,
    LinearData,
    Lion,
    Momentum,
    OptimizerSchema,
    RmsProp,
    ScheduleSchema,
    Sgd,
    TrackingConfig,
    TrainConfig,
    WarmupCosine,
    register,
)
from lrexp.config.sizes import validate_sizes
from lrexp.config.stored import from_container

__all__ = [
    "RULES",
    "SCHEMAS",
    "Adagrad",
    "Adam",
    "AdamW",
    "CollinearData",
    "Config",
    "ConfigError",
    "Constant",
    "Cosine",
    "CsvData",
    "DataSchema",
    "Exponential",
    "FileData",
    "Lbfgs",
    "LinearData",
    "Lion",
    "Momentum",
    "OptimizerSchema",
    "RmsProp",
    "ScheduleSchema",
    "Sgd",
    "TrackingConfig",
    "TrainConfig",
    "WarmupCosine",
    "from_container",
    "register",
    "to_object",
    "validate",
    "validate_sizes",
]
