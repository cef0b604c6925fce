"""A config read back from storage (untrusted): rebuilt through the command line's schemas."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from omegaconf import OmegaConf

from lrexp.config.checks import ConfigError
from lrexp.config.schema import SCHEMAS, Config


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
