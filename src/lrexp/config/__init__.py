"""Typed configuration: the dataclass schemas Hydra composes into, and the checks of values."""

from lrexp.config.schema import *  # noqa: F403
